"""``vpr-ros bench pipeline --stages``: one frame's cost split into its stages, for 640x480 and
1280x720 camera frames, JPEG and raw: decode, colour conversion, to float, normalise, resize (the
preprocess recipe's own steps, in its order), the model, FAISS search and MNN verification.

The frames are Corridor frames scaled up to the camera size (the content matters only for JPEG
decode time). Each stage is timed on its own, single-threaded pools, median of ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from vpr_ros.cli.bench.stream import machine
from vpr_ros.cli.demo import corridor_frames
from vpr_ros.cli.replay import build_config, load_extractor, parse_overrides
from vpr_ros.core.images import image_from_compressed, image_from_raw
from vpr_ros.core.index import KeyframeIndex
from vpr_ros.core.pipeline import set_compute_threads
from vpr_ros.core.types import Candidate
from vpr_ros.core.matching.verification import Verifier

__all__ = ["run_stages_bench"]

SIZES = ((640, 480), (1280, 720))


def _median_ms(fn: Callable[[], Any], rounds: int) -> float:
    fn()  # warm-up: first-call allocations and lazy initialisation out of the timing
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _camera_rows(model: Any, width: int, height: int, rounds: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from vpr_ros.models.preprocess import RECIPES, target_size

    rgb = cv2.resize(corridor_frames("ref", 1)[0], (width, height), interpolation=cv2.INTER_LINEAR)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].reshape(-1)
    raw = rgb.tobytes()
    spec = model.spec
    rec = RECIPES[spec.preprocess]
    resized, _ = target_size(height, width, tuple(spec.input_size), spec.patch_multiple, model.keep_aspect)
    mean = np.float32(rec.mean)
    std = np.float32(rec.std)
    rows = rgb.astype(np.float32).reshape(height, -1)

    def normalise() -> None:  # what preprocess_images does, in place on its float copy
        np.divide(rows, np.float32(255.0), out=rows)
        np.subtract(rows, np.tile(mean, width), out=rows)
        np.divide(rows, np.tile(std, width), out=rows)

    normalised = torch.from_numpy(rgb.astype(np.float32) / np.float32(255.0)).permute(2, 0, 1)
    batch = model.preprocess([rgb]).numpy()
    rows = {
        "decode jpeg -> RGB (image_from_compressed)": _median_ms(lambda: image_from_compressed("jpeg", jpeg), rounds),
        "  of which cv2.imdecode to BGR": _median_ms(lambda: cv2.imdecode(jpeg, cv2.IMREAD_COLOR), rounds),
        "  of which BGR -> RGB (cvtColor)": _median_ms(lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rounds),
        "decode raw rgb8 (image_from_raw)": _median_ms(
            lambda: image_from_raw("rgb8", height, width, width * 3, raw), rounds),
        "decode raw bgr8 (image_from_raw)": _median_ms(
            lambda: image_from_raw("bgr8", height, width, width * 3, raw), rounds),
        "to float32 (astype)": _median_ms(lambda: rgb.astype(np.float32), rounds),
        "scale + normalise in place (numpy)": _median_ms(normalise, rounds),
        f"resize to {resized[1]}x{resized[0]} ({rec.interpolation})": _median_ms(
            lambda: F.interpolate(normalised[None], size=resized, mode=rec.interpolation, align_corners=False,
                                  antialias=rec.antialias), rounds),
        "preprocess total (model.preprocess)": _median_ms(lambda: model.preprocess([rgb]), rounds),
        "model (runner only)": _median_ms(lambda: model.runner.run(batch), rounds),
        "extract total (model.extract)": _median_ms(lambda: model.extract([rgb]), rounds),
    }
    return rows


def _map_rows(config: Any, model: Any, keyframes: int, rounds: int) -> dict[str, float]:
    desc = model.extract(corridor_frames("ref", 8))
    rng = np.random.default_rng(0)
    index = KeyframeIndex(model.global_dim, config.index)
    g = rng.standard_normal((keyframes, model.global_dim)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    index.add(np.arange(keyframes), g)
    query = desc.global_[0]
    rows = {f"search top-{config.index.top_k} of {keyframes} keyframes (FAISS)": _median_ms(
        lambda: index.search(query, config.index.top_k, set()), rounds)}
    if desc.local is not None:
        verifier = Verifier(config.verify)
        k = config.index.top_k
        cands = [Candidate(i, 0.5, i) for i in range(k)]
        maps = [desc.local[1 + i % 7] for i in range(k)]
        h, w, c = desc.local.shape[1:]
        rows[f"verify {k} candidates (MNN, {h}x{w}x{c})"] = _median_ms(
            lambda: verifier.verify_many(desc.local[0], cands, maps), rounds)
    return rows


def run_stages_bench(args: argparse.Namespace) -> int:
    config = build_config(args.config, parse_overrides(args.set))
    import torch

    torch.set_num_threads(config.model.threads)  # as replay_bag sets it (preprocessing's resize)
    threads = {"torch": config.model.threads, **set_compute_threads()}
    model = load_extractor(config)
    out: dict[str, Any] = {"machine": machine(), "threads": {"model": config.model.threads, **threads},
                           "model": model.model_id, "backend": config.model.backend, "rounds": args.rounds}
    print(f"per-stage cost of one frame, model {model.model_id} ({config.model.backend}, "
          f"{config.model.threads} thread(s)), pools {threads}, {out['machine']['cpu']}; median of "
          f"{args.rounds} rounds, ms")
    for width, height in SIZES:
        rows = _camera_rows(model, width, height, args.rounds)
        out[f"{width}x{height}"] = rows
        print(f"\n{width}x{height}")
        for name, ms in rows.items():
            print(f"  {name:<52}{ms:>9.2f}")
    rows = _map_rows(config, model, 10_000, args.rounds)
    out["map"] = rows
    print("\nmap (any camera size)")
    for name, ms in rows.items():
        print(f"  {name:<52}{ms:>9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
