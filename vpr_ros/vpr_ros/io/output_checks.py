"""Checking command-line outputs and inputs before any work starts, so a bad path fails in a second.

A replay can take hours; finding after the last frame that ``--out`` is a file or read-only (after
``--map-save`` already replaced a map) loses that work. These checks write nothing: a probe file
is created in an existing directory and removed at once, which also catches read-only mounts
(where permission bits do not tell, e.g. for root).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from vpr_ros.core.errors import BagError, MapStoreError

from vpr_ros.core.map.snapshot import check_save_target

__all__ = ["check_output_dir", "check_map_save_target", "check_map_load_source"]

def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor or ".")


def _probe_writable(directory: Path) -> str | None:
    """None when a file can be created in ``directory``, else why not."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".vpr_ros-write-probe-", dir=directory)
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def _check_creatable(path: Path, what: str, error: type[Exception]) -> None:
    """``path`` is a writable directory, or can be created as one."""
    if path.exists() and not path.is_dir():
        raise error(f"{what} {path} is a file, not a directory; give a directory path")
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise error(f"{what} {path} cannot be created: {base} is a file, not a directory; "
                    "give another path")
    why = _probe_writable(base)
    if why is not None:
        raise error(f"{what} {path} is not writable ({base}: {why}); choose a writable location")


def check_output_dir(path: str | Path, must_not_exist: tuple[str, ...] = ()) -> None:
    """Raise BagError unless ``path`` is (or can become) a writable directory without the
    entries ``must_not_exist`` (outputs that are never overwritten)."""
    path = Path(path)
    _check_creatable(path, "output folder", BagError)
    for name in must_not_exist:
        if os.path.lexists(path / name):  # a dangling link too: writing through it would create its target
            raise BagError(f"{path / name} already exists and is not overwritten; remove it or give "
                           "another --out folder")


def check_map_save_target(path: str | Path, *, protected: tuple[str | Path, ...] = ()) -> None:
    """Raise MapStoreError unless a map can be saved at ``path`` without destroying anything.

    Allowed: a missing path, an empty directory or an existing vpr_ros map (it is replaced).
    Refused: the current directory or an ancestor of it, a file, a non-empty directory that is not
    a map, any of ``protected`` (inputs such as the bag) or a directory containing one of them.
    """
    path = Path(path)
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise MapStoreError(f"--map-save {path} is the current directory (or holds it); a save "
                            "replaces the target directory, so give a new sub-directory like "
                            "--map-save ./map")
    for other in protected:
        other_resolved = Path(other).resolve()
        if resolved == other_resolved or resolved in other_resolved.parents:
            raise MapStoreError(f"--map-save {path} would replace {other}, an input of this run; "
                                "give another directory")
    check_save_target(path)  # the store's own rule: missing, empty, or a vpr_ros map; names the path
    # the store writes a sibling temporary directory and renames it, so the parent must be writable
    parent = resolved.parent
    if parent.exists():
        why = _probe_writable(parent) if parent.is_dir() else os.strerror(errno.ENOTDIR)
        if why is not None:
            raise MapStoreError(f"--map-save {path} is not writable ({parent}: {why}); choose a "
                                "writable location")
    else:
        _check_creatable(parent, "--map-save parent", MapStoreError)


def check_map_load_source(path: str | Path) -> None:
    """Raise MapStoreError when ``path`` does not exist (before the model is loaded; the store
    checks the content). Left to the store: a missing path with siblings ``NAME.*`` that a crash
    during a save can leave, which the store may recover from."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise MapStoreError(f"--map-load {path} is a file; give the map directory written by "
                                "--map-save or ~/save_map")
        return
    if not any(path.parent.glob(f"{path.name}.*")):
        raise MapStoreError(f"--map-load {path} does not exist; give a directory written by "
                            "--map-save or ~/save_map")
