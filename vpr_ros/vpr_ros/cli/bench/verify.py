"""``vpr-ros bench verify``: MNN re-ranking of K candidates, side by side in one run.

Variants, all on the same simulated maps (smooth, like SelaVPR's upsampled local features; half of
the candidates are noisy copies of the query): the official SelaVPR style (torch fp32 matmul, argmax
both ways), our plain numpy ``mnn_pairs`` and ``mnn_batched`` with each screen precision; next to
them the GEMM floor of each precision (one plain GEMM of the same shape per candidate, nothing
else). Variants run interleaved (round-robin) so load hits them alike; the table gives the median
and the fastest round per candidate. Counts must be identical for every variant.

Threads are pinned before numpy/torch start their pools: the command re-executes itself once with
OMP_WAIT_POLICY=PASSIVE and OPENBLAS_NUM_THREADS/OMP_NUM_THREADS/MKL_NUM_THREADS = --threads, and
calls torch.set_num_threads(--threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vpr_ros.cli.bench.machine import cpu_model

__all__ = ["add_arguments", "run_verify_bench", "simulated_local_maps"]

_PINNED = "VPR_ROS_BENCH_VERIFY_PINNED"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, default=20, help="candidates per query")
    parser.add_argument("--shape", default="61,61,128", help="h,w,c of a local map (SelaVPR)")
    parser.add_argument("--lite-shape", default="20,20,112", help="h,w,c of the second, small case (lite0-gem)")
    parser.add_argument("--threads", type=int, default=1, help="threads of every library")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after a warm-up on two candidates)")
    parser.add_argument("--precisions", default="fp32,bf16", help="screens of mnn_batched to run")
    parser.add_argument("--skip-slow", action="store_true", help="leave out official and numpy (quick runs)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the results here")


def simulated_local_maps(h: int, w: int, c: int, k: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A smooth query map (bilinear upsampling of a random 16x16 field, as SelaVPR's local adapter
    upsamples its patch grid) and K candidates: even ones noisy copies (a revisit), odd ones new."""
    import torch

    rng = np.random.default_rng(seed)

    def field() -> np.ndarray:
        z = torch.from_numpy(rng.standard_normal((1, c, min(16, h), min(16, w))).astype(np.float32))
        up = torch.nn.functional.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)
        return up[0].permute(1, 2, 0).numpy() + 0.05 * rng.standard_normal((h, w, c)).astype(np.float32)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=2, keepdims=True)).astype(np.float32)

    q = unit(field())
    cands = [unit(q + 0.3 * rng.standard_normal(q.shape).astype(np.float32)) if i % 2 == 0 else unit(field())
             for i in range(k)]
    return q, cands


def _official(q: np.ndarray, cands: list[np.ndarray]) -> list[int]:
    """SelaVPR ``local_matching`` style, one candidate at a time (the batch of 20 needs 1.1 GB)."""
    import torch

    fm1 = torch.from_numpy(q.reshape(-1, q.shape[2]))
    counts = []
    with torch.inference_mode():
        for cand in cands:
            fm2 = torch.from_numpy(cand.reshape(-1, cand.shape[2]))
            m = torch.matmul(fm2, fm1.T)  # (l1, l0)
            max1 = torch.argmax(m, dim=0)  # per query location, its best candidate location
            max2 = torch.argmax(m, dim=1)  # per candidate location, its best query location
            counts.append(int((max2[max1] == torch.arange(m.shape[1])).sum()))
    return counts


def _variants(args: argparse.Namespace, q: np.ndarray, cands: list[np.ndarray]) -> dict[str, Callable[[], Any]]:
    import torch

    from vpr_ros.core.matching.mnn_batched import mnn_pairs_many
    from vpr_ros.core.matching.verification import mnn_pairs
    from vpr_ros.models.backends.mnn_screen import screen

    f0 = q.reshape(-1, q.shape[2])
    fs = [x.reshape(-1, x.shape[2]) for x in cands]
    t0, ts = torch.from_numpy(f0), [torch.from_numpy(f) for f in fs]
    b0, bs = t0.bfloat16(), [t.bfloat16() for t in ts]
    runs: dict[str, Callable[[], Any]] = {}
    if not args.skip_slow:
        runs["official torch fp32"] = lambda: _official(q, cands)
        runs["numpy mnn_pairs"] = lambda: [len(mnn_pairs(q, x)[0]) for x in cands]
    for p in args.precisions.split(","):
        runs[f"mnn_batched {p}"] = lambda g=screen(p): [len(i0) for i0, _ in mnn_pairs_many(q, cands, g)]
    # Floors: the plain GEMM of each candidate into one preallocated output (no page faults).
    out32, out_t, out_b = (np.empty((len(f0), len(fs[0])), np.float32), torch.empty(len(f0), len(fs[0])),
                           torch.empty(len(f0), len(fs[0]), dtype=torch.bfloat16))
    runs["floor: numpy fp32 GEMM"] = lambda: [np.matmul(f0, f.T, out=out32) for f in fs]
    runs["floor: torch fp32 GEMM"] = lambda: [torch.mm(t0, t.T, out=out_t) for t in ts]
    runs["floor: torch bf16 GEMM"] = lambda: [torch.mm(b0, b.T, out=out_b) for b in bs]
    return runs


