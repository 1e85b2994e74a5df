"""``vpr-ros replay`` ground truth in every accepted form (docs/replay.md, "Ground truth"), on a bag made
by ``vpr-ros bag from-images`` from real Corridor JPEGs: one stream, the reference pass then the query pass.

Every index form of the same truth gives the same metrics; mis-shaped or ambiguous files are refused
before the model loads, naming the shape expected; the loops found are listed after a replay.
"""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest

import vpr_ros.cli.replay as replay
from conftest import CORRIDOR, TinyExtractor
from own_data import COMMON, N, RATE, corridor_folder, loop_matrix, query_lists, write_kitti, write_tum
from vpr_ros.cli.main import main

KEYS = ("precision", "recall", "true_positives", "false_positives", "queries_with_true_loop", "auc",
        "max_recall_at_100_precision", "retrieval_recall_at_n")


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    assert main(["bag", "from-images", str(corridor_folder(tmp / "images")), "--out", str(tmp / "bag"),
                 "--rate", str(RATE)]) == 0
    return tmp / "bag"


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(replay, "load_extractor", lambda config: TinyExtractor())


def _replay(bag, out, *args) -> dict:
    assert main(["replay", str(bag), *COMMON, "--out", str(out), *args]) == 0
    return json.loads((out / "metrics.json").read_text())


def _rows_npy(path):
    rows = np.empty((N, 2), dtype=object)
    for j, refs in query_lists().items():
        rows[j] = [j, refs]
    np.save(path, rows, allow_pickle=True)
    return path


def _per_query_npy(path, lists):
    array = np.empty(len(lists), dtype=object)
    for j, refs in enumerate(lists):
        array[j] = list(refs)
    np.save(path, array, allow_pickle=True)
    return path


def _text_lists(path, offset=0):
    path.write_text("# query: ref ref ...\n" + "".join(f"{offset + j}: {' '.join(map(str, refs))}\n"
                                                       for j, refs in query_lists().items()))
    return path


def test_every_index_form_gives_the_same_metrics(bag, tmp_path, tiny):
    base = _replay(bag, tmp_path / "rows", "--gt-npy", str(_rows_npy(tmp_path / "rows.npy")),
                   "--gt-query-offset", str(N))
    assert base["queries_with_true_loop"] >= N - 1 and base["true_positives"] > 0
    m = loop_matrix()
    cv2.imwrite(str(tmp_path / "gt.png"), m.astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "samples_GT.bmp"), m.astype(np.uint8) * 255)
    np.save(tmp_path / "gt_bool.npy", m)
    np.savetxt(tmp_path / "gt.csv", m.astype(int), fmt="%d", delimiter=",")
    forms = {
        # the per-query object array that was read as rows (wrong precision, no error)
        "per_query_npy": ["--gt-npy", str(_per_query_npy(tmp_path / "pq.npy", query_lists().values())),
                          "--gt-query-offset", str(N)],
        "text_lists": ["--gt", str(_text_lists(tmp_path / "gt.txt")), "--gt-query-offset", str(N)],
        # offset 0: the queries numbered as frames of the whole stream (was refused as "not given")
        "offset_zero": ["--gt", str(_text_lists(tmp_path / "gt0.txt", offset=N)), "--gt-query-offset", "0"],
        "png": ["--gt", str(tmp_path / "gt.png")], "bmp": ["--gt", str(tmp_path / "samples_GT.bmp")],
        "npy_matrix": ["--gt", str(tmp_path / "gt_bool.npy")], "csv_matrix": ["--gt", str(tmp_path / "gt.csv")],
        "forced": ["--gt", str(tmp_path / "gt.csv"), "--gt-format", "matrix"],
    }
    for name, args in forms.items():
        metrics = _replay(bag, tmp_path / name, *args)
        assert {k: metrics[k] for k in KEYS} == {k: base[k] for k in KEYS}, name


def test_pose_files_with_a_radius(bag, tmp_path, tiny):
    tum = _replay(bag, tmp_path / "tum", "--gt-poses", str(write_tum(tmp_path / "p.tum")), "--gt-radius-m", "1.5")
    kitti = _replay(bag, tmp_path / "kitti", "--gt", str(write_kitti(tmp_path / "p.kitti")), "--gt-radius-m", "1.5")
    assert {k: tum[k] for k in KEYS} == {k: kitti[k] for k in KEYS}
    # every query frame has its place (1 m apart, radius 1.5 m) in the reference pass, outside the window
    assert tum["queries_with_true_loop"] == N and tum["true_positives"] > 0


