"""The summary of ``vpr-ros bench relocalization``: per-start rows, counts and the issue's goals."""

from __future__ import annotations

from vpr_ros.cli.bench.relocalization_summary import start_row, summarise


def _section(fixes: list[dict[str, str]], first: int | None, seen: int = 5) -> dict:
    return {"keyframes": 5, "fixes": len(fixes), "rows": fixes, "refusals": {"unconfirmed": 1, "disagreement": 0},
            "evaluation": {"keyframes_seeing_map": seen, "keyframes_to_first_fix": first, "time_to_first_fix_s": 1.0}}


def _fix(pos: float, rot: float, nees: float, wrong: bool = False) -> dict[str, str]:
    return {"position_error_m": str(pos), "rotation_error_deg": str(rot), "nees": str(nees), "wrong": str(int(wrong)),
            "kind": "metric"}


def test_a_fix_in_a_look_alike_start_is_wrong_whatever_its_error():
    row = start_row("lookalike", False, _section([_fix(0.2, 1.0, 3.0)], None, seen=0))
    assert row["wrong"] == 1 and row["fixes"] == 1
    assert start_row("kidnapped", True, _section([_fix(0.2, 1.0, 3.0)], 2))["wrong"] == 0
    assert start_row("kidnapped", True, _section([_fix(0.6, 1.0, 3.0, wrong=True)], 2))["wrong"] == 1


def test_summary_counts_first_fixes_errors_nees_and_goals():
    rows = [start_row(f"k{i}", True, _section([_fix(0.01 * (i + 1), 0.1, 6.0)] * 2, first)) for i, first in
            enumerate([1, 2, 3, 4, None])]
    rows += [start_row("l0", False, _section([], None, seen=0))]
    s = summarise(rows, [])
    assert s["mapped_starts"] == 5 and s["look_alike_starts"] == 1 and s["starts_with_fix"] == 5
    assert s["first_fix_within_3"] == 3 and s["keyframes_to_first_fix"] == {"1": 1, "2": 1, "3": 1, "4": 1}
    assert s["fixes"] == 10 and s["fix_rate"] == 10 / 25
    assert abs(s["position_error_m"]["median"] - 0.03) < 1e-12 and s["nees"]["mean"] == 6.0
    assert s["refusals"] == {"unconfirmed": 6}
    g = s["goals"]
    assert not g["first_fix"]["met"] and g["first_fix"]["value"] == 0.6
    assert g["median_error"]["met"] and g["nees"]["met"]
    assert not g["wrong"]["met"]  # no wrong fix, but 6 starts, not >= 50
    many = summarise(rows[:1] * 49 + rows[-1:], [])
    assert many["goals"]["wrong"]["met"] and many["goals"]["first_fix"]["met"]
    bad = summarise(rows[:1] * 49 + [start_row("l1", False, _section([_fix(3.0, 1.0, 9.0)], None, 0))], [])
    assert bad["look_alike_fixes"] == 1 and not bad["goals"]["wrong"]["met"] and bad["starts_with_wrong_fix"] == ["l1"]
