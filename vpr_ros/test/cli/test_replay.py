"""Replay end to end: real corridor frames in a real bag, the real detector, the output folder."""

import csv
import json

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

import vpr_ros.cli.demo as demo
import vpr_ros.cli.replay as replay
from conftest import CORRIDOR, TinyExtractor, corridor_image
from vpr_ros.cli.main import main
from vpr_ros.cli.report import write_report
from vpr_ros.cli.session import replay_bag
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.eval.groundtruth import Exclusion, PoseGroundTruth
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_image_bag
from vpr_ros.io.poses import pose_matrix

NS = 1_000_000_000
N = 30          # frames per pass
GAP_SEC = 20.0  # exclusion window, longer than one 15 s pass


def _pose(x: float) -> np.ndarray:
    return pose_matrix((x, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


@pytest.fixture(scope="module")
def revisit_bag(tmp_path_factory):
    """One stream: the ref pass (frames 0..N-1, x = i m), 60 s later the query pass of the same places.

    Poses: each corridor frame i sits at x = i metres (both traversals are aligned frame by frame,
    which is what VPR-Bench's ground truth says, up to a few frames).
    """
    frames = [Frame(i * NS // 2, corridor_image("ref", i), _pose(i)) for i in range(N)]
    t0 = 60 * NS
    frames += [Frame(t0 + j * NS // 2, corridor_image("query", j), _pose(j)) for j in range(N)]
    path = tmp_path_factory.mktemp("bags") / "revisit"
    return write_image_bag(path, frames, "/camera/image_raw", encoding="jpeg", pose_topic="/odom")


def _config(**kw):
    return config_from_flat({"detector.min_loop_gap_sec": GAP_SEC, "verify.min_matches": 30,
                             "verify.temporal_consistency": 2, **kw})


def test_replay_end_to_end_finds_the_revisit(revisit_bag, tmp_path):
    cfg = _config()
    det = LoopClosureDetector(cfg, TinyExtractor())
    result = replay_bag(det, revisit_bag, "/camera/image_raw", "/odom")
    assert result.num_frames == 2 * N and len(result.outcomes) == 2 * N
    assert result.stats.corrupt == 0 and result.stats.frames_without_pose == 0
    loops = result.loop_closures
    assert loops, "no loop closure on a revisit"
    for lc in loops:  # nothing inside the exclusion window, nothing inside the first pass
        assert lc.query_stamp_ns - lc.match_stamp_ns >= GAP_SEC * NS
        assert lc.query_id >= N and lc.match_id < N
    gt = PoseGroundTruth(3.0, Exclusion(GAP_SEC))
    metrics = write_report(tmp_path / "out", result, gt)
    # where the ground truth says: most loops land within 3 frames of the same place
    assert metrics["true_positives"] >= 5 and metrics["precision"] >= 0.5
    assert metrics["queries_with_true_loop"] == N     # every query frame has its place in the map
    for key in ("precision", "recall", "f1", "max_recall_at_100_precision", "auc", "num_keyframes",
                "num_loop_closures", "true_positives", "false_positives"):
        assert key in metrics
    assert set(metrics["latency_ms"]) >= {"extract", "search", "verify", "total"}
    assert metrics["latency_ms"]["total"]["p95"] >= metrics["latency_ms"]["total"]["p50"] > 0
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["num_loop_closures"] == len(loops) == metrics["true_positives"] + metrics["false_positives"]
    for name in ("pr_curve.png", "trajectory.png", "loop_closures.csv", "queries.csv", "pr_curve.csv"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "loop_closures.csv")))
    assert sum(int(r["correct"]) for r in rows) == metrics["true_positives"]
    with AnyReader([tmp_path / "out" / "loop_closures"], default_typestore=get_typestore(Stores.EMPTY)) as r:
        msgs = [r.deserialize(raw, c.msgtype) for c, _, raw in r.messages()]
    assert [(m.query_keyframe_id, m.match_keyframe_id, m.local_matches) for m in msgs] == \
        [(lc.query_id, lc.match_id, lc.local_matches) for lc in loops]
    assert all(m.descriptor_model == "tiny@test" and m.header.frame_id == "map" for m in msgs)


@pytest.fixture
def tiny_model(monkeypatch):
    # the CLI loads config.model.preset; these tests swap in the tiny real extractor instead
    monkeypatch.setattr(replay, "load_extractor", lambda config: TinyExtractor())
    monkeypatch.setattr(demo, "load_extractor", lambda config: TinyExtractor())


def test_cli_multi_session_with_vprbench_ground_truth(tmp_path, tiny_model, capsys):
    ref = [Frame(i * NS // 10, corridor_image("ref", i)) for i in range(N)]
    query = [Frame(3600 * NS + j * NS // 10, corridor_image("query", j)) for j in range(N)]
    write_image_bag(tmp_path / "ref", ref, "/cam", encoding="bgr8", storage="sqlite3")
    write_image_bag(tmp_path / "query", query, "/cam", encoding="mono8")
    common = ["--image-topic", "/cam", "--set", "verify.min_matches=30", "--no-progress"]
    assert main(["replay", str(tmp_path / "ref"), *common, "--set", "detector.session_id=s1",
                 "--map-save", str(tmp_path / "map"), "--out", str(tmp_path / "out1")]) == 0
    assert main(["replay", str(tmp_path / "query"), *common, "--set", "detector.session_id=s2",
                 "--map-load", str(tmp_path / "map"), "--gt-npy", str(CORRIDOR / "ground_truth_new.npy"),
                 "--out", str(tmp_path / "out2")]) == 0
    metrics = json.loads((tmp_path / "out2" / "metrics.json").read_text())
    assert metrics["num_map_keyframes"] == N and metrics["num_keyframes"] == N
    # every query frame 0..N-1 has reference frames among 0..N-1 except the last one or two
    assert N - 2 <= metrics["queries_with_true_loop"] <= N
    assert metrics["true_positives"] > 0 and metrics["retrieval_recall_at_n"]["5"] > 0.3
    rows = list(csv.DictReader(open(tmp_path / "out2" / "loop_closures.csv")))
    assert rows and all(r["match_session"] == "s1" and r["match_frame"] != "-1" for r in rows)
    assert "precision" in capsys.readouterr().out


def test_cli_reports_a_missing_topic(tmp_path, tiny_model, capsys):
    write_image_bag(tmp_path / "bag", [Frame(NS, corridor_image("ref", 0))], "/cam")
    assert main(["replay", str(tmp_path / "bag"), "--image-topic", "/wrong", "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'/wrong' is not in bag" in err and "/cam [sensor_msgs/msg/Image]" in err


def test_cli_rejects_bad_overrides(tmp_path, tiny_model, capsys):
    assert main(["replay", "x", "--image-topic", "/c", "--out", str(tmp_path), "--set", "index.top_k"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["replay", "x", "--image-topic", "/c", "--out", str(tmp_path),
                 "--set", "index.nope=3"]) == 2
    assert "index.nope" in capsys.readouterr().err


@pytest.mark.parametrize("single", [False, True])
def test_demo_runs_both_modes(tmp_path, tiny_model, single, capsys):
    gap = {"detector.min_loop_gap_sec": 1.0} if single else {}
    cfg = config_from_flat({"verify.min_matches": 30, **gap})
    metrics = demo.run_demo(tmp_path / "demo", cfg, TinyExtractor(), single_session=single, count=20,
                            progress=False)
    report = tmp_path / "demo" / ("single_session" if single else "session2")
    assert (report / "metrics.json").exists() and (report / "pr_curve.png").exists()
    if not single:
        assert (tmp_path / "demo" / "map_session1" / "vpr_frame_index.json").exists()
        assert metrics["num_map_keyframes"] == 20
    assert metrics["num_keyframes"] == (40 if single else 20)
    assert metrics["queries_with_true_loop"] >= 18
    for q, m, lc, ok in metrics["_loops"]:
        assert lc.query_stamp_ns > lc.match_stamp_ns
        if ok:
            assert m.frame_index in demo.load_vprbench_gt(CORRIDOR / "ground_truth_new.npy")[
                q.frame_index - (20 if single else 0)]
