"""The detector's keyframe map on disk and from other robots: live-map appends, local features read
on demand, snapshots, loading saved maps, other robots' keyframes.

A mixin of :class:`vpr_ros.core.detector.LoopClosureDetector` (its map half; the detector file keeps
the per-frame pipeline). It uses the detector's state: ``config``, ``model``, ``model_id``,
``_keyframes`` (key = position), ``_index``, ``_own_keys``, ``_next_id``, ``_local_refs`` (key ->
(live map, its key) of keyframes whose local features stay on disk), ``_store`` (the live map new
keyframes are appended to, or None), ``store_failures`` and ``_is_own``. Text read on keyframes and
place labels (issue 13) arrive after the keyframe and update it in memory and in the live map.

Writes to the live map go through one queue in order (a keyframe, then the loops that name it), so a
loop never reaches the disk before its keyframe. A write that fails for lack of space or an I/O error
keeps the keyframe in memory and in the queue; the queue is retried at every new keyframe and by
:meth:`flush_store` (the node calls it periodically), and ``store_pending`` says how many wait. A
keyframe the map cannot hold at all (an id beyond 64 bits from another robot) is dropped from the
queue and counted in ``store_refused``; it never blocks the own keyframes behind it.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.map import live_map, live_map_dirs, loops_table, map_poses as map_poses_mod, text_table
from vpr_ros.core.errors import InputError, MapStoreError
from vpr_ros.core.map.map_poses import MapPose, PoseKey
from vpr_ros.core.map.ownership import DirLock
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes
from vpr_ros.core.text.place_text import PlaceLabel, TextReading
from vpr_ros.core.types import Keyframe, LoopClosure

if TYPE_CHECKING:
    from vpr_ros.core.config import Config
    from vpr_ros.core.hash_index import HashKeyframeIndex
    from vpr_ros.core.index import KeyframeIndex
    from vpr_ros.core.keyframes import ConsistencyFilter

__all__ = ["KeyframeMapMixin"]

logger = logging.getLogger("vpr_ros.core.detector")


class KeyframeMapMixin:
    """Map persistence and sharing of a LoopClosureDetector (see the module docstring)."""

    config: Config
    model: object
    model_id: str
    store_failures: int
    _keyframes: list[Keyframe]
    _index: KeyframeIndex | HashKeyframeIndex
    _own_keys: list[int]
    _next_id: int
    _local_refs: dict[int, tuple[live_map.MapLog, int]]
    _store: live_map.MapLog | None
    _pending: list[tuple[str, Any]]
    store_refused: int
    store_error: str
    _consistency: ConsistencyFilter

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

    def attach_store(self, path: str | Path) -> int:
        """Append every keyframe, from now on as it is made, to the live map at ``path`` (core/map/live_map.py).

        A live map already there (same model, weights and preprocessing, else MapStoreError) is
        loaded first and continued; a missing path or an empty directory gets a new live map; a
        snapshot map or anything else is refused and left untouched. Keyframes in memory are appended,
        then their local features are dropped from RAM and read from the map per candidate. Returns
        the number of keyframes loaded.
        """
        self.detach_store()
        log = live_map_dirs.open_for_append(path, live_map.fingerprint(self.model), self.model.global_dim,
                                            self.config.map.local_encoding, lazy_geometry=True)
        try:
            optimized = self._take_optimized(path, log.keyframes)
            added = self._adopt_optimized(log.keyframes, optimized,
                                          self._add_loaded(path, log.keyframes, log) if len(log) else 0)
            self._link_stored_loops(log.loops)
        except BaseException:
            log.close()
            raise
        present = {(k.robot_id, k.session_id, k.id) for k in log.keyframes}
        self._store = log
        for key in range(len(self._keyframes)):
            kf = self._keyframes[key]
            if (kf.robot_id, kf.session_id, kf.id) not in present:
                self._append_to_store(key)
        return added

    def detach_store(self) -> None:
        """Stop appending (the live map stays on disk as it is; keyframes still waiting for the disk
        stay in memory only)."""
        self._pending = []
        if getattr(self, "_store", None) is not None:
            for key, (log, _) in list(self._local_refs.items()):
                if log is self._store:  # keep what is still needed in memory before the map closes
                    self._keyframes[key] = self.keyframe_with_local(key)
                    del self._local_refs[key]
            self._store.close()
        self._store = None

    @property
    def store_pending(self) -> int:
        """Keyframes made but not yet on disk (the live map's last writes failed; they are retried)."""
        return sum(kind == "kf" for kind, _ in self._pending)

    def _append_to_store(self, key: int) -> None:
        self._pending.append(("kf", key))
        self.flush_store()

    def _store_loops(self, loops: list[LoopClosure]) -> None:
        if self._store is not None:
            self._pending.append(("loops", list(loops)))
            self.flush_store()

    @property
    def optimized_poses(self) -> dict[PoseKey, MapPose]:
        """Optimised keyframe poses in the map frame: read by load_map/attach_store from maps of the map-frame
        session, and given by :meth:`store_optimized_poses`."""
        if "_optimized_poses" not in self.__dict__:  # kept here, not in detector.py's __init__: the map half's state
            self._optimized_poses: dict[PoseKey, MapPose] = {}
        return self._optimized_poses

    def keyframe_map_poses(self) -> dict[PoseKey, MapPose]:
        """Every keyframe's pose in the map frame with covariance (core/map/map_poses.py): optimised where
        known, else the odometry pose for keyframes of the map-frame session (the first map loaded)."""
        return map_poses_mod.map_poses(self._keyframes, self.optimized_poses, frame=self.__dict__.get("_map_frame"))

    def store_optimized_poses(self, poses: Mapping[PoseKey, MapPose], source_note: str = "live pose graph") -> None:
        """Take a pose graph's optimised poses (``source="optimized"``; they replace the earlier ones) and,
        with a live map attached, queue them behind the keyframes they name (written by :meth:`flush_store`;
        poses of keyframes the live map does not hold are left out there)."""
        fresh = dict(poses)
        map_poses_mod.check_optimized(fresh)
        self.optimized_poses.clear()
        self.optimized_poses.update(fresh)
        if self._store is not None:
            self._pending.append(("poses", (fresh, source_note)))
            self.flush_store()

    def _take_optimized(self, path: str | Path, loaded: Sequence[Keyframe]) -> dict[PoseKey, MapPose]:
        """The optimised poses of the map at ``path`` if it is in this detector's map frame (read before the
        keyframes are added, so a damaged table leaves the map unchanged)."""
        frame = map_poses_mod.frame_session(loaded)
        current = self.__dict__.get("_map_frame") or frame
        poses = map_poses_mod.read_optimized_poses(path, check_manifest=False)
        if poses and frame != current:
            logger.warning("map %s: its %d optimised poses are in the frame of session %s, not of this map's frame "
                           "session %s; they are not used (merge the maps and run vpr-ros map optimize)", path,
                           len(poses), frame, current)
            return {}
        return poses

    def _adopt_optimized(self, loaded: Sequence[Keyframe], poses: dict[PoseKey, MapPose], added: int) -> int:
        """After a map's keyframes were added: its session becomes the map frame if none was, its poses count."""
        if loaded and not self.__dict__.get("_map_frame"):
            self._map_frame = map_poses_mod.frame_session(loaded)
        self.optimized_poses.update(poses)
        return added

    def flush_store(self) -> int:
        """Write what waits for the live map, in order; returns how many keyframes still wait."""
        while self._store is not None and self._pending:
            kind, item = self._pending[0]
            try:
                if kind == "kf":
                    self._write_keyframe(item)
                elif kind == "poses":
                    map_poses_mod.store_in_log(self._store, *item)
                else:
                    self._store.append_loops(item)
            except (OSError, live_map.sqlite3.OperationalError) as exc:  # no space, I/O: retried later
                self.store_failures += 1
                if not self.store_error:
                    logger.error("map %s: could not write to the disk (%s); %d keyframes wait in memory and are "
                                 "retried", self._store.root, exc, self.store_pending)
                self.store_error = f"{type(exc).__name__}: {exc}"
                return self.store_pending
            except (MapStoreError, live_map.sqlite3.Error, ValueError, TypeError, OverflowError) as exc:
                self.store_refused += 1  # this item can never be stored; the rest must not wait behind it
                logger.error("map %s: cannot store this %s (%s); it stays in memory only",
                             self._store.root, {"kf": "keyframe", "loops": "loop"}.get(kind, "set of optimised poses"), exc)
            self._pending.pop(0)
            if not self._pending and self.store_error:
                logger.warning("map %s: the disk takes writes again; every waiting keyframe is on disk",
                               self._store.root)
                self.store_error = ""
        return self.store_pending

    def _write_keyframe(self, key: int) -> None:
        kf = self.keyframe_with_local(key)
        log_key = self._store.append(kf)
        # Local features and geometry now live on disk: RAM keeps the descriptor and metadata only.
        self._local_refs[key] = (self._store, log_key)
        if kf.local is not None or kf.geometry is not None:
            self._keyframes[key] = dataclasses.replace(self._keyframes[key], local=None, geometry=None)

    def save_map(self, path: str | Path, loops: Sequence[LoopClosure] = (), owner: DirLock | None = None) -> int:
        """Save every keyframe of the map (and ``loops``, accepted loops to keep) to ``path``; returns
        the keyframe count.

        ``path`` must be missing, an empty directory or a vpr_ros map no other writer owns (replaced
        crash-safely); anything else raises MapStoreError and is left untouched, as is the map in
        memory. ``owner``: this caller's ownership of ``path`` (core/map/ownership.py). With a live
        map attached this is a snapshot (copy) of it, or, while keyframes wait for its disk, a snapshot
        from memory that holds them; saving onto the live map itself writes what waits and raises
        MapStoreError if anything still does.
        """
        if self._store is not None:
            self.flush_store()
            target = Path(path).expanduser()
            if target.exists() and target.resolve() == self._store.root.resolve():
                if self._pending:
                    raise MapStoreError(f"{self.store_pending} keyframes are not in map {self._store.root} yet "
                                        f"({self.store_error}); they are in memory only — free disk space, or "
                                        "save a snapshot to a path on another disk with ~/save_map")
                return len(self._keyframes)  # every keyframe is already on disk
            if not self._pending:
                written = live_map_dirs.snapshot(self._store, target)
                logger.info("snapshot of %d keyframes written to %s", len(self._store), written)
                return len(self._store)
        keyframes = ([self.keyframe_with_local(k) for k in range(len(self._keyframes))] if self._local_refs
                     else self._keyframes)
        present = {map_poses_mod.pose_key(k) for k in keyframes}
        kept = {k: p for k, p in self.optimized_poses.items() if k in present}  # issue 21: optimised poses stay
        written = save_keyframes(path, keyframes, self.model_id, self.model.global_dim,
                                 index_writer=self._index.save, loops=loops, owner=owner,
                                 poses=(map_poses_mod.check_optimized(kept), "kept by save_map") if kept else None)
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
            optimized = self._take_optimized(path, log.keyframes)
            added = self._adopt_optimized(log.keyframes, optimized, self._add_loaded(path, log.keyframes, log))
            self._link_stored_loops(log.loops)
            return added
        _, loaded = load_keyframes(path, self.model_id, load_local=self.config.map.store_local)
        optimized = self._take_optimized(path, loaded)
        loops = _snapshot_loops(Path(path).expanduser())  # read first: a damaged table leaves the map unchanged
        added = self._adopt_optimized(loaded, optimized, self._add_loaded(path, loaded, None))
        self._link_stored_loops(loops)
        return added

    def _link_stored_loops(self, loops: Sequence[LoopClosure]) -> None:
        """A loaded map's stored loops make their keyframes one place for the consistency rule
        (``verify.consistency_by_place``), as loops published live do."""
        by_ident = {(kf.robot_id, kf.session_id, kf.id): kf for kf in self._keyframes}
        pairs = [(by_ident[q], by_ident[m]) for lp in loops
                 if (q := (lp.query_robot_id, lp.query_session_id, lp.query_id)) in by_ident
                 and (m := (lp.match_robot_id, lp.match_session_id, lp.match_id)) in by_ident]
        if pairs:
            logger.info("%d stored loops link their keyframes as same places", self._consistency.link(pairs))

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
                self._index.add_keyframes(keys, fresh)  # float descriptors, or hashes (core/hash_index.py)
            except InputError as exc:  # the store checks descriptors, so only a model/map mismatch gets here
                raise MapStoreError(f"map {path} cannot be indexed: {exc}") from None
        self._keyframes.extend(fresh)
        if log is not None:  # their local features (if map.store_local) and geometry are read from it
            self._local_refs.update({int(k): (log, lk) for k, lk in zip(keys, fresh_log_keys)})
        if self._store is not None and log is not self._store:
            for k in keys:
                self._append_to_store(int(k))
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
        """Give keyframe ``key``'s place a name or address, in memory and, with a live map attached,
        durably on disk when this returns.

        Raises MapStoreError for a label that cannot be stored (empty, too long) or not made durable
        (the keyframe is not on disk yet, the write failed: the message says why), and IndexError for
        a key the map does not hold; the map is unchanged then, in memory and on disk.
        """
        text_table.check_label(label)
        kf = self._keyframes[key]
        if self._store is not None:
            log_key = self._store.key_of(kf.robot_id, kf.session_id, kf.id)
            if log_key is None:
                raise MapStoreError(f"keyframe {kf.id} is not on disk yet ({self.store_error or 'its write failed'}); "
                                    "the label was not stored — try again when the map's disk has space")
            try:
                self._store.add_label(log_key, label)
            except (OSError, live_map.sqlite3.Error) as exc:
                self.store_failures += 1
                raise MapStoreError(f"the label could not be written to map {self._store.root} ({exc}); it was not "
                                    "stored — try again when the disk has space") from None
        kf.labels = (*kf.labels, label)

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
            self._index.add_keyframes(np.arange(start, start + len(fresh)), fresh)
            self._keyframes.extend(fresh)
            if self._store is not None:  # central mode shares whole keyframes: the shared map keeps them
                for key, kf in enumerate(fresh, start):
                    if kf.local is not None:
                        self._append_to_store(key)
        return len(fresh)


def _snapshot_loops(path: Path) -> list[LoopClosure]:
    """The loops table of the snapshot map at ``path`` (empty for maps saved before it existed)."""
    try:
        db = sqlite3.connect((path / "map.sqlite").absolute().as_uri() + "?mode=ro", uri=True)
        try:
            return loops_table.read_table(db, path)
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as exc:
        raise MapStoreError(f"map {path}: map.sqlite is damaged ({exc}); re-create it or load another map") from None
