""""Your own data" for the CLI tests: a folder of real Corridor JPEGs (one stream: the reference pass,
then the query pass of the same places), a TUM trajectory of it, and its ground truth in every form."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from conftest import CORRIDOR
from vpr_ros.core.eval.groundtruth import load_vprbench_gt

N = 12          # frames per pass; the stream has 2 N frames
RATE = 2.0      # Hz
GAP_SEC = 4.0   # exclusion window: the query pass starts N / RATE = 6 s after the reference pass
PAIRS = load_vprbench_gt(CORRIDOR / "ground_truth_new.npy")  # query j -> reference frames (Corridor)
COMMON = ["--image-topic", "/camera/image_raw", "--no-progress", "--set", "verify.min_matches=30",
          "--set", f"detector.min_loop_gap_sec={GAP_SEC}", "--set", "verify.temporal_consistency=2"]


def corridor_folder(folder: Path) -> Path:
    """frame_0.jpg .. frame_{2N-1}.jpg: the reference frames 0..N-1, then the query frames 0..N-1.

    Unpadded names, so plain string order (frame_10 < frame_2) would be wrong."""
    folder.mkdir(parents=True)
    for k in range(2 * N):
        split, i = ("ref", k) if k < N else ("query", k - N)
        shutil.copyfile(CORRIDOR / split / f"{i:07d}.jpg", folder / f"frame_{k}.jpg")
    return folder


def positions() -> np.ndarray:
    """(2N,) x position of each frame: the places are 1 m apart, the same in both passes."""
    return np.r_[np.arange(N), np.arange(N)].astype(float)


def write_tum(path: Path, start: float = 0.0) -> Path:
    lines = [f"{start + k / RATE:.9f} {x:.3f} 0 0 0 0 0 1" for k, x in enumerate(positions())]
    path.write_text("# t x y z qx qy qz qw\n" + "\n".join(lines) + "\n")
    return path


def write_kitti(path: Path) -> Path:
    path.write_text("".join(f"1 0 0 {x:.3f} 0 1 0 0 0 0 1 0\n" for x in positions()))
    return path


def query_lists() -> dict[int, list[int]]:
    """Corridor ground truth of the N query frames (query j -> reference frames < N)."""
    return {j: sorted(r for r in PAIRS[j] if r < N) for j in range(N)}


def loop_matrix() -> np.ndarray:
    """(2N, 2N) bool: frame N + j and reference frame r are the same place (symmetric)."""
    m = np.zeros((2 * N, 2 * N), bool)
    for j, refs in query_lists().items():
        m[N + j, refs] = m[refs, N + j] = True
    return m