def test_max_recall_at_full_precision_and_auc_follow_the_pr_curve(bag, tmp_path, tiny, capsys):
    metrics = _replay(bag, tmp_path / "out", "--gt", str(_text_lists(tmp_path / "gt.txt")),
                      "--gt-query-offset", str(N))
    rows = list(csv.DictReader(open(tmp_path / "out" / "pr_curve.csv")))
    precision = np.array([float(r["precision"]) for r in rows])
    recall = np.array([float(r["recall"]) for r in rows])
    thresholds = np.array([float(r["threshold"]) for r in rows])
    assert np.all(np.diff(thresholds) < 0)  # swept from the highest MNN count down
    assert metrics["max_recall_at_100_precision"] == pytest.approx(max(recall[precision == 1.0], default=0.0))
    assert metrics["auc"] == pytest.approx(float(np.sum(np.diff(np.r_[0.0, recall]) * precision)))
    out = capsys.readouterr().out
    assert f"max recall at 100% precision {metrics['max_recall_at_100_precision']:.3f}" in out
    assert f"PR AUC {metrics['auc']:.3f}" in out


def test_the_loops_found_are_listed_without_ground_truth(bag, tmp_path, tiny, capsys):
    metrics = _replay(bag, tmp_path / "out")
    assert metrics["precision"] is None and metrics["num_loop_closures"] > 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "out" / "loop_closures.csv")))
    shown = min(10, len(rows))
    assert f"loops found (the first {shown} of {len(rows)}; all in {tmp_path / 'out' / 'loop_closures.csv'})" in out
    for r in rows[:shown]:
        assert (f"query frame {r['query_frame']}/keyframe {r['query_id']} -> frame {r['match_frame']}/keyframe "
                f"{r['match_id']}, {r['local_matches']} MNN matches, similarity "
                f"{float(r['global_similarity']):.3f}") in out


def _bad(tmp_path, case):
    m = loop_matrix()
    if case == "matrix_size":
        cv2.imwrite(str(tmp_path / "gt.png"), m[:-1, :-1].astype(np.uint8) * 255)
        return ["--gt", str(tmp_path / "gt.png")], ["gt.png", f"{2 * N - 1}x{2 * N - 1} loop matrix",
                                                    f"{2 * N} images"]
    if case == "not_square":
        np.save(tmp_path / "gt.npy", np.zeros((2 * N, 2 * N + 1), bool))
        return ["--gt-npy", str(tmp_path / "gt.npy")], ["gt.npy", "square (N, N)", f"({2 * N}, {2 * N + 1})"]
    if case == "not_int_lists":
        path = _per_query_npy(tmp_path / "gt.npy", [[0], ["a", 1]])
        return ["--gt-npy", str(path), "--gt-query-offset", "0"], ["gt.npy", "element 1[0]", "not a frame index"]
    if case == "negative":
        (tmp_path / "gt.txt").write_text("0: 1 -2\n")
        return ["--gt", str(tmp_path / "gt.txt"), "--gt-query-offset", "0"], ["gt.txt", "line 1"]
    if case == "beyond_bag":
        _text_lists(tmp_path / "gt.txt", offset=N + 1)  # the last query would be frame 2 N
        return ["--gt", str(tmp_path / "gt.txt"), "--gt-query-offset", "0"], ["gt.txt", "out of range",
                                                                             f"{2 * N} images"]
    if case == "ambiguous":
        np.save(tmp_path / "gt.npy", np.array([[j, j] for j in range(N)]))
        return ["--gt", str(tmp_path / "gt.npy")], ["gt.npy", "ambiguous", "--gt-format"]
    if case == "kitti_count":
        (tmp_path / "p.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0.5\n" * 3)
        return ["--gt-poses", str(tmp_path / "p.txt"), "--gt-radius-m", "2"], ["p.txt", "3 KITTI poses"]
    if case == "radius_with_matrix":
        np.save(tmp_path / "gt.npy", m)
        return ["--gt", str(tmp_path / "gt.npy"), "--gt-radius-m", "2"], ["--gt-radius-m goes with poses"]
    write_tum(tmp_path / "p.tum")
    return ["--gt", str(tmp_path / "p.tum")], ["p.tum", "give --gt-radius-m"]


