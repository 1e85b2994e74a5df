"""``vpr-ros map label|query`` on real saved maps (snapshot and live) made in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vpr_ros.cli.main import main
from vpr_ros.cli.map_access import open_map, write_map
from vpr_ros.core.map import live_map_dirs
from vpr_ros.core.text.place_text import TextReading
from vpr_ros.core.types import Keyframe

DIM = 16
MODEL = "synthetic@test"
FP = {"model_id": MODEL, "weights_digest": "test", "preprocessing": None}
PLATES = {1: "ROOM 214", 3: "Room 216", 5: "ROOM 218", 7: "Kitchen"}


def keyframes(n: int = 8, robot: str = "r1", session: str = "s1") -> list[Keyframe]:
    """n keyframes along x (x = key metres); OCR read door plates on some, nothing on key 0."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        g = rng.standard_normal(DIM).astype(np.float32)
        pose = np.eye(4)
        pose[0, 3] = float(i)
        text = (TextReading(PLATES[i], 0.95),) if i in PLATES else (() if i == 0 else None)
        out.append(Keyframe(id=i, stamp_ns=(i + 1) * 10**9, robot_id=robot, session_id=session,
                            global_=g / np.linalg.norm(g), local=rng.standard_normal((2, 2, 4)).astype(np.float32),
                            pose=pose, text=text))
    return out


@pytest.fixture
def snapshot_map(tmp_path) -> Path:
    return write_map(tmp_path / "snap", keyframes(), [], MODEL, DIM)


