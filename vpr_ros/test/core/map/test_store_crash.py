"""A crash (SIGKILL) at any moment of a save leaves the old or the new map; a full disk fails cleanly."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from store_maps import DIM, MODEL, index_writer, snapshot, synthetic_keyframes
from vpr_ros.core.map import atomic_dir
from vpr_ros.core.map.atomic_dir import MARKER
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes


def _save(path, kfs):
    return save_keyframes(path, kfs, MODEL, DIM, index_writer=index_writer(kfs))


def _ids(path: Path) -> tuple[int, np.ndarray]:
    _, kfs = load_keyframes(path, MODEL)
    return len(kfs), kfs[-1].global_


@pytest.fixture(params=[True, False], ids=["exchange", "two_renames"])
def exchange(request, monkeypatch):
    monkeypatch.setattr(atomic_dir, "USE_EXCHANGE", request.param)
    return request.param


def test_sigkill_at_random_moments_leaves_old_or_new_map(tmp_path, exchange):
    path = tmp_path / "map"
    maps = [synthetic_keyframes(3, seed=1), synthetic_keyframes(40, seed=2)]
    expected = {len(m): m[-1].global_ for m in maps}
    _save(path, maps[0])
    t0 = time.perf_counter()
    _save(path, maps[1])
    save_s = time.perf_counter() - t0
    rng = random.Random(8)
    for trial in range(15):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: save the two maps in turn until killed
            try:
                os.close(r)
                os.write(w, b"!")
                for i in range(10**6):
                    _save(path, maps[i % 2])
            finally:
                os._exit(0)
        os.close(w)
        os.read(r, 1)
        time.sleep(rng.uniform(0, 1.5 * save_s))  # anywhere in the first save or two
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        n, last = _ids(path)  # recovers leftovers first
        np.testing.assert_array_equal(last, expected[n], err_msg=f"trial {trial}")
        # ...and the next save finds no leftover in its way.
        assert sorted(os.listdir(tmp_path)) == ["map"], f"trial {trial}: {snapshot(tmp_path).keys()}"


def _states(tmp_path: Path):
    """old = a map of 3 keyframes, new = one of 5, both complete."""
    work = tmp_path / "work"
    _save(work / "old", synthetic_keyframes(3))
    _save(work / "new", synthetic_keyframes(5, seed=1))
    return work / "old", work / "new"


@pytest.mark.parametrize("leftover,expected", [
    ({"map.old": "old"}, 3),                                      # killed between the two renames
    ({"map.old": "old", "map.tmp-save": "new"}, 5),               # same, the new map is complete
    ({"map": "new", "map.old": "old"}, 5),                        # killed before removing the old map
    ({"map": "old", "map.tmp-save": "new"}, 3),                   # killed before the swap
    ({"map": "new", "map.tmp-save": "old"}, 5),                   # exchange done, old not yet removed
    ({"map": "old", "map.tmp-save": "partial"}, 3),               # killed while writing
    ({"map.tmp-save": "partial", "map.old": "old"}, 3),
])
def test_recovers_what_a_crash_leaves(tmp_path, leftover, expected):
    old, new = _states(tmp_path)
    for name, what in leftover.items():
        if what == "partial":
            shutil.copytree(new, tmp_path / name)
            (tmp_path / name / "manifest.json").unlink()
            (tmp_path / name / "map.sqlite").unlink()
        else:
            shutil.copytree(old if what == "old" else new, tmp_path / name)
        if name != "map":
            (tmp_path / name / MARKER).write_bytes(b"")  # what a save puts into what it may leave behind
    shutil.rmtree(tmp_path / "work")
    assert len(load_keyframes(tmp_path / "map", MODEL)[1]) == expected
    assert sorted(os.listdir(tmp_path)) == ["map"]
    _save(tmp_path / "map", synthetic_keyframes(7, seed=4))
    assert sorted(os.listdir(tmp_path)) == ["map"]
    assert len(load_keyframes(tmp_path / "map", MODEL)[1]) == 7


def test_leftover_names_that_are_not_ours_are_never_touched(tmp_path):
    (tmp_path / "map.old").mkdir()
    (tmp_path / "map.old" / "thesis.tex").write_text("user data")
    (tmp_path / "map.tmp-save").write_text("user file")
    before = snapshot(tmp_path)
    with pytest.raises(MapStoreError, match="not a vpr_ros map"):
        load_keyframes(tmp_path / "map", MODEL)
    with pytest.raises(MapStoreError, match="map.tmp-save exists and is not a vpr_ros save's leftover"):
        _save(tmp_path / "map", synthetic_keyframes(2))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two_renames"])
def test_a_users_own_map_copy_next_to_the_map_is_never_removed(tmp_path, monkeypatch, exchange):
    """MAP.old / MAP.tmp-save that a person made (a complete map copy, no save marker) survive loads and
    saves; the store never removes or renames what it did not mark as its own."""
    monkeypatch.setattr(atomic_dir, "USE_EXCHANGE", exchange)
    _save(tmp_path / "map", synthetic_keyframes(3))
    shutil.copytree(tmp_path / "map", tmp_path / "map.old")  # the user's backup
    before = snapshot(tmp_path / "map.old")
    assert len(load_keyframes(tmp_path / "map", MODEL)[1]) == 3
    if exchange:
        _save(tmp_path / "map", synthetic_keyframes(4, seed=1))
        assert len(load_keyframes(tmp_path / "map", MODEL)[1]) == 4
    else:  # the fallback needs the name: refused, and nothing changed
        with pytest.raises(MapStoreError, match="map.old exists and is not a vpr_ros save's leftover"):
            _save(tmp_path / "map", synthetic_keyframes(4, seed=1))
        assert len(load_keyframes(tmp_path / "map", MODEL)[1]) == 3
    assert snapshot(tmp_path / "map.old") == before
    # ...and the backup's name is no save target while the map is next to it
    with pytest.raises(MapStoreError, match="temporary copy"):
        _save(tmp_path / "map.old", synthetic_keyframes(2))
    assert snapshot(tmp_path / "map.old") == before


_FULL_DISK = """
import json, os, sys
sys.path[:0] = [sys.argv[2]]
from store_maps import DIM, MODEL, index_writer, synthetic_keyframes
from vpr_ros.core.map import snapshot
from vpr_ros.core.errors import MapStoreError
root = sys.argv[1]
small = synthetic_keyframes(2)
snapshot.save_keyframes(root + "/map", small, MODEL, DIM, index_writer(small))
big = synthetic_keyframes(int(sys.argv[3]), seed=1)
if sys.argv[4] == "sqlite":
    for kf in big:
        kf.local = None
