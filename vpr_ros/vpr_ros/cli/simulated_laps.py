"""A SIMULATED three-lap single-camera stream built from the Corridor, with its ground truth.

A robot that goes around one loop three times sees each place three times. The Corridor has two real
traversals (reference and query, query frame i at the place of reference frame i within +-2 frames),
so the simulated stream is: lap 1 = the reference traversal, lap 2 = the query traversal, lap 3 =
frame by frame the reference or the query frame of the same place (alternating, ``lap3_block`` frames
each, or by a seeded coin), perturbed (a small shift, blur, gain and seeded sensor noise) so that it is no copy of
either. Its best matches then alternate between lap 1 and lap 2, as on a real third lap. One camera,
no odometry: the laps are 60 s apart (10 Hz inside a lap), so ``detector.min_loop_gap_sec`` (20 s)
keeps a lap from matching itself while every earlier lap is in reach.

Ground truth: a loop matrix over the stream's frames, true when two frames lie in different laps
and their places differ by at most 2 frames (exactly the VPR-Bench ground truth of the Corridor
between laps 1 and 2). Everything made from it is labelled "simulated".

``python -m vpr_ros.cli.simulated_laps OUT`` writes ``OUT/simulated_three_laps`` (rosbag2, mcap) and
``OUT/simulated_three_laps_gt.npy`` for ``vpr-ros replay`` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.cli.corridor import corridor_frames
from vpr_ros.cli.simulated import SIMULATED_LABEL
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_image_bag

__all__ = ["SimulatedLaps", "simulated_three_laps", "simulated_laps_ground_truth", "write_simulated_three_laps",
           "LAP_PERIOD_NS", "GT_TOLERANCE"]

NS = 1_000_000_000
T0_NS = 1_700_000_000 * NS
PERIOD_NS = NS // 10       # 10 Hz inside a lap
LAP_PERIOD_NS = 60 * NS    # lap k starts 60 s after lap k-1 (the walk back to the start is not filmed)
GT_TOLERANCE = 2           # frames of the same place (the Corridor's VPR-Bench ground truth: +-2)
IMAGE_TOPIC = "/camera/image_raw"
U8 = npt.NDArray[np.uint8]


@dataclasses.dataclass(frozen=True)
class SimulatedLaps:
    """frames: the stream's (H, W, 3) RGB frames in order; place / lap: (N,) place index and lap (0, 1,
    2) of each frame; stamps_ns: (N,); source: "ref" or "query", the traversal each frame comes from."""

    frames: list[U8]
    place: npt.NDArray[np.int64]
    lap: npt.NDArray[np.int64]
    stamps_ns: npt.NDArray[np.int64]
    source: tuple[str, ...]
    label: str = SIMULATED_LABEL


def _perturb(image: U8, rng: np.random.Generator) -> U8:
    """A shifted (up to 3 px), slightly blurred, gain-changed and noisy copy of ``image``."""
    h, w = image.shape[:2]
    dx, dy = rng.integers(-3, 4, 2)
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    out = cv2.warpAffine(image, shift, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.6, 1.2)))
    noisy = out.astype(np.float32) * float(rng.uniform(0.85, 1.15)) + rng.normal(0.0, 4.0, out.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def simulated_three_laps(ref: Sequence[U8] | None = None, query: Sequence[U8] | None = None, *,
                         count: int | None = None, lap3_block: int = 1, lap3_random: bool = False,
                         seed: int = 0) -> SimulatedLaps:
    """SIMULATED three laps of the Corridor (module docstring): ref, query, then per place the ref or
    the query frame perturbed, switching source every ``lap3_block`` frames (``lap3_random``: a seeded
    coin per frame instead). ``count``: the first frames of each traversal only (tests)."""
    ref = list(corridor_frames("ref", count) if ref is None else ref)
    query = list(corridor_frames("query", count) if query is None else query)
    n = min(len(ref), len(query))
    rng = np.random.default_rng(seed)
    from_ref = rng.random(n) < 0.5 if lap3_random else (np.arange(n) // max(1, lap3_block)) % 2 == 0
    lap3 = [_perturb(ref[i] if from_ref[i] else query[i], rng) for i in range(n)]
    frames = ref[:n] + query[:n] + lap3
    sources = ("ref",) * n + ("query",) * n + tuple("ref" if r else "query" for r in from_ref)
    place = np.tile(np.arange(n, dtype=np.int64), 3)
    lap = np.repeat(np.arange(3, dtype=np.int64), n)
    stamps = T0_NS + lap * LAP_PERIOD_NS + place * PERIOD_NS
    return SimulatedLaps(frames, place, lap, stamps, sources)


def simulated_laps_ground_truth(laps: SimulatedLaps, tolerance: int = GT_TOLERANCE) -> npt.NDArray[np.bool_]:
    """(N, N) loop matrix: frames of different laps whose places are at most ``tolerance`` apart."""
    near = np.abs(laps.place[:, None] - laps.place[None, :]) <= tolerance
    return near & (laps.lap[:, None] != laps.lap[None, :])


def write_simulated_three_laps(out: str | Path, laps: SimulatedLaps | None = None,
                               storage: str = "mcap") -> tuple[Path, Path]:
    """Write the SIMULATED three-lap stream as a rosbag2 (rgb8 ``sensor_msgs/Image`` on
    ``/camera/image_raw``) and its loop-matrix ground truth (.npy); returns (bag, ground truth)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    laps = laps or simulated_three_laps()
    frames = [Frame(int(t), im) for t, im in zip(laps.stamps_ns, laps.frames)]
    bag = write_image_bag(out / "simulated_three_laps", frames, IMAGE_TOPIC, storage=storage)
    gt = out / "simulated_three_laps_gt.npy"
    np.save(gt, simulated_laps_ground_truth(laps))
    return bag, gt


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vpr_ros.cli.simulated_laps",
                                description="write the SIMULATED three-lap Corridor stream and its ground truth")
    p.add_argument("out", help="folder for simulated_three_laps/ (bag) and simulated_three_laps_gt.npy")
    p.add_argument("--lap3-block", type=int, default=1, help="lap 3 switches between ref and query every N frames")
    p.add_argument("--lap3-random", action="store_true", help="lap 3 takes ref or query by a seeded coin per frame")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    bag, gt = write_simulated_three_laps(args.out, simulated_three_laps(lap3_block=args.lap3_block, lap3_random=args.lap3_random,
                                                                   seed=args.seed))
    print(f"SIMULATED three laps of the Corridor: bag {bag}, ground truth {gt}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