@pytest.fixture
def live_map(tmp_path) -> Path:
    log = live_map_dirs.open_for_append(tmp_path / "live", FP, DIM, "float32")
    for kf in keyframes():
        log.append(kf)
    log.close()
    return tmp_path / "live"


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["map", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("which", ["snapshot_map", "live_map"])
def test_label_by_id_round_trips_and_is_not_repeated(which, request, capsys):
    path = request.getfixturevalue(which)
    rc, out, err = run(capsys, "label", path, "--id", 2, "--label", "Printer corner")
    assert rc == 0, err
    assert "added 1 label(s) to 1 keyframe(s)" in out and "key 2 (robot r1 session s1 id 2)" in out
    rc, out, _ = run(capsys, "label", path, "--id", 2, "--robot", "r1", "--session", "s1", "--label", "Printer corner")
    assert rc == 0 and "added 0 label(s)" in out and "already had" in out
    data = open_map(path)
    assert [lb.label for lb in data.keyframes[2].labels] == ["Printer corner"]
    assert data.keyframes[2].labels[0].source == "user" and data.keyframes[2].labels[0].stamp_ns > 0
    assert data.keyframes[1].text == (TextReading("ROOM 214", 0.95),)  # the rest of the map is intact
    assert data.keyframes[1].local is not None and np.asarray(data.keyframes[1].local).shape == (2, 2, 4)
    rc, out, _ = run(capsys, "query", path, "--text", "printer corner", "--no-embedding", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["matches"][0]["key"] == 2 and doc["matches"][0]["how"] == "label"


@pytest.mark.parametrize("which", ["snapshot_map", "live_map"])
def test_label_from_yaml(which, request, tmp_path, capsys):
    path = request.getfixturevalue(which)
    labels = tmp_path / "labels.yaml"
    labels.write_text("- label: East wing\n  region: {center: [5.5, 0, 0], radius_m: 1.0}\n"
                      "- label: Lab 214\n  keyframe: {robot: r1, session: s1, id: 1}\n")
    rc, out, err = run(capsys, "label", path, "--yaml", labels)
    assert rc == 0, err
    data = open_map(path)
    got = {k: [lb.label for lb in kf.labels] for k, kf in enumerate(data.keyframes) if kf.labels}
    assert got == {5: ["East wing"], 6: ["East wing"], 1: ["Lab 214"]}
    assert data.keyframes[5].labels[0].source == "yaml"


def test_label_errors_exit_2_and_change_nothing(snapshot_map, tmp_path, capsys):
    before = (snapshot_map / "map.sqlite").read_bytes()
    rc, _, err = run(capsys, "label", snapshot_map, "--id", 42, "--label", "x")
    assert rc == 2 and "no keyframe id 42" in err and "ids 0..7" in err
    rc, _, err = run(capsys, "label", snapshot_map, "--id", 1)
    assert rc == 2 and "--id needs --label" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("- label: x\n  region: {center: [100, 0], radius_m: 1}\n")
    rc, _, err = run(capsys, "label", snapshot_map, "--yaml", bad)
    assert rc == 2 and f"labels file {bad} entry 1 ('x')" in err and "nearest keyframe is 93.00 m away" in err
    rc, _, err = run(capsys, "label", tmp_path / "nothing", "--id", 1, "--label", "x")
    assert rc == 2 and "does not exist" in err
    assert (snapshot_map / "map.sqlite").read_bytes() == before


def test_label_refuses_a_live_map_a_node_is_appending_to(live_map, capsys):
    writer = live_map_dirs.open_for_append(live_map, FP, DIM, "float32")  # holds the writer lock
    try:
        rc, _, err = run(capsys, "label", live_map, "--id", 1, "--label", "x")
    finally:
        writer.close()
    assert rc == 2 and "in use by another writer" in err


@pytest.mark.parametrize("which", ["snapshot_map", "live_map"])
def test_query_prints_ranked_keyframes_with_poses(which, request, capsys):
    path = request.getfixturevalue(which)
    rc, out, err = run(capsys, "query", path, "--text", "room 214", "--no-embedding", "--limit", 3)
    assert rc == 0, err
    lines = [ln for ln in out.splitlines() if ln.lstrip()[:2].rstrip(".").isdigit()]
    assert len(lines) == 1  # "Room 216" and "ROOM 218" share "room", not the number: never matches
    assert lines[0].startswith("  1. key 1 robot r1 session s1 id 1 1970-01-01T00:00:02.000+00:00 x 1.00 y 0.00 z 0.00")
    assert 'token: text "ROOM 214" (confidence 0.95)' in lines[0]
    assert "1 match(es) for 'room 214'" in out and "4 of 8 keyframes carry text" in out
    assert "similar" not in out  # an exact match: nothing else to show


def test_query_json_and_embedding(snapshot_map, capsys):
    rc, out, err = run(capsys, "query", snapshot_map, "--text", "cafeteria", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["embedding"] is True and doc["query"] == "cafeteria"
    top = doc["matches"][0]
    assert (top["key"], top["how"], top["position"]) == (7, "embedding", [7.0, 0.0, 0.0])
    assert "cosine" in top["evidence"] and top["stamp_ns"] == 8 * 10**9
    rc, out, _ = run(capsys, "query", snapshot_map, "--text", "cafeteria", "--json", "--no-embedding")
    assert json.loads(out)["matches"] == [] and json.loads(out)["embedding"] is False


def test_query_without_embedding_never_imports_torch(snapshot_map):
    # A fresh interpreter: tests before this one may have imported torch into the pytest process.
    code = ("import sys; from vpr_ros.cli.main import main; "
            f"rc = main(['map', 'query', {str(snapshot_map)!r}, '--text', 'kitchen', '--no-embedding']); "
            "sys.exit(rc if rc else 3 if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'label "Kitchen"' not in done.stdout and 'text "Kitchen"' in done.stdout


def test_query_errors(snapshot_map, capsys):
    rc, _, err = run(capsys, "query", snapshot_map, "--text", "!!", "--no-embedding")
    assert rc == 2 and "no letters or digits" in err
    rc, _, err = run(capsys, "query", snapshot_map, "--text", "room", "--limit", 0)
    assert rc == 2 and "--limit 0" in err
    rc, _, err = run(capsys, "query", snapshot_map, "--text", "room", "--threads", 0)
    assert rc == 2 and "--threads 0" in err


def test_query_on_a_map_without_text_says_how_to_get_some(tmp_path, capsys):
    kfs = keyframes()
    for k in kfs:
        k.text = None
    path = write_map(tmp_path / "bare", kfs, [], MODEL, DIM)
    rc, out, _ = run(capsys, "query", path, "--text", "room 214")
    assert rc == 0 and "no exact match for 'room 214'" in out and "vpr-ros map label" in out


def test_query_for_a_room_the_map_lacks_says_so_first_and_ranks_no_other_number(tmp_path, capsys):
    """Issue 19: "room 214" on a map of seven "370" plates printed seven ranked "matches"."""
    kfs = keyframes()
    for k in kfs:
        k.text = (TextReading("ROOM 370", 0.95),) if k.id < 7 else (TextReading("EXIT", 0.9),)
    path = write_map(tmp_path / "plates", kfs, [], MODEL, DIM)
    rc, out, err = run(capsys, "query", path, "--text", "room 214", "--no-embedding")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"map {path}: no exact match for 'room 214' (8 of 8 keyframes carry text")
    assert not [ln for ln in lines if ln.lstrip()[:2].rstrip(".").isdigit()]  # nothing ranked as a match
    assert lines[1] == "similar (not the same number; these are other places, not matches):"
    assert len(lines) == 2 + 5 and all('"ROOM 370"' in ln and ln.startswith("    - key ") for ln in lines[2:])
    rc, out, _ = run(capsys, "query", path, "--text", "room 214", "--json")  # the embedding model too
    doc = json.loads(out)
    assert doc["matches"] == [] and doc["exact_match"] is False and len(doc["similar_not_same_number"]) == 5
    # A match holding the number but not every word is shown, after saying it is not exact.
    kfs[7].text = (TextReading("Office 214", 0.9),)
    path = write_map(tmp_path / "office", kfs, [], MODEL, DIM)
    rc, out, _ = run(capsys, "query", path, "--text", "room 214", "--no-embedding")
    lines = out.splitlines()
    assert "no exact match for 'room 214'; 1 partial or related match(es) below" in lines[0]
    assert lines[1].startswith("  1. key 7 ") and '"Office 214"' in lines[1]
    assert lines[2].startswith("similar (not the same number")
