"""Checks a live map (core/map/live_map.py) passes before it is opened, and the one way its writer opens a
segment file: damage is refused with a MapStoreError naming the file, and nothing is changed.

* ``check_wal``: a ``log.sqlite-wal`` whose header is not SQLite's (SQLite would silently drop the
  commits it holds, and a writer would then discard it);
* ``check_local``: ``local`` must be a directory of regular segment files (not a file, no links);
* ``open_segment``: never through a symbolic link, so a link planted in a map cannot make the writer
  overwrite the file it points to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vpr_ros.core.errors import MapStoreError

__all__ = ["check_wal", "check_local", "open_segment"]

LOG = "log.sqlite"
_WAL_MAGIC = (0x377F0682, 0x377F0683)


def _wal_checksum(data: bytes, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL header checksum over ``data`` (a multiple of 8 bytes)."""
    words = np.frombuffer(data, ">u4" if big_endian else "<u4").astype(np.uint64)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + int(words[i]) + s1) & 0xFFFFFFFF
        s1 = (s1 + int(words[i + 1]) + s0) & 0xFFFFFFFF
    return s0, s1


def check_wal(root: Path) -> None:
    """MapStoreError when ``log.sqlite-wal`` exists, is not empty and its header is not SQLite's."""
    try:
        with open(root / (LOG + "-wal"), "rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise MapStoreError(f"map {root}: cannot read {LOG}-wal ({exc})") from None
    if not head:
        return
    fields = np.frombuffer(head.ljust(32, b"\0"), ">u4")
    ok = (len(head) == 32 and int(fields[0]) in _WAL_MAGIC and int(fields[1]) == 3007000
          and _wal_checksum(head[:24], bool(int(fields[0]) & 1)) == (int(fields[6]), int(fields[7])))
    if not ok:
        raise MapStoreError(f"map {root}: {LOG}-wal is not a SQLite write-ahead log (damaged or replaced); the "
                            "map is damaged and was left as it is — keep it for inspection and start a new map")


def check_local(root: Path) -> None:
    local = root / "local"
    if not os.path.lexists(local):
        return
    if local.is_symlink() or not local.is_dir():
        raise MapStoreError(f"map {root}: local is not a directory; the map is damaged and was left as it is — "
                            "keep it for inspection and start a new map")
    for name in os.listdir(local):
        if (local / name).is_symlink():
            raise MapStoreError(f"map {root}: local/{name} is a symbolic link; a map's segment files are its own, "
                                "so the map was left as it is — replace the link by the segment file or start a "
                                "new map")


def open_segment(path: Path) -> Any:
    """A segment file for reading and writing, created if missing; never through a symbolic link."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise MapStoreError(f"map {path.parent.parent}: cannot open segment local/{path.name} for writing ({exc}); "
                            "a map's segments must be its own regular files") from None
    return os.fdopen(fd, "r+b")
