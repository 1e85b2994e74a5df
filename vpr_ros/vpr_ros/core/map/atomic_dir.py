"""Crash-safe replacement of a directory that holds one saved artefact (a keyframe map).

A save writes the new content into the sibling ``<name>.tmp-save``, fsyncs every file and
directory there, and swaps it in:

* with one ``renameat2(RENAME_EXCHANGE)`` where the kernel and file system support it (Linux >= 3.15
  on ext4, xfs, btrfs, tmpfs), so the path names a complete old or new map at every moment; the old
  content, now under ``<name>.tmp-save``, is removed afterwards;
* otherwise with two renames, ``<name>`` -> ``<name>.old`` then ``<name>.tmp-save`` -> ``<name>``.
  A crash between them leaves no ``<name>``; :func:`recover` (run before every load and save) puts
  the complete sibling back. vpr_ros before issue 8 used the same two names, so its leftovers are
  recovered too.

Nothing is removed or replaced unless the caller's ``classify`` recognises it as its own, so a path
holding someone else's files is refused with a message, never emptied. A sibling is removed as a
leftover only when it holds the :data:`MARKER` file that a save puts into the directories it will
leave behind (its temporary directory while writing, the previous content before the swap): a user's
own ``MAP.old`` backup is never touched, and ``MAP.old``-style names are refused as save targets
next to a map. Saves and recoveries in one parent directory hold an exclusive ``flock`` on it, so two
threads or processes saving the same map take turns instead of sharing ``<name>.tmp-save``; the map
directory itself is owned by one writer at a time (core/map/ownership.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map.ownership import DirLock

try:
    import fcntl
except ImportError:  # Windows: saves are not serialised against each other there
    fcntl = None  # type: ignore[assignment]

__all__ = ["Classify", "TMP_SUFFIX", "OLD_SUFFIX", "MARKER", "OURS", "REPLACEABLE", "replace_dir", "recover",
           "resolve_target", "dir_lock", "fsync_file", "fsync_dir", "leftovers"]

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp-save"
OLD_SUFFIX = ".old"
#: The file that marks a directory as a save's own leftover (removable); classifiers accept the name.
MARKER = ".vpr_ros-save-leftover"

#: ``classify(path)`` says what a path holds: "missing", "empty" (an empty directory), "complete"
#: (our artefact, fully written), "legacy" (ours, but from a writer that marked no completion),
#: "partial" (only our file names, but not a usable artefact) or "foreign" (anything else).
Classify = Callable[[Path], str]
OURS = frozenset({"empty", "complete", "legacy", "partial"})
REPLACEABLE = frozenset({"missing", "empty", "complete", "legacy"})

#: Set to False to force the two-rename fallback (file systems without RENAME_EXCHANGE; tests).
USE_EXCHANGE = True
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_file(path: Path) -> None:
    """Flush one file's data to disk (its directory entry needs :func:`fsync_dir` of the parent)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory, so that the names created, renamed or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def siblings(path: Path) -> tuple[Path, Path]:
    """The temporary and the previous-content names next to ``path``."""
    return path.with_name(path.name + TMP_SUFFIX), path.with_name(path.name + OLD_SUFFIX)


