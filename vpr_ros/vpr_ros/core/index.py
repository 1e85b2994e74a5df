"""Incremental FAISS keyframe index over L2-normalised global descriptors.

The metric is inner product on unit vectors, i.e. cosine similarity; ranking by it equals ranking
by L2 distance. Vectors are stored under caller-chosen int64 keys (``IndexIDMap2``), so keys stay
stable when maps are merged.

``index.factory=auto`` (the default) is exact ``Flat`` up to ``index.auto_switch_keyframes`` and
``HNSW32`` above: ``vpr-ros bench map`` (docs/benchmarks.md) measured flat search growing linearly
past 1 ms while HNSW32 at efSearch=128 stays well under it with recall@10 >= 0.99 up to 100k
keyframes. The switch rebuilds the index once from the stored vectors. Keyframes are never removed
from the index (only ``reset``), and exclusion filters the results instead of using an
IDSelector, so any factory that can ``add_with_ids`` through IndexIDMap2 works, HNSW included
(which cannot ``remove_ids``). IVF needs training, which an incremental index cannot do; it belongs
to offline city-scale maps (docs/map_store.md). ``index.first_pass=hash`` searches binary hashes first
instead (core/hash_index.py, same interface).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Collection, Sequence

import faiss
import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import IndexConfig
from vpr_ros.core.errors import ConfigError, InputError, MapStoreError
from vpr_ros.core.types import Keyframe

logger = logging.getLogger(__name__)

__all__ = ["KeyframeIndex", "l2_normalise", "AUTO_FACTORY", "AUTO_LARGE_FACTORY"]

AUTO_FACTORY = "auto"
AUTO_LARGE_FACTORY = "HNSW32"  # what factory=auto switches to above index.auto_switch_keyframes


def l2_normalise(x: npt.ArrayLike, name: str = "descriptor") -> npt.NDArray[np.float32]:
    """Return (N, D) float32 rows scaled to unit L2 norm; raises InputError on NaN/inf/zero rows."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise InputError(f"{name} must be (N, D) or (D,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or inf; check the model output")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InputError(f"{name} has an all-zero row and cannot be normalised")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


class KeyframeIndex:
    """FAISS index of global descriptors with incremental add and top-K search.

    Built from a factory string (``IndexConfig.factory``, default exact ``Flat``) with
    ``METRIC_INNER_PRODUCT`` and wrapped in ``IndexIDMap2``.
    """

    first_pass = "float"

    def __init__(self, dim: int, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()
        self.dim = int(dim)
        self._auto = self.config.factory.strip() == AUTO_FACTORY
        self._index = self._build("Flat" if self._auto else self.config.factory)

    def _build(self, factory: str) -> faiss.IndexIDMap2:
        try:
            base = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(
                f"index.factory={factory!r} is not a valid FAISS factory string for "
                f"dimension {self.dim} ({str(exc).splitlines()[-1] if str(exc) else exc}); try 'auto', "
                "'Flat' or 'HNSW32'"
            ) from None
        if not base.is_trained:
            raise ConfigError(
                f"index.factory={factory!r} needs training, which an incremental keyframe "
                "index cannot do; use 'auto', 'Flat' or 'HNSW32'")
        index = faiss.IndexIDMap2(base)
        self._set_search_parameters(index)
        return index

    def _set_search_parameters(self, index: faiss.Index) -> None:
        # FAISS's HNSW default efSearch=16 gives recall@10 well below 0.99 on large maps.
        if isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW):
            faiss.ParameterSpace().set_index_parameter(index, "efSearch", self.config.ef_search)

    @property
    def factory(self) -> str:
        """The kind of index held now: ``auto`` resolves to Flat or HNSW32, a loaded file to its own."""
        base = faiss.downcast_index(self._index.index)
        if isinstance(base, faiss.IndexFlat):
            return "Flat"
        if isinstance(base, faiss.IndexHNSW):
            return f"HNSW{base.hnsw.nb_neighbors(1)}"
        return self.config.factory

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, keys: npt.ArrayLike, vectors: npt.ArrayLike, codes: npt.ArrayLike | None = None) -> None:
        """Add (N,) int64 keys with (N, D) descriptors (normalised here); hash ``codes`` are not used here."""
        keys_arr = np.ascontiguousarray(np.atleast_1d(np.asarray(keys, dtype=np.int64)))
        vecs = l2_normalise(vectors)
        if vecs.shape != (len(keys_arr), self.dim):
            raise InputError(
                f"descriptors have shape {vecs.shape}, expected ({len(keys_arr)}, {self.dim}); "
                "the model and the index disagree on the descriptor dimension")
        if self._auto and self.factory == "Flat" and len(self) + len(keys_arr) > self.config.auto_switch_keyframes:
            self._switch_to_large(keys_arr, vecs)
            return
        self._index.add_with_ids(vecs, keys_arr)

    def add_keyframes(self, keys: npt.ArrayLike, keyframes: Sequence[Keyframe]) -> None:
        """Index ``keyframes`` under ``keys`` by their float descriptors; InputError for one known by its
        hash only (another robot's, sent as hashes: that needs index.first_pass hash)."""
        lacking = [kf for kf in keyframes if np.size(kf.global_) == 0]
        if lacking:
            raise InputError(f"{len(lacking)} keyframes of robot {lacking[0].robot_id!r} are known by their hash only; "
                             "this index searches float descriptors: set index.first_pass hash to use them")
        if keyframes:
            self.add(keys, np.stack([kf.global_ for kf in keyframes]))

    def _switch_to_large(self, keys: npt.NDArray[np.int64], vecs: npt.NDArray[np.float32]) -> None:
        """Rebuild as HNSW32 from the stored vectors plus the new ones (once per map)."""
        n = len(self)
        old_keys = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        old_vecs = self._index.index.reconstruct_n(0, n) if n else np.empty((0, self.dim), np.float32)
        large = self._build(AUTO_LARGE_FACTORY)
        large.add_with_ids(np.concatenate([old_vecs, vecs]), np.concatenate([old_keys, keys]))
        self._index = large
        logger.info("keyframe index: %d keyframes > index.auto_switch_keyframes=%d, switched from exact Flat "
                    "to %s (efSearch=%d)", len(self), self.config.auto_switch_keyframes, AUTO_LARGE_FACTORY,
                    self.config.ef_search)

    def search(self, query: npt.ArrayLike, k: int, exclude: Collection[int] = (),
               code: npt.ArrayLike | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Top-``k`` keys and cosine similarities for one query, skipping keys in ``exclude`` (``code``,
        the query's hash, is for core/hash_index.py and not used here).

        Returns keys (M,) int64 and similarities (M,) float32, best first, M <= k.
        """
        xq = l2_normalise(query, "query descriptor")
        if xq.shape != (1, self.dim):
            raise InputError(f"query descriptor has shape {xq.shape}, expected (1, {self.dim})")
        if len(self) == 0 or k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        # Excluded keys can occupy at most len(exclude) of the slots, so ask for that many more.
        k_search = min(len(self), k + len(exclude))
        D, I = self._index.search(xq, k_search)
        keep = [(i, d) for i, d in zip(I[0], D[0]) if i >= 0 and int(i) not in exclude][:k]
        if not keep:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        I_out, D_out = zip(*keep)
        return np.asarray(I_out, np.int64), np.asarray(D_out, np.float32)

    def reconstruct(self, key: int) -> npt.NDArray[np.float32]:
        """The stored (D,) descriptor of ``key``."""
        return self._index.reconstruct(int(key))

    def reset(self) -> None:
        self._index.reset()

    def save(self, path: str | Path) -> None:
        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: str | Path, config: IndexConfig | None = None) -> "KeyframeIndex":
        """Read an index written by :meth:`save`; raises MapStoreError when unreadable."""
        try:
            raw = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise MapStoreError(f"cannot read FAISS index {path}: {exc}; the map is damaged, "
                                "re-create it or load another map") from None
        if not isinstance(raw, faiss.IndexIDMap2):
            raw = faiss.downcast_index(raw)
        if raw.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise MapStoreError(f"FAISS index {path} does not use inner product; it was not written by vpr_ros")
        self = cls.__new__(cls)
        self.config = config or IndexConfig()
        self.dim = int(raw.d)
        self._auto = self.config.factory.strip() == AUTO_FACTORY
        self._index = raw
        if hasattr(raw, "id_map"):
            self._set_search_parameters(raw)
        return self
