"""Map tools keep what they do not own and report damage as --map-load sees it: issue 18 classes 1, 4,
7, 8, 9 and 16 through the real command line."""

from __future__ import annotations

import json
import shutil

from store_maps import DIM, MODEL, index_writer, snapshot, synthetic_keyframes
from vpr_ros.cli.frame_index import FRAME_INDEX_FILE
from vpr_ros.cli.main import main
from vpr_ros.core.map import live_map_dirs
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes
from vpr_ros.core.text.place_text import PlaceLabel, TextReading

FP = {"model_id": MODEL, "weights_digest": "test", "preprocessing": None}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _map(path, n=4, seed=0, **kw):
    kfs = synthetic_keyframes(n, seed=seed, **kw)
    return save_keyframes(path, kfs, MODEL, DIM, index_writer=index_writer(kfs)), kfs


def _frame_index(path, kfs) -> bytes:
    doc = {"keyframes": [[k.robot_id, k.session_id, k.id, 10 * k.id] for k in kfs]}
    (path / FRAME_INDEX_FILE).write_text(json.dumps(doc))
    return (path / FRAME_INDEX_FILE).read_bytes()


def test_label_and_compact_keep_the_frame_index(tmp_path, capsys):
    """Before: both rewrote the map without vpr_frame_index.json, and a --gt-npy evaluation against it
    then scored 0 true positives."""
    m, kfs = _map(tmp_path / "m")
    index = _frame_index(m, kfs)
    assert run(capsys, "map", "label", str(m), "--id", "1", "--label", "Room 214")[0] == 0
    assert (m / FRAME_INDEX_FILE).read_bytes() == index
    assert [lb.label for lb in load_keyframes(m, MODEL)[1][1].labels] == ["Room 214"]
    assert run(capsys, "map", "compact", str(m), "--out", str(tmp_path / "c"))[0] == 0
    assert (tmp_path / "c" / FRAME_INDEX_FILE).read_bytes() == index


def test_merge_keeps_the_labels_and_text_of_both_copies(tmp_path, capsys):
    a, kfs = _map(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    kfs_a, kfs_b = load_keyframes(a, MODEL)[1], load_keyframes(b, MODEL)[1]
    kfs_a[2].labels = (PlaceLabel("Room 214", "user", 1),)
    kfs_b[2].labels = (PlaceLabel("Kitchen", "yaml", 2), PlaceLabel("Room 214", "user", 1))
    kfs_b[2].text = (TextReading("214", 0.9),)
    for path, keyframes in ((a, kfs_a), (b, kfs_b)):
        save_keyframes(path, keyframes, MODEL, DIM, index_writer=index_writer(keyframes))
    assert run(capsys, "map", "merge", str(a), str(b), "--out", str(tmp_path / "ab"))[0] == 0
    merged = load_keyframes(tmp_path / "ab", MODEL)[1]
    assert len(merged) == 4
    assert [lb.label for lb in merged[2].labels] == ["Room 214", "Kitchen"]
    assert [r.text for r in merged[2].text] == ["214"]


def test_a_users_map_old_copy_is_no_reason_to_refuse_and_is_kept(tmp_path, capsys):
    """Before: map info refused the map and advised a --map-load, which then deleted the copy."""
    m, _ = _map(tmp_path / "m")
    shutil.copytree(m, tmp_path / "m.old")
    before = snapshot(tmp_path / "m.old")
    rc, out, err = run(capsys, "map", "info", str(m))
    assert rc == 0 and "interrupted save" not in err
    assert run(capsys, "map", "compact", str(m), "--out", str(tmp_path / "c"))[0] == 0
    assert snapshot(tmp_path / "m.old") == before


def test_verify_checks_what_map_load_checks(tmp_path, capsys):
    """Before: a garbage frame index passed verify (OK) while --map-load refused the map."""
    m, kfs = _map(tmp_path / "m")
    assert run(capsys, "map", "verify", str(m))[0] == 0
    (m / FRAME_INDEX_FILE).write_text("{not json")
    rc, out, _ = run(capsys, "map", "verify", str(m))
    assert rc == 1 and "DAMAGED" in out and FRAME_INDEX_FILE in out


def test_verify_calls_a_live_map_without_a_segment_damaged_and_changes_nothing(tmp_path, capsys):
    """Before: "OK, 0 keyframes" (the rows whose records were missing were ignored as a torn tail)."""
    log = live_map_dirs.open_for_append(tmp_path / "live", FP, DIM, "float16")
    for kf in synthetic_keyframes(3):
        log.append(kf)
    log.close()
    (tmp_path / "live" / "local" / "00000.seg").unlink()
    before = snapshot(tmp_path / "live")
    rc, out, _ = run(capsys, "map", "verify", str(tmp_path / "live"))
    assert rc == 1 and "DAMAGED" in out and "lacks the record" in out
    assert snapshot(tmp_path / "live") == before


def test_tools_refuse_to_replace_a_map_a_node_appends_to(tmp_path, capsys):
    """Before: map compact|merge --out M replaced a live map a node was appending to."""
    src, _ = _map(tmp_path / "src")
    log = live_map_dirs.open_for_append(tmp_path / "live", FP, DIM, "float16")  # the node's writer
    for kf in synthetic_keyframes(2, seed=5):
        log.append(kf)
    before = snapshot(tmp_path / "live")
    for argv in (["compact", str(src)], ["merge", str(src), str(src)]):
        rc, _, err = run(capsys, "map", *argv, "--out", str(tmp_path / "live"))
        assert rc == 2 and "in use by another writer" in err, err
    assert snapshot(tmp_path / "live") == before
    log.close()
