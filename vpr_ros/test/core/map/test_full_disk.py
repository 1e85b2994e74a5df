"""A live map on a really full disk (a small tmpfs in a private mount namespace): issue 18 classes 2 and 3.

Before: failed appends were never retried (14 of 60 keyframes reached the disk while diagnostics said
60), a loop could commit before its keyframe (map verify: DAMAGED), a label was answered as stored,
saving onto the live map said everything was on disk, and a ROLLBACK error could hide SQLITE_FULL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, sys
from pathlib import Path
from vpr_ros.cli.bench.crash_loops import loop_detector, revisit_stream
from vpr_ros.cli.map_verify import verify_map
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.text.place_text import PlaceLabel

mnt, shape, out = Path(sys.argv[1]), (8, 8, 32), {}
det = loop_detector(shape)
det.attach_store(mnt / "live")
stream = revisit_stream(48, shape)
for stamp, g, local in stream[:8]:
    det.process_descriptors(stamp, g, local)
with open(mnt / "filler", "wb", buffering=0) as f:  # the disk fills up
    try:
        while True:
            f.write(b"\0" * 4096)
    except OSError:
        pass
loops = 0
for stamp, g, local in stream[8:32]:
    loops += len(det.process_descriptors(stamp, g, local).loop_closures)
out.update(pending=det.store_pending, failures=det.store_failures, error=det.store_error, made=det.num_keyframes)
last = det.num_keyframes - 1
try:
    det.add_label(last, PlaceLabel("Room 214"))
    out["label"] = "stored"
except MapStoreError as exc:
    out["label"] = str(exc)
out["label_in_memory"] = len(det.keyframe(last).labels)
try:
    det.save_map(mnt / "live")
    out["save_while_full"] = "ok"
except MapStoreError as exc:
    out["save_while_full"] = str(exc)
v = verify_map(mnt / "live")
out["verify_while_full"] = [v.ok, v.message]
(mnt / "filler").unlink()  # space returns
for stamp, g, local in stream[32:]:
    loops += len(det.process_descriptors(stamp, g, local).loop_closures)
out.update(pending_after=det.store_pending, made_after=det.num_keyframes, loops=loops)
det.add_label(last, PlaceLabel("Room 214"))
det.save_map(mnt / "live")
det.detach_store()
v = verify_map(mnt / "live")
out.update(verify_after=[v.ok, v.message], on_disk=len(v.data.keyframes), loops_on_disk=len(v.data.loops),
           labels_on_disk=[lb.label for lb in v.data.keyframes[last].labels])
print(json.dumps(out))
"""


def _run_on_small_tmpfs(tmp_path: Path, size: str = "3m") -> dict:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to mount a small file system")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    shell = 'mount -t tmpfs -o size="$1" tmpfs "$2" && exec "$3" -c "$4" "$2"'
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell, "sh", size, str(mnt), sys.executable, SCRIPT],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "mount" in proc.stderr and "Traceback" not in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_full_disk_keeps_keyframes_retries_them_and_answers_truthfully(tmp_path):
    r = _run_on_small_tmpfs(tmp_path)
    assert r["made"] == 32 and r["pending"] > 0 and r["failures"] > 0
    assert "No space left" in r["error"] or "full" in r["error"], r["error"]  # the cause, not the rollback
    assert "not on disk yet" in r["label"] and r["label_in_memory"] == 0
    assert "not in map" in r["save_while_full"] and "memory only" in r["save_while_full"]
    assert r["verify_while_full"][0], r["verify_while_full"]  # no loop without its keyframe, ever
    assert r["pending_after"] == 0 and r["made_after"] == 48
    assert r["verify_after"][0], r["verify_after"]
    assert r["on_disk"] == 48  # every keyframe made while the disk was full reached it later
    assert r["loops_on_disk"] == r["loops"] > 0
    assert r["labels_on_disk"] == ["Room 214"]
