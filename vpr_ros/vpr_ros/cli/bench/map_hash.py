"""``vpr-ros bench map --hash``: the hash first pass (SelaVPR++'s 512-bit hash, Hamming top-N, then float
re-ranking; core/hash_index.py) against the float index, side by side in one run.

Per map size N and dimension D: single-query search latency p50/p99 (one thread, as the node searches),
recall@10 against exact float search (the float top-10 found in the returned top-10), build time, and
memory per keyframe (RSS growth while building, and the index's own bytes). Rows: the float index the
detector runs (``Flat``, exact; ``HNSW32`` efSearch 128, ``index.factory=auto`` above 4000), the hash first
pass with BFlat and BHNSW32, and the Hamming ranking alone (no re-ranking, "first ranking" in the
official log). Last, the multi-robot bytes per keyframe of a KeyframeDescriptors batch (CDR, the bytes
DDS carries) with float16 descriptors, with float16 plus hashes, and with hashes only.

The descriptors are SIMULATED with a robot's structure (as ``vpr-ros bench map``): a 64-d latent AR(1)
walk along the trajectory (consecutive keyframes are neighbours), lifted to D float dimensions by a
fixed random map plus isotropic noise (0.5 of the signal per dimension), L2-normalised; the 512-bit hash
is the sign of a second, independent random lift of the same latent plus its own noise (a second branch
on the same image, like SelaVPR++'s hash stream). Queries revisit random keyframes with a perturbed
latent. Above ``--float-max`` keyframes the float rows are not built (memory and time on a small
machine) and the floats the re-ranking reads are held as float16 (the truth is computed on the same values).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import faiss
import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import IndexConfig
from vpr_ros.core.hash_index import HashKeyframeIndex
from vpr_ros.core.index import KeyframeIndex

__all__ = ["add_hash_arguments", "run_hash_bench", "simulated_hashed_descriptors"]

LATENT, BITS, TOP, CHUNK = 64, 512, 10, 50_000


def add_hash_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hash", action="store_true",
                        help="hash first pass + float re-ranking against the float index (SelaVPR++ -rerank)")
    parser.add_argument("--hash-candidates", type=int, default=100, help="Hamming candidates re-ranked (official 100)")
    parser.add_argument("--hash-factories", nargs="+", default=["BFlat", "BHNSW32"], help="binary indexes")
    parser.add_argument("--float-max", type=int, default=100_000,
                        help="largest N at which the float indexes are built (float32 rows above it do not fit)")


def simulated_hashed_descriptors(n: int, dim: int, n_queries: int, seed: int = 0, dtype: type = np.float32
                                 ) -> tuple[np.ndarray, npt.NDArray[np.uint8], npt.NDArray[np.float32],
                                            npt.NDArray[np.uint8]]:
    """SIMULATED map (n, dim) floats (L2-normalised, ``dtype``) and (n, 64) uint8 hashes, and the same for
    ``n_queries`` revisit queries (floats float32). Built in chunks, so 1M x 2048 float16 fits in 4 GB."""
    rng = np.random.default_rng(seed)
    lift = rng.standard_normal((LATENT, dim), dtype=np.float32) / np.sqrt(LATENT)
    lift_h = rng.standard_normal((LATENT, BITS), dtype=np.float32) / np.sqrt(LATENT)
    rho = np.float32(0.98)
    z = np.empty((n, LATENT), np.float32)
    z[0] = rng.standard_normal(LATENT)
    eps = rng.standard_normal((n, LATENT), dtype=np.float32) * np.float32(np.sqrt(1 - rho**2))
    for i in range(1, n):  # sequential by nature: 1M x 64 takes a few seconds
        z[i] = rho * z[i - 1] + eps[i]

    def lift_rows(zz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = zz @ lift + np.float32(0.5) * rng.standard_normal((len(zz), dim), dtype=np.float32)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        h = zz @ lift_h + np.float32(0.5) * rng.standard_normal((len(zz), BITS), dtype=np.float32)
        return g, np.packbits(h >= 0, axis=1)

    floats = np.empty((n, dim), dtype)
    codes = np.empty((n, BITS // 8), np.uint8)
    for start in range(0, n, CHUNK):
        g, h = lift_rows(z[start:start + CHUNK])
        floats[start:start + CHUNK], codes[start:start + CHUNK] = g, h
    zq = z[rng.integers(0, n, n_queries)] + np.float32(0.2) * rng.standard_normal((n_queries, LATENT), dtype=np.float32)
    q_floats, q_codes = lift_rows(zq)
    return floats, codes, q_floats.astype(np.float32), q_codes


def _truth(floats: np.ndarray, queries: np.ndarray) -> npt.NDArray[np.int64]:
    """Exact float top-10 by inner product (= by L2 on unit vectors), chunked over the map."""
    best_s = np.full((len(queries), TOP), -np.inf, np.float32)
    best_i = np.zeros((len(queries), TOP), np.int64)
    for start in range(0, len(floats), CHUNK):
        s = queries @ np.asarray(floats[start:start + CHUNK], np.float32).T
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + s.shape[1]), s.shape)], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :TOP]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best_i


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _time_queries(search: Callable[[int], np.ndarray], n_queries: int, truth: np.ndarray) -> tuple[float, float, float]:
    found, times = [], []
    for qi in range(n_queries):
        t = time.perf_counter()
        keys = search(qi)
        times.append(time.perf_counter() - t)
        found.append(set(int(k) for k in keys[:TOP]))
    recall = float(np.mean([len(f & set(t.tolist())) / TOP for f, t in zip(found, truth)]))
    ms = np.asarray(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), recall


def _row(emit: Callable[[str], None], n: int, dim: int, label: str, build_s: float, stats: tuple[float, float, float],
         rss_b: float, index_b: float) -> None:
    p50, p99, recall = stats
    emit(f"{n:>8} {dim:>5} {label:<30} {build_s:>8.2f} {p50:>8.3f} {p99:>8.3f} {recall:>7.4f} {rss_b:>9.0f} {index_b:>9.0f}")


def _float_rows(emit, floats, q_floats, truth, args) -> None:
    n, dim = floats.shape
    for factory in ("Flat", "HNSW32"):
        rss0 = _rss_mb()
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # a map is opened with every core
        t0 = time.perf_counter()
        index = KeyframeIndex(dim, IndexConfig(factory=factory, ef_search=128))
        index.add(np.arange(n), floats)
        build = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        rss = (_rss_mb() - rss0) * 2**20 / n
        stats = _time_queries(lambda qi: index.search(q_floats[qi], TOP)[0], len(q_floats), truth)
        own = 4 * dim + 16 + (2 * 32 * 4 if factory == "HNSW32" else 0)  # vectors, id maps, HNSW level-0 links
        _row(emit, n, dim, factory + (" efSearch=128" if factory == "HNSW32" else ""), build, stats, rss, own)
        del index


def _hash_rows(emit, floats, codes, q_floats, q_codes, truth, args) -> None:
    n, dim = floats.shape
    def source(keys):  # the floats are held once, as the detector's keyframes hold them
        return floats[np.asarray(keys, np.int64)].astype(np.float32)

    for factory in args.hash_factories:
        rss0 = _rss_mb()
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        t0 = time.perf_counter()
        config = IndexConfig(first_pass="hash", hash_factory=factory, hash_candidates=args.hash_candidates)
        index = HashKeyframeIndex(dim, BITS, config, floats=source)
        for start in range(0, n, CHUNK):
            index.add(np.arange(start, min(n, start + CHUNK)), None, codes[start:start + CHUNK])
        build = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        rss = (_rss_mb() - rss0) * 2**20 / n
        own = BITS // 8 + 16 + (2 * 32 * 4 if factory.startswith("BHNSW") else 0)
        stats = _time_queries(lambda qi: index.search(q_floats[qi], TOP, (), q_codes[qi])[0], len(q_floats), truth)
        _row(emit, n, dim, f"hash {factory} top{args.hash_candidates} + rerank", build, stats, rss, own)
        stats = _time_queries(lambda qi: index._codes.search(q_codes[qi], TOP)[0], len(q_floats), truth)
        _row(emit, n, dim, f"hash {factory} only (no rerank)", build, stats, rss, own)
        del index


def _fleet_bytes(emit: Callable[[str], None], dim: int) -> None:
    """CDR bytes per keyframe of a KeyframeDescriptors batch of 10 (the node's fleet.batch_size)."""
    from vpr_ros.core.fleet.remote_keyframes import encode_batch
    from vpr_ros.core.types import Keyframe

    rng = np.random.default_rng(0)
    kfs = [Keyframe(id=i, stamp_ns=i, robot_id="robot", session_id="session",
                    global_=rng.standard_normal(dim).astype(np.float32), hash=rng.integers(0, 256, 64, dtype=np.uint8))
           for i in range(10)]
    plain = [Keyframe(id=k.id, stamp_ns=k.stamp_ns, robot_id=k.robot_id, session_id=k.session_id, global_=k.global_)
             for k in kfs]
    cases = (("float16", plain, "float16"), ("float16 + hash", kfs, "float16"), ("hash only", kfs, "hash"))
    try:
        from rclpy.serialization import serialize_message

        from vpr_ros.nodes.fleet_msgs import batch_to_msg
        from builtin_interfaces.msg import Time

        def size(b) -> int:
            return len(serialize_message(batch_to_msg(b, Time())))
        how = "CDR bytes of the message"
    except ImportError:  # no ROS 2 wheels: the payload only
        def size(b) -> int:
            return b.wire_bytes
        how = "payload bytes (rclpy not installed)"
    emit(f"fleet: {how} per keyframe, batches of 10, {dim}-d, no poses")
    for label, keyframes, send in cases:
        batch = encode_batch(keyframes, "selavprpp-base-rerank@0123abcd", dim, "/robot/fleet/get_features", send)
        emit(f"  {label:<16} {size(batch) / 10:>8.1f} B/keyframe")


def run_hash_bench(args: argparse.Namespace, emit: Callable[[str], None] = print) -> int:
    emit(f"hash first pass vs float index, SIMULATED descriptors (64-d latent walk; float and 512-bit hash are two "
         f"noisy lifts of it), top-{TOP}, {args.queries} queries, one thread; faiss {faiss.__version__}, "
         f"{os.cpu_count()} cores")
    emit("memory per keyframe, bytes: RSS growth while building (noisy) / the index's own bytes; the re-ranking "
         "reads the floats the keyframes hold anyway")
    emit(f"{'N':>8} {'D':>5} {'index':<30} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'R@10':>7} {'RSS B/kf':>9} "
         f"{'own B/kf':>9}")
    threads = faiss.omp_get_max_threads()
    try:
        for dim in args.dims:
            for n in args.sizes:
                small = n <= args.float_max
                t0 = time.perf_counter()
                floats, codes, q_floats, q_codes = simulated_hashed_descriptors(
                    n, dim, args.queries, args.seed, np.float32 if small else np.float16)
                truth = _truth(floats, q_floats)
                emit(f"# N={n}: data and exact truth in {time.perf_counter() - t0:.0f} s"
                     + ("" if small else "; floats held as float16 (float rows not built, see --float-max)"))
                if small:
                    _float_rows(emit, floats, q_floats, truth, args)
                _hash_rows(emit, floats, codes, q_floats, q_codes, truth, args)
                del floats, codes
        _fleet_bytes(emit, args.dims[0])
    finally:
        faiss.omp_set_num_threads(threads)
    return 0
