"""``vpr-ros bench crash --loops`` / ``--replay``: SIGKILL the node's write path and ``vpr-ros replay
--map-save`` at random moments; after every kill the map must pass ``vpr-ros map verify`` (the same
function, cli/map_verify.py) and hold no loop without its keyframe.

* ``run_detector_trials``: a writer process runs the node's core path (LoopClosureDetector with a live
  map attached, as the node does with ``map.append``) on a SIMULATED revisit stream that produces loop
  closures (places seen again, identical local features), acknowledging each keyframe on its stdout.
  After the kill the map is verified, and it must hold every acknowledged keyframe; the next writer
  continues it.
* ``run_replay_trials``: a real ``vpr-ros replay BAG --map-save MAP`` process (embedded Corridor bag,
  default model) is killed at a random moment around its final save; MAP (an earlier complete save)
  must still verify, as the old or the new map (after the recovery any next load makes, when the kill
  fell between the two renames of a save or before its leftover was removed).
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SimulatedModel", "revisit_stream", "loop_detector", "run_detector_trials", "run_replay_trials"]

NS = 10**9


class SimulatedModel:
    """Stands in for a descriptor model: the writer feeds descriptors itself (process_descriptors)."""

    model_id = "simulated@crash-loops"
    global_dim = 64


def revisit_stream(n: int, shape: tuple[int, int, int], places: int = 8, seed: int = 0,
                   start: int = 0) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """SIMULATED keyframes ``start``..``start + n - 1``: keyframe k shows place k % places, 1 s apart, so
    every lap after the first revisits the places of the first (a loop closure from the second frame
    of each revisit on). Deterministic: the same k gives the same bytes."""
    out = []
    for k in range(start, start + n):
        rng = np.random.default_rng(seed * 1000 + k % places)
        g = rng.standard_normal(SimulatedModel.global_dim).astype(np.float32)
        local = rng.standard_normal(shape).astype(np.float32)
        g += np.random.default_rng(10**6 + k).standard_normal(g.shape).astype(np.float32) * 0.05
        out.append(((k + 1) * NS, g / np.linalg.norm(g), local))
    return out


def loop_detector(shape: tuple[int, int, int], encoding: str = "float16") -> Any:
    """The detector of the trials: loops between laps of :func:`revisit_stream`."""
    from vpr_ros.core.config import config_from_flat
    from vpr_ros.core.detector import LoopClosureDetector
    cfg = config_from_flat({"detector.robot_id": "simulated", "detector.session_id": "crash",
                            "detector.min_loop_gap_sec": 2.0, "verify.min_matches": shape[0] * shape[1] // 2,
                            "map.local_encoding": encoding})
    return LoopClosureDetector(cfg, SimulatedModel())


def _writer(root: Path, shape: tuple[int, int, int]) -> None:
    """The killed process (``python -m vpr_ros.cli.bench.crash_loops ROOT H,W,C``): a fresh interpreter,
    since a forked child of a process whose BLAS / OpenMP threads ran can hang in them."""
    from vpr_ros.core.matching import mnn_batched
    mnn_batched.warm()
    det = loop_detector(shape)
    print("R", flush=True)  # ready: the kill delay starts now
    det.attach_store(root)
    loops = 0
    while True:
        (stamp, g, local), = revisit_stream(1, shape, start=det.num_keyframes)
        loops += len(det.process_descriptors(stamp, g, local).loop_closures)
        print(f"A{det.num_keyframes} {loops}", flush=True)


def _run_one(root: Path, shape: tuple[int, int, int], delay: float) -> int | None:
    """Start a writer, SIGKILL it ``delay`` s after it is ready; the last keyframe count it acknowledged."""
    proc = subprocess.Popen([sys.executable, "-m", "vpr_ros.cli.bench.crash_loops", str(root),
                             ",".join(map(str, shape))], stdout=subprocess.PIPE)
    fd = proc.stdout.fileno()
    buf, end = b"", None
    while True:
        left = 60.0 if end is None else end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        if end is None and b"R\n" in buf:
            end = time.monotonic() + delay
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    buf += proc.stdout.read()
    proc.stdout.close()
    acks = [line for line in buf.decode().split("\n") if line.startswith("A")]
    return int(acks[-1][1:].split()[0]) if acks else None


def run_detector_trials(workdir: Path, trials: int, seed: int = 0, shape: tuple[int, int, int] = (8, 8, 32),
                        max_delay_s: float = 0.3, time_budget_s: float = 600.0) -> dict[str, Any]:
    """Kill the detector's write path ``trials`` times; returns counts (``problems`` must be empty)."""
    from vpr_ros.cli.map_verify import verify_map
    root = workdir / "live"
    rng = random.Random(seed)
    acked, problems, done, loops = 0, [], 0, 0
    t0 = time.monotonic()
    for trial in range(trials):
        if time.monotonic() - t0 > time_budget_s:
            break
        got = _run_one(root, shape, rng.uniform(0.0, max_delay_s))
        acked = got if got is not None else acked
        done += 1
        if not (root / "live.json").exists():
            continue  # killed while creating the map: nothing was acknowledged
        verdict = verify_map(root)
        if not verdict.ok:
            problems.append(f"trial {trial}: {verdict.message}")
            break
        n = len(verdict.data.keyframes)
        loops = len(verdict.data.loops)
        if n < acked:
            problems.append(f"trial {trial}: the map holds {n} keyframes, {acked} were acknowledged")
        acked = n
    return {"trials": done, "keyframes": acked, "loops": loops, "problems": problems,
            "seconds": round(time.monotonic() - t0, 1)}


