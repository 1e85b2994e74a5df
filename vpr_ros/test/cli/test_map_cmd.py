"""``vpr-ros map ...`` on maps the real detector built from corridor frames (tiny extractor)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

import vpr_ros.cli.replay as replay
from conftest import TinyExtractor, corridor_image
from vpr_ros.cli.main import main
from vpr_ros.cli.map_access import open_map
from vpr_ros.cli.session import replay_bag
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.index import KeyframeIndex
from vpr_ros.core.map.integrity import write_manifest
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes
from vpr_ros.core.types import Frame, LoopClosure
from vpr_ros.core.matching.verification import mnn_pairs
from vpr_ros.io.bag_writer import write_image_bag
from vpr_ros.io.poses import pose_matrix

NS = 1_000_000_000
N = 30


def _config(**kw):
    return config_from_flat({"detector.min_loop_gap_sec": 20.0, "verify.min_matches": 30,
                             "verify.temporal_consistency": 2, **kw})


def build_map(path: Path, session: str = "s1", robot: str = "r1", splits=("ref", "query"), **kw) -> list[LoopClosure]:
    """Two passes through the corridor (x = i m; the second 60 s later), saved with the loops found."""
    det = LoopClosureDetector(_config(**{"detector.session_id": session, "detector.robot_id": robot, **kw}),
                              TinyExtractor())
    loops, t = [], 0
    for split in splits:
        for i in range(N):
            loops += det.process(Frame(t, corridor_image(split, i), pose_matrix((i, 0.0, 0.0), (0, 0, 0, 1)))
                                 ).loop_closures
            t += NS // 2
        t += 60 * NS
    det.save_map(path, loops)
    return loops


@pytest.fixture(scope="module")
def corridor_map(tmp_path_factory) -> tuple[Path, list[LoopClosure]]:
    path = tmp_path_factory.mktemp("maps") / "corridor"
    loops = build_map(path)
    assert len(loops) >= 5, "the revisit should close several loops"
    return path, loops


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and mtime, to show that nothing changed."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["map", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_detector_stores_thumbnails_and_loops(corridor_map, tmp_path):
    path, loops = corridor_map
    meta, kfs = load_keyframes(path)
    assert meta["num_keyframes"] == 2 * N and all(k.thumbnail for k in kfs)
    for kf in kfs[:3]:
        img = cv2.imdecode(np.frombuffer(kf.thumbnail, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and max(img.shape[:2]) == 160  # map.thumbnail_px
    stored = open_map(path).loops
    assert len(stored) == len(loops)
    for a, b in zip(stored, loops):  # every field survives, in order
        for f in dataclasses.fields(LoopClosure):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            assert (va is None and vb is None) or np.array_equal(va, vb), f.name
    # configurable: off stores none; a smaller size is honoured
    build_map(tmp_path / "off", splits=("ref",), **{"map.thumbnails": False})
    assert not any(k.thumbnail for k in load_keyframes(tmp_path / "off")[1])
    build_map(tmp_path / "small", splits=("ref",), **{"map.thumbnail_px": 48})
    img = cv2.imdecode(np.frombuffer(load_keyframes(tmp_path / "small")[1][0].thumbnail, np.uint8), 1)
    assert max(img.shape[:2]) == 48


def test_replay_saves_its_loops_into_the_map(tmp_path):
    frames = [Frame(i * NS // 2, corridor_image("ref", i)) for i in range(N)]
    frames += [Frame(60 * NS + j * NS // 2, corridor_image("query", j)) for j in range(N)]
    bag = write_image_bag(tmp_path / "bag", frames, "/camera/image_raw", encoding="jpeg")
    det = LoopClosureDetector(_config(), TinyExtractor())
    result = replay_bag(det, bag, "/camera/image_raw")
    replay.save_map(det, str(tmp_path / "map"), result)
    assert result.loop_closures
    assert [(lp.query_id, lp.match_id) for lp in open_map(tmp_path / "map").loops] == \
        [(lp.query_id, lp.match_id) for lp in result.loop_closures]


def test_info_reports_sessions_model_disk_and_changes_nothing(corridor_map, capsys):
    path, loops = corridor_map
    before = snapshot(path)
    rc, out, _ = run(capsys, "info", path, "--json")
    assert rc == 0
    s = json.loads(out)
    assert s["model_id"] == "tiny@test" and s["keyframes"] == 2 * N and s["loops"] == len(loops)
    assert s["robots"] == ["r1"] and [x["session_id"] for x in s["sessions"]] == ["s1"]
    assert s["sessions"][0]["duration_s"] == pytest.approx((2 * N - 1) * 0.5 + 60)
    assert s["disk_bytes"]["total"] == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert 1000 < s["thumbnail_bytes_per_keyframe"] < s["disk_per_keyframe_bytes"]
    rc, out, _ = run(capsys, "info", path)
    assert rc == 0 and "60 keyframes" in out and "robot r1 session s1" in out
    assert snapshot(path) == before


def test_read_only_commands_change_nothing(corridor_map, tmp_path, capsys):
    path, _ = corridor_map
    before, names = snapshot(path), sorted(os.listdir(path.parent))
    assert run(capsys, "verify", path)[0] == 0
    assert run(capsys, "export", path, "--out", tmp_path / "exp")[0] == 0
    assert run(capsys, "report", path, "--out", tmp_path / "r.html")[0] == 0
    assert snapshot(path) == before and sorted(os.listdir(path.parent)) == names


@pytest.mark.parametrize("cmd", ["info", "verify", "export", "compact", "report", "merge"])
def test_bad_input_exits_2_naming_it(cmd, corridor_map, tmp_path, capsys):
    path, _ = corridor_map
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "notamap").mkdir()
    extra = {"export": ["--out", tmp_path / "o"], "compact": ["--out", tmp_path / "o"],
             "report": ["--out", tmp_path / "o.html"], "merge": [path, "--out", tmp_path / "o"]}.get(cmd, [])
    for bad in (tmp_path / "missing", tmp_path / "file.txt", tmp_path / "notamap"):
        rc, _, err = run(capsys, cmd, bad, *extra)
        assert rc == 2 and str(bad) in err, (cmd, bad, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.html").exists()


def test_writing_into_an_input_is_refused(corridor_map, capsys):
    path, _ = corridor_map
    before = snapshot(path)
    for argv in (("compact", path, "--out", path), ("merge", path, path, "--out", path),
                 ("export", path, "--out", path / "exp"), ("report", path, "--out", path / "r.html")):
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and str(path) in err, (argv, err)
    assert snapshot(path) == before


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_verify_names_the_damaged_file(corridor_map, tmp_path, capsys):
    path, _ = corridor_map
    rc, out, _ = run(capsys, "verify", path)
    assert rc == 0 and out.startswith("OK")
    shard = _copy(path, tmp_path / "shard")
    data = bytearray((shard / "local/00000.npy").read_bytes())
    data[-3] ^= 0xFF
    (shard / "local/00000.npy").write_bytes(bytes(data))
    rc, out, _ = run(capsys, "verify", shard)
    assert rc == 1 and "local/00000.npy" in out and "DAMAGED" in out
    db = _copy(path, tmp_path / "db")
    with open(db / "map.sqlite", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    rc, out, _ = run(capsys, "verify", db)
    assert rc == 1 and "map.sqlite" in out
    # an index whose checksum is right but whose vectors are not the descriptors (a writer bug)
    stale = _copy(path, tmp_path / "stale")
    index = KeyframeIndex(TinyExtractor.global_dim)
    index.add(np.arange(2 * N), np.random.default_rng(0).standard_normal((2 * N, TinyExtractor.global_dim)))
    index.save(stale / "index.faiss")
    write_manifest(stale, json.loads((stale / "manifest.json").read_text())["files"])
    rc, out, _ = run(capsys, "verify", stale)
    assert rc == 1 and "index.faiss" in out and f"{2 * N} of {2 * N} vectors differ" in out


def test_compact_rewrites_an_equal_map(corridor_map, tmp_path, capsys):
    path, loops = corridor_map
    old = path.parent / "compact-src"
    _copy(path, old)
    (old / "manifest.json").unlink()  # a map without checksums: compact adds them
    with sqlite3.connect(old / "map.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key='manifest'")
    rc, out, _ = run(capsys, "compact", old, "--out", tmp_path / "new")
    assert rc == 0 and (tmp_path / "new" / "manifest.json").exists()
    a, b = open_map(path), open_map(tmp_path / "new")
    assert len(a.keyframes) == len(b.keyframes) and len(b.loops) == len(loops)
    for x, y in zip(a.keyframes, b.keyframes):
        assert (x.id, x.stamp_ns, x.thumbnail) == (y.id, y.stamp_ns, y.thumbnail)
        assert np.array_equal(x.global_, y.global_) and np.array_equal(x.local, y.local)
    assert run(capsys, "verify", tmp_path / "new")[0] == 0


def test_merge_keeps_sessions_and_refuses_other_models(corridor_map, tmp_path, capsys):
    path, loops = corridor_map
    loops2 = build_map(tmp_path / "b", session="s2", robot="r2")
    rc, out, _ = run(capsys, "merge", path, tmp_path / "b", "--out", tmp_path / "ab")
    assert rc == 0
    merged = open_map(tmp_path / "ab")
    assert len(merged.keyframes) == 4 * N and len(merged.loops) == len(loops) + len(loops2)
    assert {(k.robot_id, k.session_id) for k in merged.keyframes} == {("r1", "s1"), ("r2", "s2")}
    assert run(capsys, "verify", tmp_path / "ab")[0] == 0
    # the same map twice: each keyframe once
    assert run(capsys, "merge", path, tmp_path / "ab", "--out", tmp_path / "aab")[0] == 0
    assert len(open_map(tmp_path / "aab").keyframes) == 4 * N
    # another model
    _, kfs = load_keyframes(tmp_path / "b")
    save_keyframes(tmp_path / "other", kfs, "other@test", TinyExtractor.global_dim)
    rc, _, err = run(capsys, "merge", path, tmp_path / "other", "--out", tmp_path / "bad")
    assert rc == 2 and "model_id" in err and "other@test" in err and not (tmp_path / "bad").exists()


def test_merge_id_collision_refused_or_renumbered(corridor_map, tmp_path, capsys):
    path, _ = corridor_map
    # same robot and session, same ids 0..N-1, different keyframes (the query pass first)
    build_map(tmp_path / "clash", splits=("query", "ref"))
    rc, _, err = run(capsys, "merge", path, tmp_path / "clash", "--out", tmp_path / "m")
    assert rc == 2 and "renumber" in err and "s1" in err and not (tmp_path / "m").exists()
    rc, _, err = run(capsys, "merge", path, tmp_path / "clash", "--out", tmp_path / "m", "--on-collision", "renumber")
    assert rc == 0 and "renumbered robot r1 session s1 keyframe ids by +60" in err
    merged = open_map(tmp_path / "m")
    ids = [k.id for k in merged.keyframes]
    assert len(ids) == len(set(ids)) == 4 * N
    assert run(capsys, "verify", tmp_path / "m")[0] == 0  # every loop still names a keyframe it holds


def test_export_csv_and_g2o(corridor_map, tmp_path, capsys):
    path, loops = corridor_map
    # one loop with a measured pose, to become a g2o edge
    _, kfs = load_keyframes(path)
    rel = pose_matrix((0.5, 0.0, 0.0), (0, 0, 0, 1))
    posed = dataclasses.replace(loops[0], relative_pose=rel, covariance=np.eye(6) * 0.01, geometry_method="pnp")
    save_keyframes(tmp_path / "m", kfs, "tiny@test", TinyExtractor.global_dim, loops=[posed, *loops[1:]])
    rc, out, _ = run(capsys, "export", tmp_path / "m", "--out", tmp_path / "exp")
    assert rc == 0
    rows = (tmp_path / "exp" / "keyframes.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * N and rows[2].split(",")[6] == "1"  # keyframe 1 sits at x = 1 m
    assert len((tmp_path / "exp" / "loops.csv").read_text().splitlines()) == 1 + len(loops)
    g2o = (tmp_path / "exp" / "loops.g2o").read_text().splitlines()
    assert sum(ln.startswith("VERTEX_SE3:QUAT") for ln in g2o) == 2 * N
    edges = [ln.split() for ln in g2o if ln.startswith("EDGE_SE3:QUAT")]
    # odometry between consecutive keyframes, then every loop (appearance-only ones as "same place")
    assert len(edges) == 2 * N - 1 + len(loops)
    loop0 = edges[2 * N - 1]
    assert loop0[1:4] == [str(posed.match_id), str(posed.query_id), "0.5"]
    assert float(loop0[10]) == pytest.approx(100.0)  # information = inverse covariance
    rc, _, err = run(capsys, "export", tmp_path / "m", "--out", tmp_path / "exp")  # never overwritten
    assert rc == 2 and "keyframes.csv" in err


def test_report_gallery_matches_the_loops(corridor_map, tmp_path, capsys):
    path, loops = corridor_map
    rc, _, _ = run(capsys, "report", path, "--out", tmp_path / "r.html")
    assert rc == 0
    page = (tmp_path / "r.html").read_text()
    figures = re.findall(r'<figure class="loop".*?</figure>', page)
    assert len(figures) == len(loops) and f'data-loops="{len(loops)}"' in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    _, kfs = load_keyframes(path)
    by = {k.id: k for k in kfs}
    by_pair = {(str(lp.query_id), str(lp.match_id)): lp for lp in loops}
    # the gallery is in suspicion order (core/eval/loop_class.py): find each figure's loop by its ids
    shown = [by_pair[(q, m)] for q, m in (re.search(r'data-query="[^"]*?(\d+)\)" data-match="[^"]*?(\d+)\)"',
                                                    fig).groups() for fig in figures)]
    assert sorted(map(id, shown)) == sorted(map(id, loops))
    for fig, lp in zip(figures, shown):  # MNN lines recomputed from the stored local features
        pairs = len(mnn_pairs(by[lp.query_id].local, by[lp.match_id].local)[0])
        assert pairs == lp.local_matches  # the verifier's own count
        assert fig.count('class="mnn"') == min(pairs, 60) and fig.count('class="thumb"') == 2
    assert page.count('class="loop-edge"') == 2 * len(loops)  # timeline and trajectory
    rc, _, _ = run(capsys, "report", path, "--out", tmp_path / "r3.html", "--max-loops", "3")
    assert rc == 0 and (tmp_path / "r3.html").read_text().count('<figure class="loop"') == 3


def test_tools_read_the_live_map_a_node_appends(tmp_path, capsys):
    # The node's default map is live (appended keyframe by keyframe): its thumbnails and accepted loops
    # are appended with it, so info, verify and the report's gallery work on it like on a snapshot.
    det = LoopClosureDetector(_config(), TinyExtractor())
    det.attach_store(tmp_path / "live")
    loops, t = [], 0
    for split in ("ref", "query"):
        for i in range(N):
            loops += det.process(Frame(t, corridor_image(split, i), pose_matrix((i, 0.0, 0.0), (0, 0, 0, 1)))
                                 ).loop_closures
            t += NS // 2
        t += 60 * NS
    det.detach_store()
    assert len(loops) >= 5
    rc, out, _ = run(capsys, "info", tmp_path / "live", "--json")
    info = json.loads(out)
    assert rc == 0 and info["live"] and info["keyframes"] == 2 * N and info["with_thumbnail"] == 2 * N
    assert info["loops"] == len(loops)
    rc, out, _ = run(capsys, "verify", tmp_path / "live")
    assert rc == 0 and "live map" in out
    rc, _, _ = run(capsys, "report", tmp_path / "live", "--out", tmp_path / "live.html")
    page = (tmp_path / "live.html").read_text()
    figures = re.findall(r'<figure class="loop".*?</figure>', page)
    assert rc == 0 and len(figures) == len(loops) and all(f.count('class="thumb"') == 2 for f in figures)
