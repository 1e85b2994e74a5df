"""The per-user cache directory (exported ONNX graphs, TensorRT engines, downloaded weights)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from vpr_ros.core.errors import ModelLoadError

__all__ = ["cache_dir", "atomic_write"]


def cache_dir(sub: str = "") -> Path:
    """``$VPR_ROS_CACHE`` or ``$XDG_CACHE_HOME/vpr_ros`` or ``~/.cache/vpr_ros`` (+ ``sub``), created.

    Raises:
        ModelLoadError: the directory cannot be created (a file in the way, no permission).
    """
    root = os.environ.get("VPR_ROS_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "vpr_ros"
    path = base / sub if sub else base
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot create the vpr_ros cache directory {path}: {exc}; set VPR_ROS_CACHE "
                             "to a writable directory") from exc
    return path


def atomic_write(target: Path, write: Callable[[Path], None]) -> Path:
    """Create ``target`` by calling ``write(tmp_path)`` then renaming, so that concurrent readers
    (two nodes starting at once) never see a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    return target
