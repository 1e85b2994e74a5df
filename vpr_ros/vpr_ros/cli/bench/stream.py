"""``vpr-ros bench pipeline --stream-frames N``: end-to-end replay throughput and memory on a long bag.

The bag is the Corridor (reference then query traversal, 222 frames) repeated to N frames with
stamps increasing at 10 Hz, written once to a temporary folder (JPEG CompressedImage by default, as
cameras record). The replay is ``replay_bag``, the code ``vpr-ros replay`` runs, with the pipeline
on or off. RSS (``VmRSS``) is sampled at every tenth of the stream and reported beside what the map
itself stores (global + local descriptors of its keyframes): RSS minus the map's bytes is what the
replay holds besides the map, and should stay flat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vpr_ros.cli.bench.machine import machine_base
from vpr_ros.cli.demo import corridor_frames
from vpr_ros.cli.replay import build_config, load_extractor, parse_overrides
from vpr_ros.cli.session import replay_bag
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.pipeline import set_compute_threads
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_image_bag

__all__ = ["long_corridor_bag", "rss_mb", "run_stream_bench"]

TOPIC = "/camera/image"
PERIOD_NS = 100_000_000  # 10 Hz


def long_corridor_bag(path: Path, frames: int, encoding: str = "jpeg") -> Path:
    """Write the Corridor traversals repeated to ``frames`` frames (stamps +100 ms each) to ``path``."""
    images = corridor_frames("ref") + corridor_frames("query")

    def stream() -> Iterator[Frame]:
        for i in range(frames):
            yield Frame(1_000_000_000 + i * PERIOD_NS, images[i % len(images)])

    return write_image_bag(path, stream(), TOPIC, encoding=encoding)


def rss_mb() -> float:
    """Resident set size of this process now (``VmRSS``), MB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _map_mb(detector: LoopClosureDetector) -> float:
    total = 0
    for kf in detector.keyframes:
        total += kf.global_.nbytes + (0 if kf.local is None else kf.local.nbytes)
    return total / 1e6


def machine() -> dict[str, Any]:
    """CPU, cores and the versions of the libraries the replay runs on."""
    import cv2
    import faiss
    import onnxruntime
    import torch

    return {**machine_base(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "faiss": faiss.__version__,
            "opencv": cv2.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}


def run_stream_bench(args: argparse.Namespace) -> int:
    config = build_config(args.config, parse_overrides(args.set))
    import torch

    torch.set_num_threads(config.model.threads)  # as replay_bag sets it (preprocessing's resize)
    threads = {"torch": config.model.threads, **set_compute_threads()}
    model = load_extractor(config)
    model.extract(corridor_frames("ref", 1))  # first-run costs (ONNX session, allocations) out of the timing
    detector = LoopClosureDetector(config, model)
    samples: list[dict[str, float]] = []
    every = max(1, args.stream_frames // 10)
    t0 = [0.0]

    def sample(frames: int) -> None:
        if frames % every == 0 or frames == args.stream_frames:
            rss, map_mb = rss_mb(), _map_mb(detector)
            samples.append({"frames": frames, "keyframes": detector.num_keyframes,
                            "seconds": time.perf_counter() - t0[0], "rss_mb": rss, "map_mb": map_mb,
                            "rss_minus_map_mb": rss - map_mb})

    with tempfile.TemporaryDirectory(prefix="vpr_ros_stream_") as tmp:
        t_write = time.perf_counter()
        bag = long_corridor_bag(Path(tmp) / "long", args.stream_frames, args.encoding)
        write_s = time.perf_counter() - t_write
        rss_start = rss_mb()
        t0[0] = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        result = replay_bag(detector, bag, TOPIC, pipeline=args.pipeline, on_frame=sample)
        wall = time.perf_counter() - t0[0]
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    keyframes = len(result.outcomes)
    out = {"machine": machine(), "threads": {"model": config.model.threads, **threads},
           "model": model.model_id, "backend": config.model.backend, "encoding": args.encoding,
           "pipeline": args.pipeline, "frames": result.num_frames, "keyframes": keyframes,
           "loop_closures": len(result.loop_closures), "wall_s": wall, "cpu_s": cpu_s,
           "frames_per_s": result.num_frames / wall, "keyframes_per_s": keyframes / wall,
           "stage_mean_ms": {k: float(np.mean(v)) for k, v in result.timings_ms.items()},
           "rss_start_mb": rss_start, "max_rss_mb": cpu1.ru_maxrss / 1024.0, "samples": samples,
           "bag_write_s": write_s}
    print(f"replay of a {result.num_frames}-frame Corridor bag ({args.encoding}), model {model.model_id} "
          f"({config.model.backend}, {config.model.threads} thread(s)), pipeline "
          f"{'on' if args.pipeline else 'off'}, threads {threads}, {out['machine']['cpu']}, "
          f"{out['machine']['cores']} cores")
    print(f"{keyframes} keyframes, {len(result.loop_closures)} loop closures in {wall:.1f} s: "
          f"{out['frames_per_s']:.1f} frames/s, {out['keyframes_per_s']:.1f} keyframes/s "
          f"(CPU {cpu_s:.1f} s = {cpu_s / wall:.2f} cores busy)")
    print("mean ms per frame: " + ", ".join(f"{k} {v:.2f}" for k, v in out["stage_mean_ms"].items()))
    print(f"{'frames':>8}{'keyframes':>11}{'RSS MB':>10}{'map MB':>10}{'RSS-map MB':>12}")
    print(f"{0:>8}{0:>11}{rss_start:>10.1f}{0.0:>10.1f}{rss_start:>12.1f}")
    for s in samples:
        print(f"{s['frames']:>8}{s['keyframes']:>11}{s['rss_mb']:>10.1f}{s['map_mb']:>10.1f}"
              f"{s['rss_minus_map_mb']:>12.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
