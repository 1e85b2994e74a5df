"""The detector's keyframe map on disk and from other robots: live-map appends, local features read
on demand, snapshots, loading saved maps, other robots' keyframes.

A mixin of :class:`vpr_ros.core.detector.LoopClosureDetector` (its map half; the detector file keeps
the per-frame pipeline). It uses the detector's state: ``config``, ``model``, ``model_id``,
``_keyframes`` (key = position), ``_index``, ``_own_keys``, ``_next_id``, ``_local_refs`` (key ->
(live map, its key) of keyframes whose local features stay on disk), ``_store`` (the live map new
keyframes are appended to, or None), ``store_failures`` and ``_is_own``. Text read on keyframes and
place labels (issue 13) arrive after the keyframe and update it in memory and in the live map.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.map import live_map, live_map_dirs, text_table
from vpr_ros.core.errors import InputError, MapStoreError
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes
from vpr_ros.core.text.place_text import PlaceLabel, TextReading
from vpr_ros.core.types import Keyframe, LoopClosure

if TYPE_CHECKING:
    from vpr_ros.core.config import Config
    from vpr_ros.core.index import KeyframeIndex

__all__ = ["KeyframeMapMixin"]

logger = logging.getLogger("vpr_ros.core.detector")


class KeyframeMapMixin:
    """Map persistence and sharing of a LoopClosureDetector (see the module docstring)."""

    config: Config
    model: object
    model_id: str
    store_failures: int
    _keyframes: list[Keyframe]
    _index: KeyframeIndex
    _own_keys: list[int]
    _next_id: int
    _local_refs: dict[int, tuple[live_map.MapLog, int]]
    _store: live_map.MapLog | None

    def local_features(self, key: int) -> npt.NDArray[np.float32] | None:
        """(h, w, c) float32 local features of keyframe ``key``: from memory, or read from its map on disk."""
        kf = self._keyframes[key]
        if kf.local is not None or key not in self._local_refs or not self.config.map.store_local:
            return kf.local
        log, log_key = self._local_refs[key]
        return log.read_local(log_key)

    def keyframe_with_local(self, key: int) -> Keyframe:
        """Keyframe ``key`` with its local features and geometry (a copy with them read from disk where
        they live there: keyframes of a live map keep neither in RAM)."""
        kf = self._keyframes[key]
        if key not in self._local_refs:
            return kf
        local = self.local_features(key)
        geometry = kf.geometry
        if geometry is None:
            log, log_key = self._local_refs[key]
            geometry = log.read_geometry(log_key)
        if local is kf.local and geometry is kf.geometry:
            return kf
        return dataclasses.replace(kf, local=local, geometry=geometry)

    @property
    def store(self) -> live_map.MapLog | None:
        return self._store

    def attach_store(self, path: str | Path, fresh: bool = False) -> int:
        """Append every keyframe, from now on as it is made, to the live map at ``path`` (core/map/live_map.py).

        A live map already there (same model, weights and preprocessing, else MapStoreError) is
        loaded first and continued; a missing path, an empty directory or a snapshot map is replaced
        by a new live map. Keyframes in memory are appended, then their local features are dropped
        from RAM and read from the map per candidate. Returns the number of keyframes loaded.
        ``fresh``: start a new live map even where one exists (after a reset).
        """
        self.detach_store()
        log = live_map_dirs.open_for_append(path, live_map.fingerprint(self.model), self.model.global_dim,
                                            self.config.map.local_encoding, fresh=fresh, lazy_geometry=True)
        try:
            added = self._add_loaded(path, log.keyframes, log) if len(log) else 0
        except BaseException:
            log.close()
            raise
        present = {(k.robot_id, k.session_id, k.id) for k in log.keyframes}
        self._store = log
        for key in range(len(self._keyframes)):
            kf = self._keyframes[key]
            if (kf.robot_id, kf.session_id, kf.id) not in present:
                self._append_to_store(key, self.keyframe_with_local(key))
        return added

    def detach_store(self) -> None:
        """Stop appending (the live map stays on disk as it is)."""
        if getattr(self, "_store", None) is not None:
            for key, (log, _) in list(self._local_refs.items()):
                if log is self._store:  # keep what is still needed in memory before the map closes
                    self._keyframes[key] = self.keyframe_with_local(key)
                    del self._local_refs[key]
            self._store.close()
        self._store = None

    def _append_to_store(self, key: int, kf: Keyframe) -> None:
        try:
            log_key = self._store.append(kf)
        except (live_map.MapStoreError, OSError, live_map.sqlite3.Error) as exc:
            # The keyframe stays in memory (with its local features): detection goes on without the disk.
            self.store_failures += 1
            logger.error("could not append keyframe %d to map %s: %s", kf.id, self._store.root, exc)
            return
        # Local features and geometry now live on disk: RAM keeps the descriptor and metadata only.
        self._local_refs[key] = (self._store, log_key)
        if kf.local is not None or kf.geometry is not None:
            self._keyframes[key] = dataclasses.replace(self._keyframes[key], local=None, geometry=None)

    def _store_loops(self, loops: list[LoopClosure]) -> None:
        if self._store is not None:
            try:
                self._store.append_loops(loops)
            except (live_map.MapStoreError, OSError, live_map.sqlite3.Error) as exc:
                self.store_failures += 1  # the loop is still published; only the map's record of it is missing
                logger.error("could not append loops to map %s: %s", self._store.root, exc)

    def save_map(self, path: str | Path, loops: Sequence[LoopClosure] = ()) -> int:
        """Save every keyframe of the map (and ``loops``, accepted loops to keep) to ``path``; returns
        the keyframe count.

        ``path`` must be missing, an empty directory or a vpr_ros map (replaced crash-safely);
        anything else raises MapStoreError and is left untouched, as is the map in memory. With a
        live map attached this is a snapshot (copy) of it; saving onto the live map itself is a no-op.
        """
        if self._store is not None:
            target = Path(path).expanduser()
            if target.exists() and target.resolve() == self._store.root.resolve():
                return len(self._keyframes)  # every keyframe is already on disk
            written = live_map_dirs.snapshot(self._store, target)
            logger.info("snapshot of %d keyframes written to %s", len(self._store), written)
            return len(self._store)
        keyframes = ([self.keyframe_with_local(k) for k in range(len(self._keyframes))] if self._local_refs
                     else self._keyframes)
        written = save_keyframes(path, keyframes, self.model_id, self.model.global_dim,
                                 index_writer=self._index.save, loops=loops)
        logger.info("saved %d keyframes to %s", len(self._keyframes), written)
        return len(self._keyframes)

    def load_map(self, path: str | Path) -> int:
        """Add the keyframes saved at ``path``; returns how many were added.

        Keyframes already in the map (same robot, session and keyframe id: the same map loaded
        twice, or a map saved earlier in this session) are skipped, and the count is logged, so
        loading is idempotent. Any error raises MapStoreError with the map unchanged.
        """
        if live_map.is_live_map(path):
            log = live_map.MapLog(path, live_map.fingerprint(self.model), lazy_geometry=True)
            return self._add_loaded(path, log.keyframes, log)
        _, loaded = load_keyframes(path, self.model_id, load_local=self.config.map.store_local)
        return self._add_loaded(path, loaded, None)

    def _add_loaded(self, path: str | Path, loaded: Sequence[Keyframe], log: live_map.MapLog | None) -> int:
        if loaded and loaded[0].global_.shape[0] != self.model.global_dim:
            raise MapStoreError(f"map {path} holds {loaded[0].global_.shape[0]}-d descriptors, the "
                                f"model gives {self.model.global_dim}-d")
        present = {(kf.robot_id, kf.session_id, kf.id) for kf in self._keyframes}
        fresh, fresh_log_keys = [], []
        for log_key, kf in enumerate(loaded):
            ident = (kf.robot_id, kf.session_id, kf.id)
            if ident not in present:  # also drops duplicates inside one (crafted) map
                present.add(ident)
                fresh.append(kf)
                fresh_log_keys.append(log_key)
        start = len(self._keyframes)
        keys = np.arange(start, start + len(fresh))
        if fresh:
            try:
                self._index.add(keys, np.stack([k.global_ for k in fresh]))
            except InputError as exc:  # the store checks descriptors, so only a model/map mismatch gets here
                raise MapStoreError(f"map {path} cannot be indexed: {exc}") from None
        self._keyframes.extend(fresh)
        if log is not None:  # their local features (if map.store_local) and geometry are read from it
            self._local_refs.update({int(k): (log, lk) for k, lk in zip(keys, fresh_log_keys)})
        if self._store is not None and log is not self._store:
            for k in keys:
                self._append_to_store(int(k), self.keyframe_with_local(int(k)))
        own = [k for k, kf in zip(keys, fresh) if self._is_own(kf)]
        if own:
            # Continuing a saved session: new keyframe ids follow the saved ones.
            self._own_keys.extend(int(k) for k in own)
            self._next_id = max(self._next_id, max(self._keyframes[k].id for k in own) + 1)
        if len(fresh) < len(loaded):
            logger.warning("map %s: skipped %d of %d keyframes already in the map (same robot, session and "
                           "keyframe id)", path, len(loaded) - len(fresh), len(loaded))
        logger.info("loaded %d keyframes from %s", len(fresh), path)
        return len(fresh)

    def set_text(self, key: int, readings: Sequence[TextReading]) -> None:
        """What OCR read on keyframe ``key``: kept in memory and, with a live map attached, on disk.

        A store failure is logged and counted (``store_failures``); the text stays in memory and a
        later snapshot saves it. Raises IndexError for a key the map does not hold.
        """
        kf = self._keyframes[key]
        kf.text = tuple(readings)
        self._update_store(kf, lambda log, log_key: log.set_text(log_key, kf.text))

    def add_label(self, key: int, label: PlaceLabel) -> None:
        """Give keyframe ``key``'s place a name or address (kept like :meth:`set_text`).

        Raises MapStoreError for a label that cannot be stored (empty, too long) and IndexError for a
        key the map does not hold; the map is unchanged then.
        """
        text_table.check_label(label)
        kf = self._keyframes[key]
        kf.labels = (*kf.labels, label)
        self._update_store(kf, lambda log, log_key: log.add_label(log_key, label))

    def _update_store(self, kf: Keyframe, change: Callable[[live_map.MapLog, int], None]) -> None:
        if self._store is None:
            return
        log_key = self._store.key_of(kf.robot_id, kf.session_id, kf.id)
        if log_key is None:  # its append failed earlier: memory holds it, the next snapshot saves it
            return
        try:
            change(self._store, log_key)
        except (live_map.MapStoreError, OSError, live_map.sqlite3.Error) as exc:
            self.store_failures += 1
            logger.error("could not store text/labels of keyframe %d in map %s: %s", kf.id, self._store.root, exc)

    def add_remote_keyframes(self, keyframes: Sequence[Keyframe]) -> int:
        """Index other robots' keyframes (``local`` may be None: fetched on demand through
        :attr:`fetch_local`); keyframes already in the map are skipped. Returns how many were added."""
        present = {(kf.robot_id, kf.session_id, kf.id) for kf in self._keyframes}
        fresh = []
        for kf in keyframes:
            ident = (kf.robot_id, kf.session_id, kf.id)
            if ident not in present and not self._is_own(kf):  # our own stream echoed back is not remote
                present.add(ident)
                fresh.append(kf)
        if fresh:
            start = len(self._keyframes)
            self._index.add(np.arange(start, start + len(fresh)), np.stack([kf.global_ for kf in fresh]))
            self._keyframes.extend(fresh)
            if self._store is not None:  # central mode shares whole keyframes: the shared map keeps them
                for key, kf in enumerate(fresh, start):
                    if kf.local is not None:
                        self._append_to_store(key, kf)
        return len(fresh)
