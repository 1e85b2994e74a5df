"""What this CPU can do at best: GEMM rates per precision, and the model time they bound.

A ViT forward is almost all matrix products (PERF_BASELINE §3: `addmm` is 84 % of a bf16 ViT-L
forward). Timing one product of the ViT-L MLP's shape in each engine, fp32 (PyTorch/MKL, what eager
runs), bf16 (PyTorch/oneDNN) and int8 (ONNX Runtime's MatMulInteger, what dynamic int8 runs), and
dividing the model's FLOPs by those rates gives the fastest each precision could possibly be here.
``vpr-ros bench models`` prints it next to the measured variants, so a speed target can be checked
against the machine it runs on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["gemm_rates", "model_flops", "ceiling_rows"]

#: (tokens of one 224x224 image, ViT-L width, ViT-L MLP width).
GEMM_SHAPE = (257, 1024, 4096)


def _rate(fn: Callable[[], object], flops: float, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    # The best run: this is a bound, and on a shared VM only the fastest run is free of steal time.
    return flops / min(times) / 1e9


def _int8_matmul(m: int, k: int, n: int, threads: int) -> Callable[[], object]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])], [weight])
    # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 unless told.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    return lambda: sess.run(None, {"a": a})


def gemm_rates(threads: int, reps: int = 9) -> dict[str, float]:
    """Best GFLOP/s of one (257 x 1024) @ (1024 x 4096) product per precision (2 FLOPs per MAC)."""
    torch.set_num_threads(threads)
    m, k, n = GEMM_SHAPE
    flops = 2.0 * m * k * n
    a, b = torch.randn(m, k), torch.randn(k, n)
    a16, b16 = a.bfloat16(), b.bfloat16()
    with torch.inference_mode():
        return {
            "fp32 (PyTorch, MKL)": _rate(lambda: torch.mm(a, b), flops, reps),
            "bf16 (PyTorch, oneDNN)": _rate(lambda: torch.mm(a16, b16), flops, reps),
            "int8 (ONNX Runtime MatMulInteger)": _rate(_int8_matmul(m, k, n, threads), flops, reps),
        }


def model_flops(module: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward (matrix products, convolutions, attention), per image."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(x)
    return counter.get_total_flops() / x.shape[0]


def ceiling_rows(rates: dict[str, float], flops: float, eager_ms: float) -> list[str]:
    """Markdown rows: precision | GEMM GFLOP/s | ms/img at that rate | best-case speed-up vs eager."""
    rows = []
    for name, rate in rates.items():
        ms = flops / (rate * 1e9) * 1e3
        rows.append(f"| {name} | {rate:.0f} | {ms:.0f} | {eager_ms / ms:.2f} |")
    return rows