@pytest.mark.parametrize("case", ["matrix_size", "not_square", "not_int_lists", "negative", "beyond_bag",
                                  "ambiguous", "kitti_count", "radius_with_matrix", "trajectory_without_radius"])
def test_wrong_ground_truth_is_refused_before_the_model(bag, tmp_path, monkeypatch, capsys, case):
    monkeypatch.setattr(replay, "load_extractor", lambda config: pytest.fail("model loaded"))
    args, words = _bad(tmp_path, case)
    assert main(["replay", str(bag), *COMMON, "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vpr-ros replay: error:") and "\n" not in err, err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_the_tiny_examples_of_the_docs(tmp_path, tiny):
    """docs/replay.md, "Ground truth": 4 images, image 3 is image 0 again; every form says 3 <-> 0."""
    folder = tmp_path / "images"
    folder.mkdir()
    for k, i in enumerate([0, 6, 12, 0]):
        shutil.copyfile(CORRIDOR / "ref" / f"{i:07d}.jpg", folder / f"{k}.jpg")
    assert main(["bag", "from-images", str(folder), "--out", str(tmp_path / "bag"), "--rate", "2"]) == 0
    (tmp_path / "gt.csv").write_text("0,0,0,1\n0,0,0,0\n0,0,0,0\n1,0,0,0\n")
    (tmp_path / "gt.txt").write_text("3: 0\n")
    a = np.empty(1, object)
    a[0] = [0]
    np.save(tmp_path / "gt.npy", a, allow_pickle=True)
    b = np.empty((1, 2), object)
    b[0] = [0, [0]]
    np.save(tmp_path / "rows.npy", b, allow_pickle=True)
    xs = [0, 1, 1, 0]  # KITTI lines of 0/1 numbers only: still a trajectory, not a matrix
    # (images 1 and 2 share a place but lie inside the 1 s exclusion window)
    (tmp_path / "traj.txt").write_text("".join(f"{k / 2} {x} 0 0 0 0 0 1\n" for k, x in enumerate(xs)))
    (tmp_path / "traj.kitti").write_text("".join(f"1 0 0 {x} 0 1 0 0 0 0 1 0\n" for x in xs))
    forms = [["--gt", str(tmp_path / "gt.csv")], ["--gt", str(tmp_path / "gt.txt"), "--gt-query-offset", "0"],
             ["--gt", str(tmp_path / "gt.npy"), "--gt-query-offset", "3"],
             ["--gt-npy", str(tmp_path / "rows.npy"), "--gt-query-offset", "3"],
             ["--gt", str(tmp_path / "traj.txt"), "--gt-radius-m", "0.5"],
             ["--gt", str(tmp_path / "traj.kitti"), "--gt-radius-m", "0.5"]]
    for k, args in enumerate(forms):
        assert main(["replay", str(tmp_path / "bag"), "--image-topic", "/camera/image_raw", "--no-progress",
                     "--set", "detector.min_loop_gap_sec=1.0", "--set", "verify.min_matches=30",
                     "--out", str(tmp_path / f"out{k}"), *args]) == 0, args
        metrics = json.loads((tmp_path / f"out{k}" / "metrics.json").read_text())
        assert metrics["queries_with_true_loop"] == 1, args


def test_a_ground_truth_the_exclusion_window_hides_says_so(bag, tmp_path, tiny, capsys):
    """A short sequence at the README's rate: every revisit is closer in time than
    detector.min_loop_gap_sec, so 0 loops and 0 true queries; the summary says why and what to change
    (a new user saw only zeros)."""
    cv2.imwrite(str(tmp_path / "gt.png"), loop_matrix().astype(np.uint8) * 255)
    metrics = _replay(bag, tmp_path / "out", "--gt", str(tmp_path / "gt.png"),
                      "--set", "detector.min_loop_gap_sec=60")
    assert metrics["queries_with_true_loop"] == 0
    assert "detector.min_loop_gap_sec" in capsys.readouterr().out
    _replay(bag, tmp_path / "out2", "--gt", str(tmp_path / "gt.png"))  # the module's window: true loops exist
    assert "no query has a true loop" not in capsys.readouterr().out
