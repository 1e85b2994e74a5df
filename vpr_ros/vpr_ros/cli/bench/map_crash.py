"""``vpr-ros bench crash``: SIGKILL a live-map writer at random moments and reopen the map after each kill.

Each trial forks a writer that continues the live map (core/map/live_map.py), appends deterministic
simulated keyframes (key k is rebuilt from seed k, so every byte read back can be checked) and, now and
then, writes a snapshot of it to a second path; after each append or snapshot returns it tells the
parent over a pipe. The parent kills it with SIGKILL after a random delay, then checks:

* the map opens (a failure to open is counted, never expected);
* it holds every acknowledged keyframe and at most one more (the one being written);
* every keyframe reads back exactly as written (no half-written record returned);
* once a snapshot was acknowledged, the snapshot path always opens (old or new copy, never neither).

The CI test (test/cli/bench/test_map_crash_harness.py) runs ~20 small trials; this benchmark >= 100.
``--loops`` and ``--replay`` kill the node's write path and ``vpr-ros replay --map-save`` instead
(cli/bench/crash_loops.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "run_crash_bench", "run_trials", "simulated_keyframe"]

DIM = 64
FP = {"model_id": "simulated@crash", "weights_digest": "crash", "preprocessing": None}


def simulated_keyframe(key: int, shape: tuple[int, int, int]) -> Any:
    """The simulated keyframe with map key ``key`` (same bytes every time it is rebuilt)."""
    from vpr_ros.core.types import Keyframe
    rng = np.random.default_rng(key)
    g = rng.standard_normal(DIM).astype(np.float32)
    local = rng.standard_normal(shape).astype(np.float32)
    return Keyframe(id=key, stamp_ns=key * 10**9, robot_id="simulated", session_id="crash",
                    global_=g / np.linalg.norm(g), local=local, pose=np.eye(4))


def _writer(root: Path, copy: Path, shape: tuple[int, int, int], encoding: str, snapshot_every: int,
            w: int) -> None:
    from vpr_ros.core.map import live_map_dirs
    log = live_map_dirs.open_for_append(root, FP, DIM, encoding)
    while True:
        key = len(log)
        log.append(simulated_keyframe(key, shape))
        os.write(w, f"A{key + 1}\n".encode())
        if snapshot_every and (key + 1) % snapshot_every == 0:
            live_map_dirs.snapshot(log, copy)
            os.write(w, f"S{key + 1}\n".encode())


def _check(path: Path, acked: int | None, shape: tuple[int, int, int], encoding: str,
           checked: dict[str, int]) -> tuple[int, str | None]:
    """Open ``path``; (count, problem or None). Keys below ``checked[path]`` were verified before."""
    from vpr_ros.core.map import atomic_dir, live_map
    from vpr_ros.core.map.local_segments import decode, encode
    from vpr_ros.core.map.snapshot import classify_dir
    try:
        atomic_dir.recover(path.absolute(), classify_dir)
        log = live_map.MapLog(path, FP)
    except Exception as exc:  # noqa: BLE001 - any failure to open is what this harness counts
        return -1, f"{path.name} does not open: {type(exc).__name__}: {exc}"
    try:
        n = len(log)
        if acked is not None and not acked <= n <= acked + 1:
            return n, f"{path.name} holds {n} keyframes, {acked} were acknowledged"
        for key in range(max(0, checked.get(str(path), 0) - 1), n):
            want = simulated_keyframe(key, shape)
            got = log.keyframes[key]
            local = log.read_local(key)
            if (got.id != key or not np.array_equal(got.global_, want.global_)
                    or not np.array_equal(local, decode(encode(want.local, encoding), shape, encoding))):
                return n, f"{path.name} keyframe {key} reads back different from what was written"
        checked[str(path)] = n
        return n, None
    except Exception as exc:  # noqa: BLE001
        return -1, f"{path.name} keyframe read failed: {type(exc).__name__}: {exc}"
    finally:
        log.close()


def run_trials(workdir: Path, trials: int, seed: int = 0, shape: tuple[int, int, int] = (16, 16, 64),
               encoding: str = "float16", max_delay_s: float = 0.05, snapshot_every: int = 7,
               time_budget_s: float = 600.0) -> dict[str, Any]:
    """Run the kill/reopen trials under ``workdir``; returns counts (``problems`` must be empty)."""
    # Imported once here (FAISS and OpenCV take ~1 s), so each forked writer starts at once.
    from vpr_ros.core.map import live_map, live_map_dirs, snapshot  # noqa: F401
    root, copy = workdir / "live", workdir / "snapshot"
    rng = random.Random(seed)
    acked, snap_acked, problems, in_flight_kept, checked, snapshots = 0, 0, [], 0, {}, 0
    t0 = time.monotonic()
    done = 0
    for trial in range(trials):
        if time.monotonic() - t0 > time_budget_s:
            break
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into the caller (pytest, the CLI)
            try:
                os.close(r)
                _writer(root, copy, shape, encoding, snapshot_every, w)
            finally:
                os._exit(1)
        os.close(w)
        deadline = time.monotonic() + rng.uniform(0.0, max_delay_s) + (0.3 if trial == 0 else 0.0)
        buf = b""
        trial_acked = None
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r, 4096)
                if not chunk:
                    break
                buf += chunk
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        buf += b"".join(iter(lambda: os.read(r, 4096), b""))
        os.close(r)
        for line in buf.decode().split():
            if line[0] == "A":
                trial_acked = int(line[1:])
            else:
                snap_acked, snapshots = max(snap_acked, int(line[1:])), snapshots + 1
        acked = trial_acked if trial_acked is not None else acked
        if not acked and not live_map.is_live_map(root):
            n, problem = 0, None  # killed while creating the map: nothing was acknowledged, nothing to open
        else:
            n, problem = _check(root, acked, shape, encoding, checked)
        in_flight_kept += problem is None and n == acked + 1  # killed after the commit, before the ack
        if problem:
            problems.append(f"trial {trial}: {problem}")
        if snap_acked:
            n_copy, problem = _check(copy, None, shape, encoding, checked)
            if problem is None and n_copy < snap_acked:
                problem = f"snapshot holds {n_copy} keyframes, one of {snap_acked} was acknowledged"
            if problem:
                problems.append(f"trial {trial}: {problem}")
        acked = max(acked, n)  # the next writer continues from what is on disk
        done += 1
    return {"trials": done, "keyframes": acked, "in_flight_keyframe_kept": in_flight_kept,
            "snapshots_acknowledged": snapshots, "last_snapshot_keyframes": snap_acked, "problems": problems,
            "seconds": round(time.monotonic() - t0, 1)}


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MB."""
    import resource
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