try:
    snapshot.save_keyframes(root + "/map", big, MODEL, DIM, index_writer(big))
    error = None
except MapStoreError as exc:
    error = str(exc)
print(json.dumps({"error": error, "loaded": len(snapshot.load_keyframes(root + "/map", MODEL)[1]),
                  "listing": sorted(os.listdir(root))}))
"""


@pytest.mark.parametrize("full_in", ["shard", "sqlite"])
def test_full_disk_save_fails_cleanly(tmp_path, full_in):
    """A real full disk: a 160 KiB tmpfs mounted in a private user + mount namespace."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("unprivileged user namespaces are not available to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    out = subprocess.run(
        ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=160k tmpfs "$1" && shift && exec "$@"', "sh",
         str(disk), sys.executable, "-c", _FULL_DISK, str(disk), str(Path(__file__).parent),
         "2000" if full_in == "sqlite" else "400", full_in],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    reason = result["error"].split(": ", 1)[1]  # after "cannot save map to PATH" (the path says "full")
    assert "No space left on device" in reason or "database or disk is full" in reason
    assert "unchanged" in result["error"]
    assert result["loaded"] == 2  # the previous map still loads
    assert result["listing"] == ["map"]  # the temporary copy was removed


def test_concurrent_saves_and_loads_take_turns(tmp_path):
    """An autosave thread and a service call saving the same map must not share the temporary dir."""
    import threading

    path = tmp_path / "map"
    maps = [synthetic_keyframes(3, seed=1), synthetic_keyframes(6, seed=2)]
    expected = {len(m): m[-1].global_ for m in maps}
    _save(path, maps[0])
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(4):
                if i == 2:
                    n, last = _ids(path)
                    np.testing.assert_array_equal(last, expected[n])
                else:
                    _save(path, maps[(i + j) % 2])
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(os.listdir(tmp_path)) == ["map"]