def _floor_of(name: str) -> str | None:
    return {"mnn_batched fp32": "floor: numpy fp32 GEMM", "mnn_batched fp32-torch": "floor: torch fp32 GEMM",
            "mnn_batched bf16": "floor: torch bf16 GEMM"}.get(name)


def _case(args: argparse.Namespace, shape: str) -> dict[str, Any]:
    h, w, c = (int(v) for v in shape.split(","))
    q, cands = simulated_local_maps(h, w, c, args.k)
    for fn in _variants(args, q, cands[:2]).values():  # warm-up on two candidates: pools, caches
        fn()
    runs = _variants(args, q, cands)
    times: dict[str, list[float]] = {name: [] for name in runs}
    counts: dict[str, list[int]] = {}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            out = fn()
            times[name].append((time.perf_counter() - start) * 1e3 / args.k)
            if not name.startswith("floor"):
                counts[name] = out
    ref = counts.get("official torch fp32", counts.get("numpy mnn_pairs"))
    rows = {}
    for name, t in times.items():
        rows[name] = {"ms_median": statistics.median(t), "ms_min": min(t),
                      "counts_identical": None if name not in counts or ref is None else counts[name] == ref}
    for name, row in rows.items():
        if "official torch fp32" in rows and not name.startswith("floor"):
            row["speedup_vs_official"] = rows["official torch fp32"]["ms_median"] / row["ms_median"]
        floor = _floor_of(name)
        if floor:
            row["vs_floor"] = row["ms_median"] / rows[floor]["ms_median"]
            row["vs_floor_min"] = row["ms_min"] / rows[floor]["ms_min"]
    return {"shape": [h, w, c], "k": args.k, "gflop_per_candidate": 2.0 * h * w * h * w * c / 1e9,
            "counts": next(iter(counts.values())), "variants": rows}


def _machine(threads: int) -> dict[str, Any]:
    import torch

    from vpr_ros.core.matching import mnn_kernels

    if mnn_kernels.AVAILABLE:
        import numba
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "numpy": np.__version__,
            "numpy_blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
            "torch": torch.__version__, "torch_blas": "MKL" if torch.backends.mkl.is_available() else "?",
            "torch_threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "mnn_kernels": f"numba {numba.__version__}" if mnn_kernels.AVAILABLE else "numpy (no numba)"}


def _print(case: dict[str, Any]) -> None:
    h, w, c = case["shape"]
    print(f"\n{h}x{w}x{c}, K={case['k']} ({case['gflop_per_candidate']:.2f} GFLOP per candidate), "
          f"MNN counts {case['counts']}")
    print("| variant | ms/candidate median | min | speed-up vs official | vs its GEMM floor | counts identical |")
    print("|---|---|---|---|---|---|")
    for name, r in case["variants"].items():
        sp = f"{r['speedup_vs_official']:.1f}x" if "speedup_vs_official" in r else ""
        fl = f"{r['vs_floor']:.2f}x (min {r['vs_floor_min']:.2f}x)" if "vs_floor" in r else ""
        same = "" if r["counts_identical"] is None else ("yes" if r["counts_identical"] else "**NO**")
        print(f"| {name} | {r['ms_median']:.2f} | {r['ms_min']:.2f} | {sp} | {fl} | {same} |")


def run_verify_bench(args: argparse.Namespace) -> int:
    threads = str(args.threads)
    if os.environ.get(_PINNED) != threads and "verify" in sys.argv:  # pools read these at load: restart
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OPENBLAS_NUM_THREADS=threads,
                   OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, **{_PINNED: threads})
        argv = [sys.executable, "-m", "vpr_ros.cli.main", "bench", "verify", *sys.argv[sys.argv.index("verify") + 1:]]
        return subprocess.run(argv, env=env, check=False).returncode
    import torch

    torch.set_num_threads(args.threads)
    machine = _machine(args.threads)
    print(", ".join(f"{k}={v}" for k, v in machine.items()))
    result = {"machine": machine, "cases": [_case(args, args.shape), _case(args, args.lite_shape)]}
    for case in result["cases"]:
        _print(case)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
        print(f"\nwrote {args.json}")
    ok = all(r["counts_identical"] is not False for case in result["cases"] for r in case["variants"].values())
    return 0 if ok else 1
