"""The README's main job with the real default model: lite0-gem through ONNX Runtime.

This guards the demo's goal (precision >= 0.95 at recall >= 0.8 on Corridor, multi-session) and
that `make demo` can be run again into the same folder. About 20 s on 2 cores plus a one-off
ONNX export into the test cache.
"""

import json

import pytest

from vpr_ros.cli.main import main


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    return out


def test_demo_meets_the_goal_with_the_default_model(demo_out, capsys):
    metrics = json.loads((demo_out / "session2" / "metrics.json").read_text())
    assert metrics["model_id"].startswith("lite0-gem@")
    assert metrics["num_map_keyframes"] == 111 and metrics["queries_with_true_loop"] == 111
    assert metrics["precision"] >= 0.95, metrics
    assert metrics["recall"] >= 0.8, metrics
    # MNN re-ranking of the top 5 beats global retrieval alone (SelaVPR's idea, with Lite0).
    assert metrics["reranked_recall_at_1"] > metrics["retrieval_recall_at_n"]["1"] + 0.05
    for name in ("loop_closures", "loop_closures.csv", "pr_curve.png", "metrics.json"):
        assert (demo_out / "session2" / name).exists(), name


def test_demo_can_run_again_into_the_same_folder(demo_out, capsys):
    assert main(["demo", "--out", str(demo_out), "--no-progress", "--set", "index.top_k=3"]) == 0
    metrics = json.loads((demo_out / "session2" / "metrics.json").read_text())
    assert metrics["num_loop_closures"] > 0
    assert "precision" in capsys.readouterr().out


def test_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "bags").mkdir()
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "no demo wrote" in capsys.readouterr().err
