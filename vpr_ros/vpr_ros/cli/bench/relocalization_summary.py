"""Per-start rows, the summary over starts, the issue's goals and the printed table of
``vpr-ros bench relocalization`` (cli/bench/relocalization.py)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from vpr_ros.core.eval.relocalization import CHI2_95_6DOF

__all__ = ["GOALS_TEXT", "FIRST_FIX_KEYFRAMES", "start_row", "summarise", "goals", "print_summary"]

FIRST_FIX_KEYFRAMES = 3
GOALS_TEXT = {
    "first_fix": f"first fix within {FIRST_FIX_KEYFRAMES} keyframes of seeing a mapped place in >= 90 % of "
                 "kidnapped starts",
    "median_error": "metric fixes: median error <= 0.05 m and <= 1 deg",
    "nees": "metric fixes: NEES (6 dof) mean within [3, 12]",
    "wrong": "wrong fixes: 0 in >= 50 kidnapped starts, look-alike starts included",
}


def _floats(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def start_row(name: str, mapped: bool, section: dict[str, Any]) -> dict[str, Any]:
    """One kidnapped start from its replay's relocalisation section. A fix in a start that sees no
    mapped place (a look-alike) is wrong whatever its distance."""
    ev = section.get("evaluation") or {}
    fixes = section["rows"]
    wrong = sum(r.get("wrong") == "1" for r in fixes)
    if not mapped:
        wrong = len(fixes)
    return {"name": name, "mapped": mapped, "fixes": len(fixes), "keyframes": section["keyframes"],
            "keyframes_seeing_map": ev.get("keyframes_seeing_map"),
            "keyframes_to_first_fix": ev.get("keyframes_to_first_fix"),
            "time_to_first_fix_s": ev.get("time_to_first_fix_s"), "wrong": wrong,
            "kinds": sorted({r["kind"] for r in fixes}),
            "position_error_m": _floats(fixes, "position_error_m"),
            "rotation_error_deg": _floats(fixes, "rotation_error_deg"),
            "nees": _floats(fixes, "nees"), "refusals": {k: v for k, v in section["refusals"].items() if v}}


def _stat(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None}
    a = np.asarray(values, np.float64)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def summarise(rows: list[dict[str, Any]], euroc: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, first-fix latency, errors, NEES, wrong fixes and refusals over the rendered starts;
    the EuRoC starts listed on their own."""
    mapped = [r for r in rows if r["mapped"]]
    looks = [r for r in rows if not r["mapped"]]
    first = [r["keyframes_to_first_fix"] for r in mapped if r["keyframes_to_first_fix"] is not None]
    pos = [e for r in mapped for e in r["position_error_m"]]
    rot = [e for r in mapped for e in r["rotation_error_deg"]]
    nees = [e for r in mapped for e in r["nees"]]
    seen = sum(r["keyframes_seeing_map"] or 0 for r in mapped)
    refusals: dict[str, int] = {}
    for r in rows:
        for k, v in r["refusals"].items():
            refusals[k] = refusals.get(k, 0) + v
    out = {
        "starts": len(rows), "mapped_starts": len(mapped), "look_alike_starts": len(looks),
        "starts_with_fix": sum(r["fixes"] > 0 for r in mapped),
        "first_fix_within_3": sum(k <= FIRST_FIX_KEYFRAMES for k in first),
        "keyframes_to_first_fix": {str(k): first.count(k) for k in sorted(set(first))},
        "fixes": sum(r["fixes"] for r in mapped), "keyframes_seeing_map": seen,
        "fix_rate": sum(r["fixes"] for r in mapped) / seen if seen else None,
        "position_error_m": _stat(pos), "rotation_error_deg": _stat(rot),
        "nees": {"count": len(nees), "mean": float(np.mean(nees)) if nees else None,
                 "median": float(np.median(nees)) if nees else None,
                 "inside_95": float(np.mean(np.asarray(nees) <= CHI2_95_6DOF)) if nees else None},
        "wrong_fixes_mapped": sum(r["wrong"] for r in mapped),
        "look_alike_fixes": sum(r["fixes"] for r in looks),
        "starts_with_wrong_fix": [r["name"] for r in rows if r["wrong"]],
        "refusals": dict(sorted(refusals.items())),
        "euroc": [{k: r[k] for k in ("name", "fixes", "kinds", "position_error_m", "rotation_error_deg", "nees",
                                     "refusals")} for r in euroc],
    }
    out["goals"] = goals(out)
    return out