def _marked(path: Path) -> bool:
    """A save's own leftover: it holds the marker, or is an empty directory (a kill right after mkdir)."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        return os.path.isfile(path / MARKER) or not os.listdir(path)
    except OSError:
        return False


def _remove(path: Path) -> None:
    """Remove a marked leftover, its marker last, so a kill midway leaves it marked for the next try."""
    for entry in os.listdir(path):
        if entry != MARKER:
            p = path / entry
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else os.unlink(p)
    if os.path.lexists(path / MARKER):
        os.unlink(path / MARKER)
    os.rmdir(path)


def _mark(path: Path) -> None:
    with open(path / MARKER, "wb") as f:
        os.fsync(f.fileno())
    fsync_dir(path)


def _unmark(path: Path) -> None:
    if os.path.lexists(path / MARKER):
        os.unlink(path / MARKER)
        fsync_dir(path)


def leftovers(path: Path) -> list[Path]:
    """The siblings of ``path`` that an interrupted save left (marked as such); others are not ours."""
    return [p for p in siblings(path) if os.path.lexists(p) and _marked(p)]


def resolve_target(path: str | Path, classify: Classify) -> Path:
    """The absolute path a save may replace, or MapStoreError saying why not (nothing is touched).

    A symbolic link is followed only to one of our artefacts; the current directory and its parents
    are refused because renaming them away pulls the ground from under the running process.
    """
    if str(path).strip() == "":
        raise MapStoreError("the map path is empty; give a directory name such as maps/run1")
    p = Path(os.path.abspath(os.path.expanduser(path)))  # a ROS parameter gets no shell to expand "~"
    if p.is_symlink():
        real = p.resolve()
        if classify(real) not in ("complete", "legacy"):
            raise MapStoreError(f"cannot save map to {path}: it is a symbolic link to {real}, which is not "
                                "a vpr_ros map; nothing was written — choose another path or remove the link")
        p = real
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        cwd = None
    real = p.resolve()
    if p.parent == p or (cwd is not None and (real == cwd or real in cwd.parents)):
        raise MapStoreError(f"cannot save map to {path}: it is the current directory or one of its parents; "
                            "nothing was written — give a new directory name, e.g. maps/run1")
    for suffix in (TMP_SUFFIX, OLD_SUFFIX):
        stem = p.with_name(p.name[:-len(suffix)]) if p.name.endswith(suffix) else None
        if stem is not None and stem.name and classify(stem) in ("complete", "legacy"):
            raise MapStoreError(f"cannot save map to {path}: next to the map {stem.name} that name is the one a "
                                "save of it uses for its own temporary copy; nothing was written — choose "
                                "another name")
    state = classify(p)
    if state not in REPLACEABLE:
        what = ("a file or something else that is not a directory" if p.exists() and not p.is_dir()
                else "a directory with files that are not a vpr_ros map")
        raise MapStoreError(f"cannot save map to {path}: it is {what}; it was left untouched and nothing was "
                            "written — give a new or empty directory, or an existing vpr_ros map to replace")
    return p


@contextlib.contextmanager
def dir_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (released when the process dies, e.g. by SIGKILL)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if fcntl else None
    except OSError:  # an unreadable parent cannot be locked; saving there still works, unserialised
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def recover(path: Path, classify: Classify) -> list[str]:
    """Repair what a crash during a save can leave next to ``path``; returns what was done.

    No ``path`` but a complete sibling: rename it back (the newest complete one first). ``path`` is our
    artefact: remove our leftover siblings. Anything not ours is left alone. Waits for a save of the
    same directory in progress (its temporary directory is not a leftover).
    """
    tmp, old = siblings(path)
    if os.path.lexists(path) and not os.path.lexists(path / MARKER) and not leftovers(path):
        return []  # the common case (a user's own MAP.old included), without waiting for the lock
    with dir_lock(path.parent):
        return _recover_locked(path, classify)


def _recover_locked(path: Path, classify: Classify) -> list[str]:
    done: list[str] = []
    tmp, old = siblings(path)
    if not os.path.lexists(path):
        if _marked(tmp) and classify(tmp) == "complete":
            source = tmp
        elif _marked(old) and classify(old) in ("complete", "legacy"):
            source = old
        else:
            return done
        os.rename(source, path)
        fsync_dir(path.parent)
        done.append(f"restored {path} from {source.name} (left by an interrupted save)")
        logger.warning("%s", done[-1])
    if classify(path) in ("complete", "legacy"):
        if os.path.isfile(path / MARKER) and not path.is_symlink():
            _unmark(path)  # a save was killed after marking the previous content, before the swap
        for leftover in (tmp, old):
            if _marked(leftover) and classify(leftover) in OURS:
                _remove(leftover)
                fsync_dir(path.parent)
                done.append(f"removed {leftover.name} (left by an interrupted save)")
                logger.info("%s", done[-1])
    return done


@functools.lru_cache(maxsize=1)
def _renameat2() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, TypeError, AttributeError):  # no glibc >= 2.28 (musl, macOS, Windows)
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False when this system cannot (then nothing changed)."""
    fn = _renameat2() if USE_EXCHANGE else None
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(root: Path) -> None:
    for d, _, _ in os.walk(root):
        fsync_dir(Path(d))


