"""Small synthetic keyframe maps and file-level tools for the map store tests."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np

from vpr_ros.core.index import KeyframeIndex, l2_normalise
from vpr_ros.core.types import Keyframe

DIM = 16
LOCAL = (4, 4, 8)
MODEL = "synthetic@test"


def synthetic_keyframes(n: int, seed: int = 0, session: str = "s1", robot: str = "r1") -> list[Keyframe]:
    """n keyframes with random unit descriptors, local features and identity-based poses."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pose = np.eye(4)
        pose[0, 3] = i
        out.append(Keyframe(id=i, stamp_ns=i * 10**9, robot_id=robot, session_id=session,
                            global_=l2_normalise(rng.standard_normal(DIM))[0],
                            local=rng.standard_normal(LOCAL).astype(np.float32), pose=pose))
    return out


def index_writer(keyframes: list[Keyframe]):
    """The FAISS writer a detector passes to save_keyframes, for these keyframes."""
    index = KeyframeIndex(DIM)
    if keyframes:
        index.add(np.arange(len(keyframes)), np.stack([k.global_ for k in keyframes]))
    return index.save


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative name -> bytes), to show that nothing on disk changed."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = Path(d) / f
            out[str(p.relative_to(root))] = b"-> " + os.fsencode(os.readlink(p)) if p.is_symlink() else p.read_bytes()
    return out


def sql(map_dir: Path, statement: str, *args: object) -> None:
    db = sqlite3.connect(map_dir / "map.sqlite")
    with db:
        db.execute(statement, args)
    db.close()


def make_legacy(map_dir: Path) -> None:
    """Turn a map into one saved before checksums (no manifest.json), as vpr_ros before issue 8 wrote."""
    (map_dir / "manifest.json").unlink(missing_ok=True)
    for key in ("manifest", "global_dtype", "local_dtype", "shard_size"):
        sql(map_dir, "DELETE FROM meta WHERE key = ?", key)
