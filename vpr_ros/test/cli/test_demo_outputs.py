"""What the demo leaves behind (issue 19): the final map with its loops, the HTML report, plots that say
SIMULATED when their data is, and one colour code of loops in the report, the plots and the markers.

The demo's own functions on 20 Corridor frames per traversal with the tiny extractor (a few seconds).
"""

import csv
import re
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import vpr_ros.cli.demo as demo
from conftest import TinyExtractor
from vpr_ros.cli.main import main
from vpr_ros.cli.map_access import open_map
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.eval import loop_class

COUNT = 20


def _run(out: Path, single: bool, **kw) -> dict:
    gap = {"detector.min_loop_gap_sec": 1.0} if single else {}
    cfg = config_from_flat({"verify.min_matches": 30, **gap})
    return demo.run_demo(out, cfg, TinyExtractor(), single_session=single, count=COUNT, progress=False, **kw)


@pytest.mark.parametrize("single", [False, True])
def test_demo_saves_the_map_with_its_loops_and_the_report(tmp_path, single, capsys):
    out = tmp_path / "demo"
    metrics = _run(out, single)
    assert metrics["map_dir"] == str(out / "map") and metrics["report_html"] == str(out / "report.html")
    data = open_map(out / "map")
    assert len(data.keyframes) == 2 * COUNT  # session 1 + session 2, or the whole single stream
    assert len(data.loops) == metrics["num_loop_closures"] > 0
    assert {lp.query_session_id for lp in data.loops} == {"session" if single else "session2"}
    html = (out / "report.html").read_text()
    assert re.search(rf'<section id="gallery" class="gallery" data-loops="{len(data.loops)}"', html)
    assert html.count('<figure class="loop"') == len(data.loops)
    # the export of the demo map holds the loops too
    assert main(["map", "export", str(out / "map"), "--out", str(tmp_path / "export")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "export" / "loops.csv")))) == len(data.loops)
    # a rerun into the same folder replaces the demo's own map and report
    _run(out, single)
    assert (out / "report.html").exists() and len(open_map(out / "map").loops) == len(data.loops)


def test_demo_refuses_a_report_it_did_not_write(tmp_path):
    (tmp_path / "report.html").write_text("mine")
    with pytest.raises(Exception, match="report.html"):
        _run(tmp_path, False)
    assert (tmp_path / "report.html").read_text() == "mine"


def test_demo_prints_where_the_report_is_last(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "load_extractor", lambda config: TinyExtractor())
    real = demo.run_demo
    monkeypatch.setattr(demo, "run_demo", lambda out, config, model, **kw: real(out, config, model, count=COUNT, **kw))
    assert main(["demo", "--out", str(tmp_path / "d"), "--no-progress", "--set", "verify.min_matches=30"]) == 0
    last = capsys.readouterr().out.strip().splitlines()
    assert last[-1].endswith(str(tmp_path / "d" / "report.html")) and "report" in last[-1]
    assert str(tmp_path / "d" / "map") in last[-2] and "loops" in last[-2]


@pytest.fixture
def figures(monkeypatch):
    """Every matplotlib figure the code saves, by the file name it is saved under."""
    saved: dict[str, Figure] = {}
    real = Figure.savefig

    def savefig(self, path, *a, **kw):
        name = Path(path).name
        for known in ("pr_curve", "trajectory_optimized", "trajectory"):
            if known in name:
                saved.setdefault(known, self)
                break
        return real(self, path, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def _titles(fig: Figure) -> list[str]:
    return [t for t in [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes] if t]


def _legend(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_plots_of_the_simulated_stream_say_simulated(tmp_path, figures):
    _run(tmp_path / "demo", True, optimize=True)
    assert set(figures) == {"pr_curve", "trajectory", "trajectory_optimized"}
    for name, fig in figures.items():
        assert any("SIMULATED" in t for t in _titles(fig)), (name, _titles(fig))
    legend = _legend(figures["trajectory"])
    assert not any(t.startswith("session ") for t in legend), legend  # was "session session"
    assert any(t.startswith("keyframe positions") for t in legend), legend
    assert any(t.startswith("loop closure: ") for t in legend), legend
    optimised = _legend(figures["trajectory_optimized"])
    assert "keyframe poses (odometry)" in optimised and "simulated ground truth" in optimised


def test_plots_of_the_real_corridor_do_not_say_simulated(tmp_path, figures):
    _run(tmp_path / "demo", False)
    assert "pr_curve" in figures and not any("SIMULATED" in t for t in _titles(figures["pr_curve"]))


def test_report_plots_and_markers_take_their_colours_from_one_module(tmp_path, figures):
    """The loop classes' colours are those of core/eval/loop_class.py in the HTML report, the trajectory
    plots and the RViz markers (tests/nodes/test_markers.py checks the marker messages), and differ."""
    import vpr_ros.cli.map_report as map_report
    import vpr_ros.cli.optimize as optimize
    import vpr_ros.cli.report as report

    hexes = {c: loop_class.hex_colour(c) for c in loop_class.CLASSES}
    assert len(set(hexes.values())) == len(set(loop_class.COLOURS.values())) == 3
    for module in (map_report, report, optimize):
        assert module.loop_class is loop_class
    pytest.importorskip("visualization_msgs.msg")
    from vpr_ros.nodes import markers
    assert markers.LOOP_COLOURS is loop_class.COLOURS

    _run(tmp_path / "demo", True, optimize=True)
    html = (tmp_path / "demo" / "report.html").read_text()
    classes = re.findall(r'<figure class="loop" data-class="(\w+)" style="--c:(#[0-9a-f]{6})"', html)
    assert classes and all(hexes[c] == colour for c, colour in classes)
    drawn = {tuple(round(v, 3) for v in line.get_color()) for ax in figures["trajectory"].axes
             for line in ax.get_lines() if len(line.get_xdata()) == 2 or "loop closure" in line.get_label()}
    assert drawn and drawn <= {tuple(round(v, 3) for v in c) for c in loop_class.COLOURS.values()}


def test_gallery_lists_the_most_suspicious_loops_first(tmp_path):
    out = tmp_path / "demo"
    loops = _run(out, False)["_loops"]
    html = (out / "report.html").read_text()
    assert html.index('id="gallery"') < html.index("<h2>Sessions and robots</h2>")  # first screen
    data = open_map(out / "map")
    # the demo knows the ground truth: a wrong loop is red ("rejected or wrong") and listed first
    keys = sorted(loop_class.suspicion_key(lc, 30, truth=ok) for _, _, lc, ok in loops)  # verify.min_matches 30
    assert html.count('data-class="rejected"') == sum(not ok for *_, ok in loops)
    shown = re.findall(r'data-class="(\w+)".*?MNN (\d+\.\d\d) x verify.min_matches', html)
    assert len(shown) == len(data.loops) > 1
    assert [float(r) for _, r in shown] == [round(k[1], 2) for k in keys]  # weakest evidence first
    rank = {loop_class.REJECTED: 0, loop_class.SUSPECT: 1, loop_class.CORRECT: 2}
    assert [rank[c] for c, _ in shown] == [k[0] for k in keys]
