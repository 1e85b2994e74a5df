"""LoopClosureDetector: frame -> descriptors -> keyframe? -> search -> temporal mask -> verify -> loops.

The detector owns the keyframe map (keyframes of any number of robots and sessions, e.g. a map of
an earlier session loaded from disk) and the FAISS index over it. It never sees ROS types.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import Config
from vpr_ros.core.errors import ConfigError, InputError, MapStoreError, StampOrderError
from vpr_ros.core.geometry import PoseEstimate
from vpr_ros.core.index import KeyframeIndex, l2_normalise
from vpr_ros.core.keyframe_geometry import frame_geometry
from vpr_ros.core.keyframes import ConsistencyFilter, KeyframeSelector, is_excluded
from vpr_ros.core import live_map_dirs, map_log
from vpr_ros.core.loop_geometry import LoopGeometry
from vpr_ros.core.map_thumbnails import encode_thumbnail
from vpr_ros.core.odometry_gate import OdometryGate
from vpr_ros.core.store import load_keyframes, save_keyframes
from vpr_ros.core.types import Candidate, Descriptors, Frame, Keyframe, KeyframeGeometry, LoopClosure, Verification
from vpr_ros.core.verification import Verifier

__all__ = ["Extractor", "StepResult", "LoopClosureDetector"]

logger = logging.getLogger(__name__)


class Extractor(Protocol):
    """What the detector needs from a descriptor model (``vpr_ros.models.load_model`` gives one)."""

    model_id: str
    global_dim: int

    def extract(self, images: Sequence[npt.NDArray[np.uint8]]) -> Descriptors:
        """(H, W, 3) uint8 RGB images -> Descriptors for the batch."""


@dataclasses.dataclass
class StepResult:
    """What happened to one frame."""

    stamp_ns: int
    keyframe: Keyframe | None
    skipped_reason: str | None
    verifications: list[Verification]
    loop_closures: list[LoopClosure]
    timings_ms: dict[str, float]
    # Why the accepted loop got no valid pose (geometry.REJECTION_REASONS), None if it did or none ran.
    geometry_rejection: str | None = None
    odometry_rejected: int = 0  # candidates of the own stream dropped by the odometry gate


class LoopClosureDetector:
    """Detects loop closures in a stream of frames of one robot and session (``config.detector``)."""

    def __init__(self, config: Config, model: Extractor) -> None:
        if not config.map.store_local and config.verify.method != "global":
            raise ConfigError(f"verify.method={config.verify.method!r} compares dense local features of "
                              "stored keyframes, so map.store_local must be true (or use 'global')")
        self.config = config
        self.model = model
        self.model_id = model.model_id
        self._selector = KeyframeSelector(config.keyframes)
        self._verifier = Verifier(config.verify)
        self._consistency = ConsistencyFilter(config.verify)
        self._geometry = LoopGeometry(config.geometry, model)
        self._gate = OdometryGate(config.odometry_gate)
        # Fleet mode: fills the local features of remote candidates on demand (nodes/fleet.py).
        self.fetch_local: Callable[[Sequence[Candidate], Sequence[Keyframe]], None] | None = None
        self._store: map_log.MapLog | None = None  # the live map every new keyframe is appended to
        self.store_failures = 0
        self.reset()

    # -- map -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every keyframe (own and loaded) and the temporal state."""
        self._keyframes: list[Keyframe] = []
        self._index = KeyframeIndex(self.model.global_dim, self.config.index)
        self._selector.reset()
        self._consistency.reset()
        self._gate.reset()
        self._next_id = 0
        self._last_stamp_ns: int | None = None
        self._own_keys: list[int] = []
        # key -> (map, its key) of keyframes whose local features stay on disk (read per candidate)
        self._local_refs: dict[int, tuple[map_log.MapLog, int]] = {}
        self.detach_store()

    @property
    def num_keyframes(self) -> int:
        return len(self._keyframes)

    @property
    def keyframes(self) -> Sequence[Keyframe]:
        return tuple(self._keyframes)

    @property
    def odometry_gate(self) -> OdometryGate:
        """The gate with the odometer of this stream's keyframes (keys = map keys), e.g. to test a
        measured relative pose after verification with ``odometry_gate.check(q, m, T, cov)``."""
        return self._gate

    def keyframe(self, key: int) -> Keyframe:
        """Keyframe by its map key (position in the map; equals ``id`` for a single stream)."""
        return self._keyframes[key]

    def local_features(self, key: int) -> npt.NDArray[np.float32] | None:
        """(h, w, c) float32 local features of keyframe ``key``: from memory, or read from its map on disk."""
        kf = self._keyframes[key]
        if kf.local is not None or key not in self._local_refs:
            return kf.local
        log, log_key = self._local_refs[key]
        return log.read_local(log_key)

    def keyframe_with_local(self, key: int) -> Keyframe:
        """Keyframe ``key`` with its local features (a copy with them read from disk where they live there)."""
        kf = self._keyframes[key]
        return kf if kf.local is not None else dataclasses.replace(kf, local=self.local_features(key))

    @property
    def store(self) -> map_log.MapLog | None:
        return self._store

    def attach_store(self, path: str | Path, fresh: bool = False) -> int:
        """Append every keyframe, from now on as it is made, to the live map at ``path`` (core/map_log.py).

        A live map already there (same model, weights and preprocessing, else MapStoreError) is
        loaded first and continued; a missing path, an empty directory or a snapshot map is replaced
        by a new live map. Keyframes in memory are appended, then their local features are dropped
        from RAM and read from the map per candidate. Returns the number of keyframes loaded.
        ``fresh``: start a new live map even where one exists (after a reset).
        """
        self.detach_store()
        log = live_map_dirs.open_for_append(path, map_log.fingerprint(self.model), self.model.global_dim,
                                      self.config.map.local_encoding, fresh=fresh)
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
        except (map_log.MapStoreError, OSError, map_log.sqlite3.Error) as exc:
            # The keyframe stays in memory (with its local features): detection goes on without the disk.
            self.store_failures += 1
            logger.error("could not append keyframe %d to map %s: %s", kf.id, self._store.root, exc)
            return
        if kf.local is not None:
            self._local_refs[key] = (self._store, log_key)
            self._keyframes[key] = dataclasses.replace(self._keyframes[key], local=None)

    def _store_loops(self, loops: list[LoopClosure]) -> None:
        if self._store is not None:
            try:
                self._store.append_loops(loops)
            except (map_log.MapStoreError, OSError, map_log.sqlite3.Error) as exc:
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
        if map_log.is_live_map(path):
            log = map_log.MapLog(path, map_log.fingerprint(self.model))
            return self._add_loaded(path, log.keyframes, log)
        _, loaded = load_keyframes(path, self.model_id, load_local=self.config.map.store_local)
        return self._add_loaded(path, loaded, None)

    def _add_loaded(self, path: str | Path, loaded: Sequence[Keyframe], log: map_log.MapLog | None) -> int:
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
        if log is not None and self.config.map.store_local:
            self._local_refs.update({int(k): (log, lk) for k, lk in zip(keys, fresh_log_keys)
                                     if log.locations[lk] is not None})
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

    def _is_own(self, kf: Keyframe) -> bool:
        det = self.config.detector
        return kf.robot_id == det.robot_id and kf.session_id == det.session_id

    # -- processing ------------------------------------------------------------------------
    def process(self, frame: Frame) -> StepResult:
        """Run the whole pipeline on one camera frame."""
        self.check_frame(frame)  # before the model runs on a frame we would reject
        t0 = time.perf_counter()
        desc = self.model.extract([frame.image])
        return self.process_extracted(frame, desc, (time.perf_counter() - t0) * 1e3)

    def check_frame(self, frame: Frame) -> None:
        """The checks :meth:`process` makes before the model runs (InputError, StampOrderError)."""
        if frame.image is None or frame.image.size == 0:
            raise InputError("frame image is empty; the camera sent a zero-size image")
        self._check_stamp(int(frame.stamp_ns))

    def process_extracted(self, frame: Frame, desc: Descriptors, extract_ms: float = 0.0) -> StepResult:
        """:meth:`process` after the model: ``desc`` holds the model's output for ``frame`` (batch of 1),
        computed here or ahead of time (core/pipeline.py)."""
        local = None if desc.local is None else desc.local[0]
        # Keypoints (+ depth) and the thumbnail only for frames that become keyframes.
        geometry = None if frame.camera is None else functools.partial(frame_geometry, frame, self.config.geometry)
        thumbnail = (functools.partial(encode_thumbnail, frame.image, self.config.map.thumbnail_px)
                     if self.config.map.thumbnails else None)
        result = self.process_descriptors(frame.stamp_ns, desc.global_[0], local, frame.pose, geometry, thumbnail)
        result.timings_ms["extract"] = extract_ms
        result.timings_ms["total"] += extract_ms
        return result

    def process_descriptors(self, stamp_ns: int, global_: npt.ArrayLike, local: npt.ArrayLike | None,
                            pose: npt.ArrayLike | None = None,
                            geometry: KeyframeGeometry | Callable[[], KeyframeGeometry | None] | None = None,
                            thumbnail: Callable[[], bytes] | None = None) -> StepResult:
        """Run selection, retrieval and verification on precomputed descriptors of one frame.

        global_: (D,) float32; local: (h, w, c) float32 or None; pose: (4, 4) world_T_body or None;
        geometry: keypoints (+ 3-D points) of the frame for relative poses (``frame_geometry``), or a
        function computing them, called only when the frame becomes a keyframe; thumbnail: a function
        giving the keyframe's JPEG thumbnail (``map.thumbnails``), likewise called only for keyframes.
        """
        t0 = time.perf_counter()
        stamp_ns = int(stamp_ns)
        self._check_stamp(stamp_ns)
        g = l2_normalise(global_)[0]
        pose_arr = None
        if pose is not None:
            pose_arr = np.asarray(pose, np.float64)
            if pose_arr.shape != (4, 4) or not np.all(np.isfinite(pose_arr)):
                raise InputError("pose must be a finite (4, 4) matrix; the odometry contained NaN or inf")
        self._last_stamp_ns = stamp_ns
        timings = {"extract": 0.0, "select": 0.0, "search": 0.0, "verify": 0.0}
        reason = self._selector.check(stamp_ns, g, pose_arr)
        timings["select"] = (time.perf_counter() - t0) * 1e3
        if reason is not None:
            timings["total"] = timings["select"]
            return StepResult(stamp_ns, None, reason, [], [], timings)
        if callable(geometry):
            t_kp = time.perf_counter()
            geometry = geometry()
            timings["keypoints"] = (time.perf_counter() - t_kp) * 1e3
        det = self.config.detector
        local_arr = None if local is None else np.ascontiguousarray(local, np.float32)
        kf = Keyframe(id=self._next_id, stamp_ns=stamp_ns, robot_id=det.robot_id,
                      session_id=det.session_id, global_=g,
                      local=local_arr if self.config.map.store_local else None, pose=pose_arr,
                      geometry=geometry, thumbnail=None if thumbnail is None else thumbnail())

        t1 = time.perf_counter()
        exclude = {k for k in self._own_keys[-self._exclusion_span(kf):] if is_excluded(kf, self._keyframes[k], det)}
        keys, sims = self._index.search(g, self.config.index.top_k, exclude)
        keys, sims, gated = self._odometry_gate(len(self._keyframes), pose_arr, keys, sims)
        t2 = time.perf_counter()
        candidates = [Candidate(int(key), float(sim), rank) for rank, (key, sim) in enumerate(zip(keys, sims))]
        remote = [c for c in candidates if self._keyframes[c.keyframe_id].local is None]
        if remote and self.fetch_local is not None and self.config.verify.method != "global":
            self.fetch_local(remote, [self._keyframes[c.keyframe_id] for c in remote])
            # A candidate whose features could not be fetched (peer gone, over time) is not verifiable.
            candidates = [c for c in candidates if self._keyframes[c.keyframe_id].local is not None]
        verifications = self._verifier.verify_many(  # one blocked MNN pass over all K candidates
            local_arr, candidates, [self.local_features(c.keyframe_id) for c in candidates])
        verifications.sort(key=lambda v: (-v.score, v.candidate.rank))
        t3 = time.perf_counter()

        best = next((v for v in verifications if v.accepted), None)
        match = None if best is None else self._keyframes[best.candidate.keyframe_id]
        streak = self._consistency.update(kf.id, match)
        loops = []
        rejection = None
        t4 = time.perf_counter()
        if best is not None and streak >= self.config.verify.temporal_consistency:
            estimate = self._geometry.estimate(kf, self.keyframe_with_local(best.candidate.keyframe_id))
            loop = self._geometry.apply(self._loop(kf, match, best, streak), estimate)
            rejection = estimate.reason if estimate is not None and not estimate.valid else None
            if loop is not None and not self._pose_agrees_with_odometry(best.candidate.keyframe_id, match, estimate):
                loop, gated = None, gated + 1
            if loop is not None:
                loops.append(loop)
                self._store_loops(loops)
        timings["geometry"] = (time.perf_counter() - t4) * 1e3

        key = len(self._keyframes)
        self._keyframes.append(kf)
        self._own_keys.append(key)
        self._index.add([key], g[None])
        self._selector.accept(kf)
        self._next_id += 1
        if self._store is not None:
            self._append_to_store(key, kf)
        timings["search"] = (t2 - t1) * 1e3
        timings["verify"] = (t3 - t2) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return StepResult(stamp_ns, kf, None, verifications, loops, timings, geometry_rejection=rejection,
                          odometry_rejected=gated)

    def _pose_agrees_with_odometry(self, match_key: int, match: Keyframe, estimate: PoseEstimate | None) -> bool:
        """The measured relative pose of an own-stream loop against odometry drift (the second gate test,
        with the pose's covariance; the first, before verification, only had the positions)."""
        if (not self.config.odometry_gate.enabled or estimate is None or not estimate.valid
                or not self._is_own(match)):
            return True
        decision = self._gate.check(len(self._keyframes), match_key, estimate.T_match_query,
                                    estimate.covariance, estimate.scale_known)
        return decision is None or decision.accepted

    def _odometry_gate(self, key: int, pose: npt.NDArray[np.float64] | None, keys: npt.NDArray[np.int64],
                       sims: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], int]:
        """Drop own-stream candidates farther from the new keyframe ``key`` than odometry drift allows."""
        if not self.config.odometry_gate.enabled:
            return keys, sims, 0
        self._gate.add(key, pose)
        keep = np.ones(len(keys), bool)
        for i, k in enumerate(keys):
            if self._is_own(self._keyframes[k]):  # other robots/sessions share no odometry with us
                decision = self._gate.check(key, int(k))
                keep[i] = decision is None or decision.accepted
        return keys[keep], sims[keep], int((~keep).sum())

    def _check_stamp(self, stamp_ns: int) -> None:
        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            raise StampOrderError(
                f"frame stamp {stamp_ns} ns is older than the previous frame ({self._last_stamp_ns} ns); "
                "time went backwards — reset the detector (node: ~/reset) after a bag loop or clock jump")

    def _exclusion_span(self, kf: Keyframe) -> int:
        """How many of the newest own keyframes can possibly be excluded (bounds the mask's cost)."""
        gap_ns = round(self.config.detector.min_loop_gap_sec * 1e9)
        n = 0
        for key in reversed(self._own_keys):
            if kf.stamp_ns - self._keyframes[key].stamp_ns >= gap_ns and n >= self.config.detector.exclude_last_n:
                break
            n += 1
        return n

    def _loop(self, kf: Keyframe, match: Keyframe, v: Verification, streak: int) -> LoopClosure:
        return LoopClosure(
            query_id=kf.id, query_stamp_ns=kf.stamp_ns, query_robot_id=kf.robot_id,
            query_session_id=kf.session_id, match_id=match.id, match_stamp_ns=match.stamp_ns,
            match_robot_id=match.robot_id, match_session_id=match.session_id,
            global_similarity=v.candidate.similarity, retrieval_rank=v.candidate.rank,
            verification_method=v.method, local_matches=v.local_matches,
            local_features=v.local_features, geometric_inliers=v.geometric_inliers, score=v.score,
            consistent_keyframes=streak, descriptor_model=self.model_id,
            descriptor_dim=self.model.global_dim)