class _SimulatedModel:
    model_id = "simulated@memory"
    global_dim = 1024


def run_memory(workdir: Path, n: int, shape: tuple[int, int, int], encoding: str, queries: int = 5) -> dict[str, Any]:
    """Build an n-keyframe live map of simulated SelaVPR-sized descriptors, then open it in a detector
    and run ``queries`` keyframes through search + MNN verification; RSS, times and disk per keyframe."""
    from vpr_ros.core.map import live_map, live_map_dirs
    from vpr_ros.core.config import config_from_flat
    from vpr_ros.core.detector import LoopClosureDetector
    rng = np.random.default_rng(0)
    pool = [rng.standard_normal(shape).astype(np.float32) for _ in range(8)]
    fp = live_map.fingerprint(_SimulatedModel())
    root = workdir / "memory_map"
    log = live_map_dirs.open_for_append(root, fp, _SimulatedModel.global_dim, encoding)
    from vpr_ros.core.types import Keyframe
    t0 = time.perf_counter()
    for k in range(n):
        g = rng.standard_normal(_SimulatedModel.global_dim).astype(np.float32)
        log.append(Keyframe(k, k * 10**9, "simulated", "memory", g / np.linalg.norm(g), pool[k % 8], np.eye(4)))
    append_ms = (time.perf_counter() - t0) / max(n, 1) * 1e3
    log.close()
    disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a fresh detector in a child, so the peak RSS is the detector's, not the builder's
        try:
            os.close(r)
            before = _rss_mb()[0]
            det = LoopClosureDetector(config_from_flat({"detector.robot_id": "query", "map.local_encoding": encoding}),
                                      _SimulatedModel())
            t1 = time.perf_counter()
            det.load_map(root)
            open_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            for q in range(queries):
                g = rng.standard_normal(_SimulatedModel.global_dim).astype(np.float32)
                det.process_descriptors((q + 1) * 10**10, g, pool[q % 8])
            query_ms = (time.perf_counter() - t2) / queries * 1e3
            keys = rng.integers(0, n, 200)
            t3 = time.perf_counter()
            for k in keys:
                det.local_features(int(k))
            read_ms = (time.perf_counter() - t3) / len(keys) * 1e3
            os.write(w, json.dumps({"rss_before_mb": round(before), "rss_after_mb": round(_rss_mb()[0]),
                                    "rss_peak_mb": round(_rss_mb()[1]), "open_s": round(open_s, 2),
                                    "query_ms": round(query_ms, 1), "read_local_ms": round(read_ms, 2)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    child = json.loads(b"".join(iter(lambda: os.read(r, 65536), b"")) or b"{}")
    os.waitpid(pid, 0)
    return {"simulated_keyframes": n, "local_shape": list(shape), "encoding": encoding,
            "append_ms": round(append_ms, 2), "disk_mb_per_keyframe": round(disk / n / 1e6, 3), **child}


def run_corridor_decisions(workdir: Path, preset: str) -> dict[str, Any]:
    """Two-session Corridor (ref = map, query = loops against it) with the real model ``preset``: every
    verification decision with the map in RAM (float32) against a live map in each encoding."""
    from vpr_ros.cli.demo import corridor_frames
    from vpr_ros.cli.replay import load_extractor
    from vpr_ros.core.config import config_from_flat
    from vpr_ros.core.detector import LoopClosureDetector
    base = config_from_flat({"model.preset": preset})
    model = load_extractor(base)
    sessions = []
    for split, offset in (("ref", 0), ("query", 10**12)):
        frames = corridor_frames(split)
        desc = [model.extract([im]) for im in frames]
        sessions.append([(offset + i * 5 * 10**8, d.global_[0], None if d.local is None else d.local[0])
                         for i, d in enumerate(desc)])

    def decisions(encoding: str | None) -> tuple[list[tuple[int, int, int, bool]], int, float]:
        def cfg(session: str) -> Any:
            return config_from_flat({"detector.session_id": session, "map.local_encoding": encoding or "float32"},
                                    base=base)
        first = LoopClosureDetector(cfg("s1"), model)
        if encoding:
            first.attach_store(workdir / f"corridor_{encoding}")
        for stamp, g, local in sessions[0]:
            first.process_descriptors(stamp, g, local)
        disk = 0.0
        second = LoopClosureDetector(cfg("s2"), model)
        if encoding:
            first.detach_store()
            root = workdir / f"corridor_{encoding}"
            disk = sum(f.stat().st_size for f in (root / "local").iterdir()) / max(first.num_keyframes, 1) / 1e6
            second.load_map(root)
        else:
            second.load_map(_save_plain(first, workdir / "corridor_plain"))
        out, loops = [], 0
        for q, (stamp, g, local) in enumerate(sessions[1]):
            step = second.process_descriptors(stamp, g, local)
            out += [(q, v.candidate.keyframe_id, v.local_matches, v.accepted) for v in step.verifications]
            loops += len(step.loop_closures)
        return sorted(out), loops, disk

    ref, ref_loops, _ = decisions(None)
    result: dict[str, Any] = {"preset": preset, "model_id": model.model_id, "verifications": len(ref),
                              "loops_in_ram": ref_loops}
    for encoding in ("float32", "float16", "int8"):
        got, loops, disk = decisions(encoding)
        result[encoding] = {
            "accept_decisions_changed": sum(a[3] != b[3] for a, b in zip(ref, got)) + abs(len(ref) - len(got)),
            "mnn_counts_changed": sum(a[2] != b[2] for a, b in zip(ref, got)),
            "max_mnn_count_change": max((abs(a[2] - b[2]) for a, b in zip(ref, got)), default=0),
            "loops": loops, "local_mb_per_keyframe": round(disk, 4)}
    return result


def _save_plain(detector: Any, path: Path) -> Path:
    detector.save_map(path)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=100, help="kill/reopen trials (default 100)")
    parser.add_argument("--shape", default="61,61,128", help="local feature grid h,w,c (default SelaVPR's)")
    parser.add_argument("--encoding", default="float16", choices=("float32", "float16", "int8"))
    parser.add_argument("--max-delay", type=float, default=0.2, help="longest time before a kill, seconds")
    parser.add_argument("--workdir", default="", help="directory for the maps (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshot-every", type=int, default=25,
                        help="the writer snapshots the map after every N appends (a whole copy; 0: never)")
    parser.add_argument("--corridor", default="", metavar="PRESET",
                        help="instead: loop decisions on the Corridor with the real model PRESET, map in RAM vs "
                             "a live map in each encoding (e.g. lite0-gem)")
    parser.add_argument("--loops", action="store_true",
                        help="instead: SIGKILL the node's write path (detector + live map, SIMULATED revisits with "
                             "loop closures); the map must pass map verify after every kill")
    parser.add_argument("--replay", action="store_true",
                        help="instead: SIGKILL vpr-ros replay --map-save around its save; the map must pass map "
                             "verify after every kill")
    parser.add_argument("--memory-keyframes", type=int, default=0,
                        help="instead: build a live map of this many simulated keyframes and report RSS of a "
                             "detector searching it (e.g. 10000; needs ~5 GB of disk at int8)")


def run_crash_bench(args: argparse.Namespace) -> int:
    import tempfile
    shape = tuple(int(s) for s in args.shape.split(","))
    with tempfile.TemporaryDirectory(dir=args.workdir or None) as tmp:
        if args.corridor:
            print(json.dumps(run_corridor_decisions(Path(tmp), args.corridor), indent=1))
            return 0
        if args.loops or args.replay:
            from vpr_ros.cli.bench.crash_loops import run_detector_trials, run_replay_trials
            out = (run_detector_trials(Path(tmp), args.trials, args.seed) if args.loops
                   else run_replay_trials(Path(tmp), args.trials, args.seed))
            print(json.dumps(out, indent=1))
            return 0 if not out["problems"] else 1
        if args.memory_keyframes:
            print(json.dumps(run_memory(Path(tmp), args.memory_keyframes, shape, args.encoding), indent=1))
            return 0
        out = run_trials(Path(tmp), args.trials, args.seed, shape, args.encoding, args.max_delay,
                         args.snapshot_every, time_budget_s=1800.0)
    print(json.dumps(out, indent=1))
    return 0 if not out["problems"] else 1
