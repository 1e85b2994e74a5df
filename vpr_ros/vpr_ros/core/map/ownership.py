"""One writer per map: an exclusive ``flock`` on the map directory itself.

Every writer of a map directory takes it: a node appending to a live map (for as long as it appends),
a node whose snapshots go to ``map.save_path`` (from start to shutdown, across its saves), and every
save that replaces a map (``vpr-ros map compact|merge|label``, ``replay --map-save``, ``~/save_map``)
for the time of the replacement. A second writer is refused with :data:`IN_USE`, whoever it is. The
kernel drops the lock with the process, so a killed writer (SIGKILL, OOM) never blocks the next one.
Readers (``map info|verify|export|report|query``, ``--map-load``) take no lock.

A save swaps a new directory in (core/map/atomic_dir.py): the saver locks the new directory before the
swap, so the path is never unowned while a saver that keeps ownership (a node) replaces it.
"""

from __future__ import annotations

import os
from pathlib import Path

from vpr_ros.core.errors import MapStoreError

try:
    import fcntl
except ImportError:  # Windows: writers are not locked against each other there
    fcntl = None  # type: ignore[assignment]

__all__ = ["IN_USE", "DirLock", "in_use_error", "probe"]

#: The one message every refused writer gets (with the path in front).
IN_USE = ("is in use by another writer (a node appending to it or saving snapshots there, or a map tool, "
          "replay or ~/save_map replacing it); nothing was written — stop that writer first, or give this "
          "one its own map path")


def in_use_error(path: str | Path) -> MapStoreError:
    return MapStoreError(f"map {path} {IN_USE}")


class DirLock:
    """An exclusive, non-blocking flock on one directory (its inode, whatever its name becomes)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory)
        self._fd: int | None = None
        if fcntl is None:
            return
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise in_use_error(self.path) from None
        self._fd = fd

    def holds(self, directory: str | Path) -> bool:
        """Whether this lock is on the directory now at ``directory`` (same inode)."""
        if self._fd is None:
            return False
        try:
            st = os.stat(directory)
        except OSError:
            return False
        mine = os.fstat(self._fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def adopt(self, other: "DirLock | None") -> None:
        """Hold ``other``'s lock instead of this one (a save swapped a new directory in)."""
        if other is None:
            return
        self.release()
        self.path, self._fd, other._fd = other.path, other._fd, None

    @classmethod
    def empty(cls, path: str | Path) -> "DirLock":
        """An ownership that holds nothing yet (a map path that does not exist until the first save)."""
        lock = cls.__new__(cls)
        lock.path, lock._fd = Path(path), None
        return lock

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DirLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def probe(directory: str | Path) -> None:
    """Raise the in-use MapStoreError now if another writer owns ``directory`` (touches nothing)."""
    p = Path(directory)
    if p.is_dir() and not p.is_symlink():
        DirLock(p).release()
