"""Binary hash codes as the first pass of keyframe retrieval (``index.first_pass: hash``), the official
SelaVPR++ search (MODELS_3.md §0.4 and §1.7, ``eval_rerank.py`` -> ``test_rerank.py``).

A SelaVPR++ ``-rerank`` model gives each image a 512-bit hash beside its float descriptor
(``Descriptors.hash``: bit k = 1 where z[k] >= 0, packed MSB first into 64 bytes). The order this module
defines, and ``test/core/test_hash_index.py`` checks against a brute-force reference with ties:

1. Hamming top-N over the stored hashes, N = min(``index.hash_candidates``, keyframes not excluded);
   equal distances in insertion order (ascending database index, which is what faiss.IndexBinaryFlat
   gives, so it also decides who enters the N at a tie on its boundary);
2. those N re-ordered by the Euclidean distance between float32 float descriptors, a stable sort:
   equal distances keep the Hamming order (the official ``np.argsort`` leaves them unspecified);
3. the first ``index.top_k``. Nothing outside the N is ever considered: no threshold, no score fusion.

The binary index is ``BFlat`` (exact Hamming) or ``BHNSW<M>`` (approximate: step 1 may miss a code);
``index.hash_factory=auto`` is BFlat up to ``index.hash_auto_switch_keyframes`` and BHNSW32 above (rebuilt
once from the stored codes). No float FAISS index is kept: the float descriptors of the N candidates come
from ``floats(keys)`` (the detector's keyframes, so they are held once) or from the index's own store.
Another robot's keyframe known by its hash only has no float until ``floats`` fetches it; a candidate
still without one is left out of step 2.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Collection, Sequence

import faiss
import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import IndexConfig
from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.core.index import KeyframeIndex, l2_normalise
from vpr_ros.core.types import Keyframe

logger = logging.getLogger(__name__)

__all__ = ["HashIndex", "HashKeyframeIndex", "FloatSource", "keyframe_index", "check_hash_model", "as_code", "rerank",
           "hamming", "HASH_PRESETS"]

#: The presets whose models give a hash (models/registry.py ``hash_bits``), named in configuration errors.
HASH_PRESETS = ("selavprpp-rerank", "selavprpp-base-rerank")
AUTO_LARGE_HASH_FACTORY = "BHNSW32"
#: floats(keys) -> one (D,) float32 per key, None where the keyframe's float descriptor is unknown (or an
#: (M, D) float32 array when every one is known).
FloatSource = Callable[[Sequence[int]], "Sequence[npt.NDArray[np.float32] | None] | npt.NDArray[np.float32]"]


def hamming(codes: npt.ArrayLike, code: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Hamming distances (N,) between packed codes (N, B/8) uint8 and one code (B/8,) (the reference)."""
    x = np.bitwise_xor(np.asarray(codes, np.uint8), np.asarray(code, np.uint8)[None])
    return np.unpackbits(x, axis=1).sum(axis=1, dtype=np.int64)


