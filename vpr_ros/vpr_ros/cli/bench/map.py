"""``vpr-ros bench map``: keyframe-index scale benchmark (flat vs HNSW vs IVF vs IVF-PQ); with ``--hash`` the
hash first pass against the float index (cli/bench/map_hash.py).

Per map size N and descriptor dimension D it reports, for each index: the time to open a map (build
the index from N stored descriptors, and read a saved index file), the latency of appending one
keyframe, single-query search p50/p99 (top-10, one thread, as the node searches), recall@10 against
exact search, RSS growth and disk per keyframe.

The descriptors are SIMULATED, not uniform random (uniform 1024-d vectors are all nearly
orthogonal, so every ANN index "misses" neighbours that are no nearer than the rest): a robot's
trajectory is a 64-d latent AR(1) walk (consecutive keyframes are neighbours, far-apart ones are
not), lifted to D dims by a fixed random linear map plus isotropic noise; each query revisits a
random keyframe with a perturbed latent and fresh noise, like a loop-closure query. Flat and HNSW go
through :class:`KeyframeIndex` (the code the detector runs); IVF/IVF-PQ need training, which an
incremental index cannot do, so they are measured on FAISS directly, trained on the map itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import numpy.typing as npt

from vpr_ros.cli.bench.map_hash import add_hash_arguments, run_hash_bench
from vpr_ros.core.config import IndexConfig
from vpr_ros.core.index import KeyframeIndex, l2_normalise

__all__ = ["add_arguments", "run_map_bench", "simulated_descriptors"]

LATENT_DIM = 64
TOP = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000], help="keyframe counts N")
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 1280],
                        help="descriptor dimensions (SelaVPR 1024, lite0-gem 1280)")
    parser.add_argument("--indexes", nargs="+", default=["Flat", "HNSW32", "IVF", "IVF-PQ"],
                        help="Flat, HNSW<M>, IVF, IVF-PQ")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256], help="HNSW efSearch values")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="IVF nprobe values")
    parser.add_argument("--queries", type=int, default=500, help="timed single queries per setting")
    parser.add_argument("--appends", type=int, default=200, help="timed single-keyframe appends")
    parser.add_argument("--seed", type=int, default=0)
    add_hash_arguments(parser)  # --hash: the hash first pass against the float index (cli/bench/map_hash.py)


def simulated_descriptors(n: int, dim: int, n_queries: int, seed: int = 0
                          ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """SIMULATED (n, dim) map and (n_queries, dim) revisit queries, float32, L2-normalised."""
    rng = np.random.default_rng(seed)
    lift = rng.standard_normal((LATENT_DIM, dim), dtype=np.float32) / np.sqrt(LATENT_DIM)
    rho = 0.98  # about 50 keyframes until the view has changed completely
    eps = rng.standard_normal((n, LATENT_DIM), dtype=np.float32) * np.float32(np.sqrt(1 - rho**2))
    z = np.empty((n, LATENT_DIM), np.float32)
    z[0] = rng.standard_normal(LATENT_DIM)
    for i in range(1, n):  # the walk is sequential by nature; 100k x 64 takes well under a second
        z[i] = rho * z[i - 1] + eps[i]
    noise = np.float32(0.5)
    database = z @ lift + noise * rng.standard_normal((n, dim), dtype=np.float32)
    src = rng.integers(0, n, n_queries)
    z_queries = z[src] + 0.2 * rng.standard_normal((n_queries, LATENT_DIM), dtype=np.float32)
    queries = z_queries @ lift + noise * rng.standard_normal((n_queries, dim), dtype=np.float32)
    return l2_normalise(database), l2_normalise(queries)


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _percentiles_ms(times_s: list[float]) -> tuple[float, float]:
    t = np.asarray(times_s) * 1e3
    return float(np.percentile(t, 50)), float(np.percentile(t, 99))


class _Raw:
    """IVF / IVF-PQ on FAISS directly (trained on the map), with the KeyframeIndex calls we time."""

    def __init__(self, dim: int, factory: str, train: npt.NDArray[np.float32]) -> None:
        base = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        base.train(train)
        self._index = faiss.IndexIDMap2(base)

    def add(self, keys: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        self._index.add_with_ids(l2_normalise(vectors), np.asarray(keys, np.int64))

    def search(self, query: npt.ArrayLike, k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        sims, keys = self._index.search(l2_normalise(query), k)
        return keys[0], sims[0]

    def save(self, path: str) -> None:
        faiss.write_index(self._index, path)


def _nlist(n: int) -> int:
    return max(8, int(2 * np.sqrt(n)))  # below FAISS's 4-16 sqrt(N) guideline: k-means at 100k stays ~30 s


def _factory(name: str, n: int) -> str:
    nlist = _nlist(n)
    if name == "IVF":
        return f"IVF{nlist},Flat"
    if name == "IVF-PQ":
        return f"IVF{nlist},PQ64x8np"  # 64 B/keyframe, the disk option; np: polysemous training takes minutes
    return name


def _set(index: object, name: str, value: int) -> None:
    inner = index._index  # type: ignore[attr-defined]
    faiss.ParameterSpace().set_index_parameter(inner, name, value)


def _bench_one(name: str, database: npt.NDArray[np.float32], queries: npt.NDArray[np.float32],
               truth: npt.NDArray[np.int64], args: argparse.Namespace, tmp: Path) -> list[str]:
    n, dim = database.shape
    appends = min(args.appends, n // 10)
    keys = np.arange(n)
    factory = _factory(name, n)
    rss0 = _rss_mb()
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # a map is opened with every core
    t0 = time.perf_counter()
    if name.startswith("IVF"):
        rng = np.random.default_rng(1)
        train = database[rng.choice(n, min(n, 40 * _nlist(n)), replace=False)]
        index: object = _Raw(dim, factory, train)
    else:
        index = KeyframeIndex(dim, IndexConfig(factory=factory))
    index.add(keys[:n - appends], database[:n - appends])  # type: ignore[attr-defined]
    build_s = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)  # the node appends and searches one keyframe at a time
    times = []
    for i in range(n - appends, n):
        t = time.perf_counter()
        index.add(keys[i:i + 1], database[i:i + 1])  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t)
    app50, app99 = _percentiles_ms(times)
    rss = _rss_mb() - rss0
    path = str(tmp / "index.faiss")
    index.save(path)  # type: ignore[attr-defined]
    disk_kb = os.path.getsize(path) / n / 1024
    t = time.perf_counter()
    faiss.read_index(path)
    read_s = time.perf_counter() - t
    knobs: list[tuple[str, int | None]] = [("", None)]
    if name.startswith("HNSW"):
        knobs = [("efSearch", v) for v in args.ef_search]
    elif name.startswith("IVF"):
        knobs = [("nprobe", v) for v in args.nprobe]
    rows = []
    for knob, value in knobs:
        if value is not None:
            _set(index, knob, value)
        found, times = np.empty((len(queries), TOP), np.int64), []
        for qi, q in enumerate(queries):
            t = time.perf_counter()
            ids, _ = index.search(q, TOP)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - t)
            found[qi, :len(ids)] = ids
            found[qi, len(ids):] = -1
        recall = np.mean([len(set(f) & set(g)) / TOP for f, g in zip(found, truth)])
        p50, p99 = _percentiles_ms(times)
        label = f"{factory}" + (f" {knob}={value}" if value is not None else "")
        rows.append(f"{n:>7} {dim:>5} {label:<28} {build_s:>8.2f} {read_s:>7.3f} {app50:>7.3f} {app99:>7.3f} "
                    f"{p50:>7.3f} {p99:>7.3f} {recall:>7.4f} {rss:>8.1f} {disk_kb:>7.2f}")
    return rows


def _git_hash() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=False).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def run_map_bench(args: argparse.Namespace, emit: Callable[[str], None] = print) -> int:
    if getattr(args, "hash", False):
        return run_hash_bench(args, emit)
    emit(f"keyframe index scale, SIMULATED clustered descriptors (64-d latent walk), top-{TOP}; "
         f"faiss {faiss.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
         f"git {_git_hash()}")
    emit("open: build from descriptors (all cores) / read index file; append, search: one thread, ms")
    emit(f"{'N':>7} {'D':>5} {'index':<28} {'build s':>8} {'read s':>7} {'app p50':>7} {'app p99':>7} "
         f"{'srch p50':>7} {'p99':>7} {'R@10':>7} {'RSS MB':>8} {'disk KB/kf':>7}")
    threads = faiss.omp_get_max_threads()
    try:
        for dim in args.dims:
            for n in args.sizes:
                database, queries = simulated_descriptors(n, dim, args.queries, args.seed)
                exact = faiss.IndexFlatIP(dim)
                exact.add(database)
                _, truth = exact.search(queries, TOP)
                del exact
                for name in args.indexes:
                    with tempfile.TemporaryDirectory() as tmp:
                        for row in _bench_one(name, database, queries, truth, args, Path(tmp)):
                            emit(row)
    finally:
        faiss.omp_set_num_threads(threads)  # the timing loops pin FAISS to one thread
    return 0
