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
holding someone else's files is refused with a message, never emptied. Saves and recoveries in one
parent directory hold an exclusive ``flock`` on it, so two threads or processes saving the same map
(an autosave and a service call) take turns instead of sharing ``<name>.tmp-save``.
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

try:
    import fcntl
except ImportError:  # Windows: saves are not serialised against each other there
    fcntl = None  # type: ignore[assignment]

__all__ = ["Classify", "TMP_SUFFIX", "OLD_SUFFIX", "OURS", "REPLACEABLE", "replace_dir", "recover",
           "resolve_target", "dir_lock", "fsync_file", "fsync_dir"]

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp-save"
OLD_SUFFIX = ".old"

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
    if os.path.lexists(path) and not os.path.lexists(tmp) and not os.path.lexists(old):
        return []  # the common case, without waiting for the lock
    with dir_lock(path.parent):
        return _recover_locked(path, classify)


def _recover_locked(path: Path, classify: Classify) -> list[str]:
    done: list[str] = []
    tmp, old = siblings(path)
    if not os.path.lexists(path):
        if classify(tmp) == "complete":
            source = tmp
        elif classify(old) in ("complete", "legacy"):
            source = old
        else:
            return done
        os.rename(source, path)
        fsync_dir(path.parent)
        done.append(f"restored {path} from {source.name} (left by an interrupted save)")
        logger.warning("%s", done[-1])
    if classify(path) in ("complete", "legacy"):
        for leftover in (tmp, old):
            if os.path.lexists(leftover) and not leftover.is_symlink() and classify(leftover) in OURS:
                shutil.rmtree(leftover)
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


def replace_dir(path: str | Path, write: Callable[[Path], None], classify: Classify) -> Path:
    """Make ``path`` hold what ``write(tmp_dir)`` writes, crash-safely; returns the absolute path.

    ``write`` must fsync the files it creates. Raises MapStoreError when ``path`` may not be
    replaced; any other error of ``write`` propagates after the temporary directory is removed, with
    ``path`` unchanged.
    """
    target = resolve_target(path, classify)
    target.parent.mkdir(parents=True, exist_ok=True)
    with dir_lock(target.parent):
        _replace_locked(path, target, write, classify)
    return target


def _replace_locked(path: str | Path, target: Path, write: Callable[[Path], None], classify: Classify) -> None:
    _recover_locked(target, classify)
    state = classify(target)
    if state not in REPLACEABLE:  # e.g. another program wrote there since resolve_target looked
        raise MapStoreError(f"cannot save map to {path}: it changed while saving and is no longer a map or "
                            "empty; it was left untouched and nothing was written")
    tmp, old = siblings(target)
    for leftover in (tmp, old):
        if os.path.lexists(leftover):
            if leftover.is_symlink() or classify(leftover) not in OURS:
                raise MapStoreError(f"cannot save map to {path}: {leftover} exists and is not a vpr_ros map; "
                                    "nothing was written — move it away or choose another map path")
            shutil.rmtree(leftover)
    tmp.mkdir()
    try:
        write(tmp)
        _fsync_tree(tmp)
        fsync_dir(target.parent)
        if state == "missing" or state == "empty":
            os.rename(tmp, target)  # atomic; over an empty directory too
        elif _exchange(tmp, target):
            pass  # tmp now holds the previous content
        else:
            _swap_by_renames(tmp, target, old)
    except BaseException:
        if tmp.is_dir() and classify(tmp) in OURS:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    try:  # the new content is in place: failing to tidy up must not report the save as failed
        for previous in (tmp, old):  # the replaced map, now in a sibling (not a crash leftover)
            if os.path.lexists(previous) and not previous.is_symlink() and classify(previous) in OURS:
                shutil.rmtree(previous)
        fsync_dir(target.parent)
    except OSError as exc:
        logger.warning("saved %s but could not remove the previous content (%s); the next save does", target, exc)


def _swap_by_renames(tmp: Path, target: Path, old: Path) -> None:
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