def rerank(query: npt.ArrayLike, keys: npt.ArrayLike, floats: npt.ArrayLike,
           k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Step 2 and 3: ``keys`` (M,) in Hamming order with their float descriptors (M, D) -> the first ``k``
    by ascending float32 Euclidean distance to ``query`` (D,), a stable sort; returns keys and cosine
    similarities (inner products of the L2-normalised descriptors), best first."""
    keys_arr = np.asarray(keys, np.int64)
    if len(keys_arr) == 0 or k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    q = np.asarray(query, np.float32).reshape(-1)
    vecs = np.asarray(floats, np.float32).reshape(len(keys_arr), -1)
    diff = vecs - q[None]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))  # the Euclidean distance, without norm()'s temporaries
    order = np.argsort(dist, kind="stable")[:k]
    return keys_arr[order], (vecs[order] @ q).astype(np.float32)


class HashIndex:
    """FAISS binary index (BFlat or BHNSW<M>) of packed codes under int64 keys, Hamming top-N search."""

    def __init__(self, bits: int, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()
        if bits <= 0 or bits % 8:
            raise ConfigError(f"a hash index needs a code of a positive multiple of 8 bits, got {bits}")
        self.bits = int(bits)
        factory = self.config.hash_factory.strip()
        self._auto = factory == "auto"
        self._index = self._build("BFlat" if self._auto else factory)

    def _build(self, factory: str) -> faiss.IndexBinaryIDMap2:
        if factory == "BFlat":
            base = faiss.IndexBinaryFlat(self.bits)
        elif factory.startswith("BHNSW") and factory[5:].isdigit() and int(factory[5:]) > 1:
            base = faiss.IndexBinaryHNSW(self.bits, int(factory[5:]))
        else:
            raise ConfigError(f"index.hash_factory={factory!r} is not a binary index; choose auto, BFlat or BHNSW<M>")
        return faiss.IndexBinaryIDMap2(base)

    @property
    def factory(self) -> str:
        base = faiss.downcast_IndexBinary(self._index.index)
        return f"BHNSW{base.hnsw.nb_neighbors(1)}" if isinstance(base, faiss.IndexBinaryHNSW) else "BFlat"

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def check_codes(self, codes: npt.ArrayLike, n: int) -> npt.NDArray[np.uint8]:
        """(n, bits/8) uint8, C-contiguous; raises InputError naming the expected shape."""
        arr = np.asarray(codes)
        if arr.dtype != np.uint8 or arr.shape != (n, self.bits // 8):
            raise InputError(f"hash codes have shape {arr.shape} and type {arr.dtype}, expected ({n}, "
                             f"{self.bits // 8}) uint8 (packed {self.bits}-bit codes); the model and the index "
                             "disagree on the hash")
        return np.ascontiguousarray(arr)

    def add(self, keys: npt.ArrayLike, codes: npt.ArrayLike) -> None:
        """Add (N,) int64 keys with their (N, bits/8) uint8 codes."""
        keys_arr = np.ascontiguousarray(np.atleast_1d(np.asarray(keys, np.int64)))
        arr = self.check_codes(codes, len(keys_arr))
        if self._auto and self.factory == "BFlat" and len(self) + len(keys_arr) > self.config.hash_auto_switch_keyframes:
            n = len(self)
            old_keys = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            old = self._index.index.reconstruct_n(0, n) if n else np.empty((0, self.bits // 8), np.uint8)
            self._index = self._build(AUTO_LARGE_HASH_FACTORY)
            self._index.add_with_ids(np.concatenate([old, arr]), np.concatenate([old_keys, keys_arr]))
            logger.info("hash index: %d keyframes > index.hash_auto_switch_keyframes=%d, switched from exact BFlat "
                        "to %s", len(self), self.config.hash_auto_switch_keyframes, AUTO_LARGE_HASH_FACTORY)
            return
        self._index.add_with_ids(arr, keys_arr)

    def search(self, code: npt.ArrayLike, n: int,
               exclude: Collection[int] = ()) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """Step 1: keys (M,) and Hamming distances (M,) of the ``n`` nearest codes not in ``exclude``,
        ties in insertion order; M = min(n, keyframes not excluded)."""
        q = self.check_codes(np.asarray(code).reshape(1, -1), 1)
        if len(self) == 0 or n <= 0:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        k_search = min(len(self), n + len(exclude))  # excluded keys take at most len(exclude) slots
        base = faiss.downcast_IndexBinary(self._index.index)
        if isinstance(base, faiss.IndexBinaryHNSW):
            base.hnsw.efSearch = max(self.config.ef_search, k_search)
        D, I = self._index.search(q, k_search)
        keep = [(i, d) for i, d in zip(I[0], D[0]) if i >= 0 and int(i) not in exclude][:n]
        if not keep:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        I_out, D_out = zip(*keep)
        return np.asarray(I_out, np.int64), np.asarray(D_out, np.int32)

    def keys(self) -> npt.NDArray[np.int64]:
        """Every stored key, in insertion order."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def reset(self) -> None:
        self._index = self._build("BFlat" if self._auto else self.config.hash_factory.strip())


class HashKeyframeIndex:
    """The keyframe index of ``index.first_pass=hash``: :class:`KeyframeIndex`'s interface, searched by
    hash then re-ranked by float (see the module docstring). ``floats``: where the float descriptors of
    candidates come from (None: the index keeps the ones given to :meth:`add`)."""

    first_pass = "hash"

    def __init__(self, dim: int, bits: int, config: IndexConfig | None = None,
                 floats: FloatSource | None = None) -> None:
        self.config = config or IndexConfig()
        self.dim = int(dim)
        self._codes = HashIndex(bits, self.config)
        self._own: dict[int, npt.NDArray[np.float32]] | None = None if floats is not None else {}
        self._floats: FloatSource = floats if floats is not None else self._stored

    def _stored(self, keys: Sequence[int]) -> list[npt.NDArray[np.float32] | None]:
        assert self._own is not None
        return [self._own.get(int(k)) for k in keys]

    @property
    def factory(self) -> str:
        return self._codes.factory

    @property
    def bits(self) -> int:
        return self._codes.bits

    def __len__(self) -> int:
        return len(self._codes)

    def add(self, keys: npt.ArrayLike, vectors: npt.ArrayLike | None, codes: npt.ArrayLike | None = None) -> None:
        """Add (N,) keys with their (N, bits/8) uint8 ``codes`` and (N, D) float ``vectors`` (kept only
        by an index without a ``floats`` source; None: hash only, the floats come later or never)."""
        keys_arr = np.atleast_1d(np.asarray(keys, np.int64))
        if codes is None:
            raise InputError("index.first_pass=hash: keyframes need their hash codes to be indexed")
        vecs = None
        if vectors is not None and self._own is not None:
            vecs = l2_normalise(vectors)
            if vecs.shape != (len(keys_arr), self.dim):
                raise InputError(f"descriptors have shape {vecs.shape}, expected ({len(keys_arr)}, {self.dim})")
        self._codes.add(keys_arr, codes)
        if vecs is not None and self._own is not None:
            self._own.update({int(k): v for k, v in zip(keys_arr, vecs)})

    def add_keyframes(self, keys: npt.ArrayLike, keyframes: Sequence[Keyframe]) -> None:
        """Index ``keyframes`` under ``keys`` by their hashes; raises InputError for one without a hash."""
        lacking = [kf for kf in keyframes if kf.hash is None]
        if lacking:
            kf = lacking[0]
            raise InputError(f"{len(lacking)} keyframes have no hash (e.g. keyframe {kf.id} of robot {kf.robot_id!r}, "
                             f"session {kf.session_id!r}: a map saved before hashes were stored, or another model); "
                             "index.first_pass=hash needs one for every keyframe: use index.first_pass float with "
                             f"them, or rebuild the map with a {' / '.join(HASH_PRESETS)} model")
        if not keyframes:
            return
        keys_arr = np.atleast_1d(np.asarray(keys, np.int64))
        self._codes.add(keys_arr, np.stack([np.asarray(kf.hash) for kf in keyframes]))
        if self._own is not None:  # another robot's keyframe known by its hash only has no float yet
            self._own.update({int(k): l2_normalise(kf.global_)[0] for k, kf in zip(keys_arr, keyframes)
                              if np.shape(kf.global_) == (self.dim,)})

    def search(self, query: npt.ArrayLike, k: int, exclude: Collection[int] = (),
               code: npt.ArrayLike | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Top-``k`` keys and cosine similarities of the query's float descriptor (D,) and ``code``
        (bits/8,) uint8, by the official rule (module docstring); best first."""
        if code is None:
            raise InputError("index.first_pass=hash: the query has no hash code; the model must give one "
                             f"({' / '.join(HASH_PRESETS)})")
        q = l2_normalise(query, "query descriptor")
        if q.shape != (1, self.dim):
            raise InputError(f"query descriptor has shape {q.shape}, expected (1, {self.dim})")
        keys, _ = self._codes.search(code, self.config.hash_candidates, exclude)
        floats = self._floats([int(key) for key in keys])
        if isinstance(floats, np.ndarray) and floats.shape == (len(keys), self.dim):  # every float known, stacked
            return rerank(q[0], keys, floats, k)
        known = [i for i, v in enumerate(floats) if v is not None and np.shape(v) == (self.dim,)]
        if len(known) < len(keys):
            logger.debug("hash first pass: %d of %d candidates have no float descriptor and are left out",
                         len(keys) - len(known), len(keys))
        return rerank(q[0], keys[known], np.stack([floats[i] for i in known]) if known else np.empty((0, self.dim)), k)

    def reconstruct(self, key: int) -> npt.NDArray[np.float32]:
        """The (D,) float descriptor of ``key``; InputError when it is not known (a hash-only keyframe)."""
        vec = self._floats([int(key)])[0]
        if vec is None:
            raise InputError(f"keyframe {key} is known by its hash only; its float descriptor was not fetched")
        return np.asarray(vec, np.float32)

    def reset(self) -> None:
        self._codes.reset()
        if self._own is not None:
            self._own.clear()

    def save(self, path: str | Path) -> None:
        """Write the float index file of a snapshot map (exact Flat over every key's float descriptor:
        maps stay readable by float-first detectors; the binary index is rebuilt from the stored hashes)."""
        keys = self._codes.keys()
        flat = KeyframeIndex(self.dim, IndexConfig(factory="Flat"))
        floats = self._floats([int(k) for k in keys])
        if any(v is None for v in floats):
            raise InputError("keyframes known by their hash only cannot be saved with a float index; "
                             "leave them out (core/map/storable.py does)")
        if len(keys):
            flat.add(keys, np.stack(floats))  # type: ignore[arg-type]
        flat.save(path)


def as_code(code: npt.ArrayLike | None) -> npt.NDArray[np.uint8] | None:
    """One packed hash as (B/8,) uint8 (a copy), None for None; raises InputError for another type or shape."""
    if code is None:
        return None
    arr = np.asarray(code)
    if arr.dtype != np.uint8 or arr.size == 0 or arr.size != arr.shape[-1]:
        raise InputError(f"a hash code must be packed bits, (B/8,) uint8; got {arr.dtype} {arr.shape}")
    return arr.reshape(-1).copy()


def check_hash_model(config: IndexConfig, model_id: str, hash_bits: int) -> None:
    """ConfigError when ``index.first_pass=hash`` is set for a model that gives no hash."""
    if config.first_pass == "hash" and hash_bits <= 0:
        raise ConfigError(f"index.first_pass=hash searches the binary hash of a hashing model, but model "
                          f"{model_id or '(unnamed)'!r} gives none; set model.preset to {' or '.join(HASH_PRESETS)} "
                          "(SelaVPR++ with its 512-bit hash), or index.first_pass float")


def keyframe_index(dim: int, config: IndexConfig, hash_bits: int = 0, floats: FloatSource | None = None,
                   model_id: str = "") -> KeyframeIndex | HashKeyframeIndex:
    """The keyframe index ``config`` asks for: float first (KeyframeIndex) or hash first (HashKeyframeIndex)."""
    check_hash_model(config, model_id, hash_bits)
    if config.first_pass == "hash":
        return HashKeyframeIndex(dim, hash_bits, config, floats)
    return KeyframeIndex(dim, config)