def goals(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal of issue 21: the measured value and whether it is met."""
    share = s["first_fix_within_3"] / s["mapped_starts"] if s["mapped_starts"] else 0.0
    pos, rot, mean = s["position_error_m"]["median"], s["rotation_error_deg"]["median"], s["nees"]["mean"]
    wrong = s["wrong_fixes_mapped"] + s["look_alike_fixes"]
    return {
        "first_fix": {"value": share, "met": share >= 0.9},
        "median_error": {"value": [pos, rot], "met": pos is not None and pos <= 0.05 and rot <= 1.0},
        "nees": {"value": mean, "met": mean is not None and 3.0 <= mean <= 12.0},
        "wrong": {"value": wrong, "met": wrong == 0 and s["starts"] >= 50 and s["look_alike_starts"] > 0},
    }


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_summary(results: dict[str, dict[str, Any]], args: argparse.Namespace, minutes: float) -> None:
    """One column per map variant, then the goals."""
    names = list(results)
    print(f"\nkidnapped starts through vpr-ros replay, SIMULATED (RENDERED from real photographs), {args.width}x"
          f"{args.width * 3 // 4}, RGB-D; map keyframe covariance per column ({minutes:.1f} min)")
    print(f"{'':<42}" + "".join(f"{n:>22}" for n in names))
    lines = [
        ("starts: mapped / look-alike", lambda s: f"{s['mapped_starts']} / {s['look_alike_starts']}"),
        ("mapped starts with a fix", lambda s: str(s["starts_with_fix"])),
        (f"first fix within {FIRST_FIX_KEYFRAMES} keyframes", lambda s: f"{s['first_fix_within_3']} ("
         f"{s['goals']['first_fix']['value']:.0%})"),
        ("keyframes to first fix: count", lambda s: " ".join(f"{k}:{v}"
                                                              for k, v in s["keyframes_to_first_fix"].items())),
        ("fixes / keyframes seeing the map", lambda s: f"{s['fixes']} / {s['keyframes_seeing_map']}"),
        ("position error median / p95, m", lambda s: f"{_f(s['position_error_m']['median'], '.4f')} / "
         f"{_f(s['position_error_m']['p95'], '.4f')}"),
        ("rotation error median / p95, deg", lambda s: f"{_f(s['rotation_error_deg']['median'], '.3f')} / "
         f"{_f(s['rotation_error_deg']['p95'], '.3f')}"),
        ("NEES mean / median (expected 6)", lambda s: f"{_f(s['nees']['mean'], '.2f')} / "
                                                      f"{_f(s['nees']['median'], '.2f')}"),
        ("NEES inside the 95 % bound", lambda s: _f(s["nees"]["inside_95"], ".0%")),
        ("wrong fixes: mapped / look-alike starts", lambda s: f"{s['wrong_fixes_mapped']} / {s['look_alike_fixes']}"),
    ]
    for label, cell in lines:
        print(f"{label:<42}" + "".join(f"{cell(results[n]):>22}" for n in names))
    for n in names:
        s = results[n]
        print(f"[{n}] refusals: " + (", ".join(f"{k} {v}" for k, v in s["refusals"].items()) or "none"))
        if s["starts_with_wrong_fix"]:
            print(f"[{n}] starts with a wrong fix: {', '.join(s['starts_with_wrong_fix'])}")
        for e in s["euroc"]:
            err = (f"{e['position_error_m'][0]:.3f} m / {e['rotation_error_deg'][0]:.2f} deg"
                   if e["position_error_m"] else "-")
            print(f"[{n}] EuRoC stereo {e['name']}: {e['fixes']} fixes ({err}); refusals {e['refusals'] or 'none'}")
        for key, g in s["goals"].items():
            value = g["value"]
            shown = (", ".join(_f(v, ".4g") for v in value) if isinstance(value, list)
                     else _f(value, ".4g") if isinstance(value, float) else str(value))
            print(f"[{n}] goal {GOALS_TEXT[key]}: {shown} -> {'met' if g['met'] else 'NOT met'}")
