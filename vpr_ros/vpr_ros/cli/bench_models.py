"""``vpr-ros bench models``: SelaVPR CPU paths side by side with the eager fp32 forward.

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
Outputs = tuple[np.ndarray, np.ndarray]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="selavpr", choices=("selavpr", "selavpr-reg4", "cricavpr"))
    parser.add_argument("--weights", default=None, help="official checkpoint (default: random init)")
    parser.add_argument("--variants", default="eager,bf16,ort",
                        help=f"comma-separated subset of {','.join(VARIANTS)} (eager is always run)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every variant")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="tiny random model (smoke test of the bench)")


def _build(args: argparse.Namespace) -> torch.nn.Module:
    from vpr_ros.models import cricavpr, selavpr

    small = dict(depth=2, embed_dim=64, num_heads=2)
    if args.preset == "cricavpr":
        model = cricavpr.build_cricavpr(**(dict(small, adapter_hidden=32, encoder_heads=4) if args.small else {}))
        loader = cricavpr.load_weights
    else:
        build = selavpr.build_selavpr_reg4 if args.preset == "selavpr-reg4" else selavpr.build_selavpr
        model = build(**(dict(small, local_hidden=16) if args.small else {}))
        loader = selavpr.load_weights
    if args.weights:
        loader(model, args.weights)
    return model.eval()


def _mixed_bf16(model: torch.nn.Module, autocast: bool) -> Callable[[torch.Tensor], Outputs]:
    """Backbone in bf16 (weights cast, or autocast), heads in fp32: the transposed convs and the GeM
    power are slower and less accurate in bf16 (PERF_BASELINE §3.5)."""
    backbone = model.backbone if autocast else copy.deepcopy(model.backbone).to(torch.bfloat16)

    def run(x: torch.Tensor) -> Outputs:
        with torch.inference_mode():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                _, patches, hw = backbone.forward_tokens(x if autocast else x.to(torch.bfloat16))
            g, loc = model.heads(patches.float(), hw)
        return g.numpy(), loc.numpy()

    return run


def _ort(model: torch.nn.Module, x: torch.Tensor, threads: int, int8: bool,
         tmp: Path) -> Callable[[torch.Tensor], Outputs]:
    import onnxruntime as ort

    from vpr_ros.models.backends.tensorrt_backend import export_onnx

    path = export_onnx(model, tmp / "model.onnx", tuple(x.shape[-2:]))
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(path), str(tmp / "model.int8.onnx"), weight_type=QuantType.QInt8)
        path = tmp / "model.int8.onnx"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda inp: tuple(session.run(None, {"image": inp.numpy()})[:2])  # type: ignore[return-value]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def run_models_bench(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(wanted) - set(VARIANTS))
    if args.preset == "cricavpr" and any(v.startswith("bf16") for v in wanted):
        print("bf16 variants are implemented for the SelaVPR presets only")
        return 2
    if unknown:
        print(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
        return 2
    print(f"building {args.preset} ({'small' if args.small else 'full size'}), threads={args.threads}")
    model = _build(args)
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def eager(inp: torch.Tensor) -> Outputs:
        with torch.no_grad():
            g, loc = model(inp)
        return g.numpy(), loc.numpy()

    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, Callable[[torch.Tensor], Outputs]] = {"eager": eager}
        for name in wanted:
            t0 = time.perf_counter()
            if name in ("bf16", "bf16_autocast"):
                runs[name] = _mixed_bf16(model, autocast=name == "bf16_autocast")
            elif name in ("ort", "ort_int8"):
                sub = Path(tmp) / name
                sub.mkdir()
                runs[name] = _ort(model, x, args.threads, name == "ort_int8", sub)
            print(f"  prepared {name} in {time.perf_counter() - t0:.1f} s")
        times: dict[str, list[float]] = {k: [] for k in runs}
        outputs: dict[str, Outputs] = {}
        for rnd in range(args.rounds + 1):
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
        print(f"| {name} | {1e3 * statistics.median(times[name]):.0f} | {1e3 * min(times[name]):.0f} | "
              f"{statistics.median(ratios):.2f} | {_cos(g, ref_g).min():.6f} | {_cos(loc, ref_l).mean():.6f} |")
    return 0