def replace_dir(path: str | Path, write: Callable[[Path], None], classify: Classify,
                owner: DirLock | None = None) -> Path:
    """Make ``path`` hold what ``write(tmp_dir)`` writes, crash-safely; returns the absolute path.

    ``write`` must fsync the files it creates. Raises MapStoreError when ``path`` may not be
    replaced (also while another writer owns it, core/map/ownership.py); any other error of ``write``
    propagates after the temporary directory is removed, with ``path`` unchanged. ``owner``: the
    caller's ownership of ``path`` (a node saving snapshots there), which moves to the new directory.
    """
    target = resolve_target(path, classify)
    target.parent.mkdir(parents=True, exist_ok=True)
    with dir_lock(target.parent):
        _replace_locked(path, target, write, classify, owner)
    return target


def _replace_locked(path: str | Path, target: Path, write: Callable[[Path], None], classify: Classify,
                    owner: DirLock | None) -> None:
    _recover_locked(target, classify)
    state = classify(target)
    if state not in REPLACEABLE:  # e.g. another program wrote there since resolve_target looked
        raise MapStoreError(f"cannot save map to {path}: it changed while saving and is no longer a map or "
                            "empty; it was left untouched and nothing was written")
    mine = owner is not None and owner.holds(target)
    held = DirLock(target) if state != "missing" and not mine else None  # refuses while another writer owns it
    try:
        _swap_in(path, target, state, write, classify, owner)
    finally:
        if held is not None:
            held.release()


def _swap_in(path: str | Path, target: Path, state: str, write: Callable[[Path], None], classify: Classify,
             owner: DirLock | None) -> None:
    tmp, old = siblings(target)
    if os.path.lexists(tmp):
        if not _marked(tmp) or classify(tmp) not in OURS:
            raise MapStoreError(f"cannot save map to {path}: {tmp} exists and is not a vpr_ros save's leftover; "
                                "nothing was written — move it away or choose another map path")
        _remove(tmp)
    tmp.mkdir()
    new_lock = None
    try:
        _mark(tmp)  # every directory a save can leave behind carries the marker
        write(tmp)
        _fsync_tree(tmp)
        new_lock = DirLock(tmp) if owner is not None else None  # owned before the path names it
        fsync_dir(target.parent)
        if state == "missing" or state == "empty":
            os.rename(tmp, target)  # atomic; over an empty directory too
        else:
            _mark(target)  # the previous content is the save's leftover from now on
            if not _exchange(tmp, target):  # else tmp now holds the previous content
                _swap_by_renames(tmp, target, old)
    except BaseException:
        if new_lock is not None:
            new_lock.release()
        if os.path.isfile(target / MARKER) and os.path.isdir(tmp):
            _unmark(target)  # the swap did not happen: the previous content is the map again
        if tmp.is_dir() and classify(tmp) in OURS:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if owner is not None:
        owner.adopt(new_lock)
    _unmark(target)  # the new map came with the temporary directory's marker
    fsync_dir(target.parent)
    try:  # the new content is in place: failing to tidy up must not report the save as failed
        for previous in (tmp, old):  # the replaced map, now in a marked sibling (not a user's copy)
            if _marked(previous) and classify(previous) in OURS:
                _remove(previous)
        fsync_dir(target.parent)
    except OSError as exc:
        logger.warning("saved %s but could not remove the previous content (%s); the next save does", target, exc)


def _swap_by_renames(tmp: Path, target: Path, old: Path) -> None:
    if os.path.lexists(old):
        if not _marked(old):
            raise MapStoreError(f"cannot save map to {target}: {old} exists and is not a vpr_ros save's leftover "
                                "(a copy of yours?); it was left untouched and nothing was written — move it "
                                "away, this file system needs that name for the swap")
        _remove(old)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError as exc:
        try:
            os.rename(old, target)
        except OSError:
            raise MapStoreError(f"cannot save map to {target}: {exc}; the previous map is kept at {old} — "
                                f"rename it back to {target.name}") from exc
        raise