def run_replay_trials(workdir: Path, trials: int, seed: int = 0, frames: int = 20,
                      time_budget_s: float = 1800.0) -> dict[str, Any]:
    """Kill ``vpr-ros replay --map-save`` around its final save ``trials`` times; MAP must always verify."""
    from vpr_ros.cli.demo import IMAGE_TOPIC, build_demo_bags
    from vpr_ros.cli.map_verify import verify_map
    bags = build_demo_bags(workdir / "bags", count=frames)
    target = workdir / "map"
    argv = [sys.executable, "-m", "vpr_ros.cli.main", "replay", str(bags.session1), "--image-topic", IMAGE_TOPIC,
            "--map-save", str(target), "--no-progress", "--out"]
    t_full = time.monotonic()
    first = subprocess.run(argv + [str(workdir / "out0")], capture_output=True, text=True)
    full = time.monotonic() - t_full
    if first.returncode != 0 or not verify_map(target).ok:
        return {"trials": 0, "problems": [f"the first replay failed: {first.stderr[-2000:]}"]}
    from vpr_ros.core.map import atomic_dir
    from vpr_ros.core.map.atomic_dir import leftovers
    from vpr_ros.core.map.snapshot import classify_dir
    rng = random.Random(seed)
    problems, done, recovered, t0 = [], 0, 0, time.monotonic()
    for trial in range(trials):
        if time.monotonic() - t0 > time_budget_s:
            break
        proc = subprocess.Popen(argv + [str(workdir / f"out{trial + 1}")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.6, 1.1) * full)  # around the end: the save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done += 1
        if leftovers(target.absolute()):  # killed mid-swap: the read-only verify asks for one load first,
            recovered += 1                # which recovers the map as --map-load does
            atomic_dir.recover(target.absolute(), classify_dir)
        verdict = verify_map(target)
        if not verdict.ok:
            problems.append(f"trial {trial}: {verdict.message}")
            break
    return {"trials": done, "replay_seconds": round(full, 1), "recovered_by_the_next_load": recovered,
            "problems": problems, "seconds": round(time.monotonic() - t0, 1)}


if __name__ == "__main__":
    _writer(Path(sys.argv[1]), tuple(int(s) for s in sys.argv[2].split(",")))
