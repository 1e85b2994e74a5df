"""Output files written whole or not at all, never through a link, never over a file unasked.

Each file is written under a temporary name in its own directory (so the rename stays on one file
system), flushed to disk, and only then given its name: a full disk, a killed process or a bad
value leaves the old file or no file, never a truncated one that blocks the next run. A failure
removes the temporary files. A new file takes its name with ``link`` (fails if the name exists, even
as a dangling link), so a file that appears meanwhile is not replaced; a replaced one (``--force``,
or our own outputs) with ``rename``, which replaces a symbolic link itself and never its target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Iterator, Sequence

from vpr_ros.core.errors import InputError
from vpr_ros.core.map.atomic_dir import fsync_dir, fsync_file

__all__ = ["check_new_file", "atomic_files", "TMP_MARK"]

#: in every temporary name (``.NAME.<hex>.tmp.SUFFIX``): the suffix keeps e.g. matplotlib's format choice
TMP_MARK = ".tmp"
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK)


def check_new_file(path: str | Path, *, force: bool = False, flag: str = "--out") -> Path:
    """``path`` when an output file may be written there: a new name, or with ``force`` a regular
    file. Refused (InputError naming it): a symbolic link, a directory, a FIFO or device, and an
    existing file without ``force``. Reads nothing, writes nothing."""
    path = Path(path).expanduser()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise InputError(f"{flag} {path} cannot be checked ({exc.strerror or exc}); give another path") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{flag} {path} is a symbolic link; outputs are never written through links, so give "
                         "the path of a new file (or remove the link)")
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{flag} {path} is a directory; give a file name inside it")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{flag} {path} exists and is not a regular file (a FIFO, socket or device); "
                         "give the path of a new file")
    if not force:
        raise InputError(f"{flag} {path} already exists and is not overwritten; add --force to replace it, "
                         "or give another path")
    return path


def _temporary(path: Path) -> Path:
    """A new empty file next to ``path`` (mode from the umask, like any new output)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_MARK}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def _take_name(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless something has it (InputError): link, else rename."""
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise InputError(f"{path} appeared while it was being written and is not overwritten; nothing was "
                         "written there — remove it or give another path") from None
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if os.path.lexists(path):  # a file system without hard links: check, then rename
            raise InputError(f"{path} appeared while it was being written and is not overwritten") from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_files(paths: Sequence[str | Path], *, replace: bool = False,
                 error: type[Exception] = InputError) -> Iterator[list[Path]]:
    """Yield one temporary path per entry of ``paths`` to write; when the block ends without error
    each becomes its path (``replace``: an existing file or link of that name is replaced, never
    followed; else the name must still be free). On any error every temporary file (and any name
    already given by this call) is removed, and an OSError becomes ``error`` naming the file."""
    paths = [Path(p) for p in paths]
    temps: list[Path] = []
    done: list[Path] = []
    try:
        for p in paths:
            temps.append(_temporary(p))
        yield list(temps)
        for tmp in temps:
            fsync_file(tmp)  # on disk before it takes the name
        for tmp, p in zip(temps, paths):
            if replace:
                os.replace(tmp, p)
            else:
                _take_name(tmp, p)
            done.append(p)
        for parent in {p.parent for p in paths}:
            fsync_dir(parent)
    except BaseException as exc:
        for p in ([] if replace else done):  # names this call gave, to files it wrote: ours to remove
            with contextlib.suppress(OSError):
                os.unlink(p)
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            which = next((p for p, t in zip(paths, temps) if exc.filename in (str(t), str(p))), None)
            names = str(which) if which is not None else ", ".join(map(str, paths))
            raise error(f"cannot write {names}: {exc.strerror or exc}; nothing was written there, so free some "
                        "disk space (or fix the permissions) and run the command again") from None
        raise
