"""Integrity of a saved map's files: a checksum manifest and strict ``.npy`` reading.

``manifest.json`` lists every data file of a map directory with its size and SHA-256; it is written
last, after every other file is on disk, so its presence also marks a complete save. Loading
verifies each file it reads against it before parsing, and names the damaged file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import numpy.typing as npt

from vpr_ros.core.map.atomic_dir import fsync_file
from vpr_ros.core.errors import MapStoreError

__all__ = ["MANIFEST", "Manifest", "write_manifest", "read_manifest", "verify_file", "write_npy", "read_npy"]

MANIFEST = "manifest.json"
_KIND = "vpr_ros map manifest"
_CHUNK = 1 << 20

Manifest = dict[str, dict[str, object]]


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def write_manifest(root: Path, names: Iterable[str]) -> None:
    """Checksum the files ``names`` (relative to ``root``, already fsynced) into ``root/manifest.json``."""
    files = {}
    for name in names:
        size, sha = _digest(root / name)
        files[name] = {"size": size, "sha256": sha}
    path = root / MANIFEST
    path.write_text(json.dumps({"kind": _KIND, "version": 1, "files": files}, indent=1, sort_keys=True))
    fsync_file(path)


def read_manifest(root: Path) -> Manifest | None:
    """The manifest of the map at ``root``, or None when it has none (a map saved before checksums)."""
    path = root / MANIFEST
    if not os.path.lexists(path):
        return None
    try:
        doc = json.loads(path.read_bytes())
        files = doc["files"]
        ok = (doc.get("kind") == _KIND and isinstance(files, dict) and all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("size"), int)
            and isinstance(v.get("sha256"), str) for k, v in files.items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MapStoreError(f"map {root}: {MANIFEST} is damaged ({exc}); re-create the map or load another") from None
    if not ok:
        raise MapStoreError(f"map {root}: {MANIFEST} is damaged (unexpected content); re-create the map "
                            "or load another")
    return files


def _describe(name: str) -> str:
    return f"local feature shard {name}" if name.startswith("local/") else name


def verify_file(root: Path, manifest: Manifest | None, name: str) -> None:
    """Check ``root/name`` against its manifest entry; no-op without a manifest."""
    if manifest is None:
        return
    entry = manifest.get(name)
    if entry is None:
        raise MapStoreError(f"map {root}: {_describe(name)} is not listed in {MANIFEST}; the map is damaged — "
                            "re-create it or load another")
    try:
        size, sha = _digest(root / name)
    except OSError as exc:
        raise MapStoreError(f"map {root}: cannot read {_describe(name)} ({exc.strerror or exc}); the map is damaged "
                            "or unreadable — re-create it or load another") from None
    if size != entry["size"] or sha != entry["sha256"]:
        raise MapStoreError(f"map {root}: {_describe(name)} is damaged (checksum mismatch: {size} bytes, expected "
                            f"{entry['size']}); re-create the map or load another")


def write_npy(path: Path, array: npt.NDArray[np.generic]) -> None:
    """``np.save`` that reaches the disk before returning (or raises OSError, e.g. ENOSPC)."""
    arr = np.ascontiguousarray(array)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(arr))
        # Not arr.tofile(): on a full disk it reports "N requested and M written" without an errno.
        f.write(memoryview(arr).cast("B"))
        f.flush()
        os.fsync(f.fileno())


def read_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> npt.NDArray[np.generic]:
    """Read a plain C-order ``.npy`` of exactly ``shape`` and ``dtype``; MapStoreError names the file.

    The header is checked before anything is allocated, so a crafted header cannot ask for a huge
    array or a pickled object, and a file with missing or extra bytes is refused.
    """
    def bad(what: str) -> MapStoreError:
        return MapStoreError(f"map {path.parent.parent}: local feature shard local/{path.name} is damaged "
                             f"({what}); re-create the map or load another")

    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise bad(f"unsupported .npy version {version}")
            if tuple(got_shape) != tuple(shape) or got_dtype != dtype or fortran:
                raise bad(f"holds {got_dtype} {tuple(got_shape)}, expected {np.dtype(dtype)} {tuple(shape)}")
            count = int(np.prod(shape))
            data = np.fromfile(f, dtype=dtype, count=count)
            if data.size != count or f.read(1):
                raise bad("wrong file size")
    except FileNotFoundError:
        raise MapStoreError(f"map {path.parent.parent}: local feature shard local/{path.name} is missing; "
                            "re-create the map or load another") from None
    except MapStoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy parses the header with tokenize/ast, which raise
        # whatever a crafted header provokes (ValueError, SyntaxError, TokenError, MemoryError, ...).
        raise bad(f"{type(exc).__name__}: {exc}") from None
    return data.reshape(shape)
