"""LoopClosureDetector: frame -> descriptors -> keyframe? -> search -> temporal mask -> verify -> loops.

The detector owns the keyframe map (keyframes of any number of robots and sessions, e.g. a map of
an earlier session loaded from disk) and the FAISS index over it; saving, loading, the live map and
other robots' keyframes are its map half (core/detector_map.py). It never sees ROS types.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.map import live_map
from vpr_ros.core.config import Config
from vpr_ros.core.detector_map import KeyframeMapMixin
from vpr_ros.core.errors import ConfigError, InputError, StampOrderError
from vpr_ros.core.geometry.relative_pose import PoseEstimate
from vpr_ros.core.hash_index import as_code, keyframe_index
from vpr_ros.core.index import l2_normalise
from vpr_ros.core.geometry.keyframe_geometry import frame_geometry
from vpr_ros.core.keyframes import ConsistencyFilter, KeyframeSelector, is_excluded
from vpr_ros.core.geometry.loop_pose import LoopGeometry
from vpr_ros.core.map.thumbnails import encode_thumbnail
from vpr_ros.core.matching.mnn_batched import GemmFactory
from vpr_ros.core.geometry.odometry_gate import OdometryGate
from vpr_ros.core.text.place_text import TextReading
from vpr_ros.core.text.rule import TextReader, TextRule
from vpr_ros.core.types import Candidate, Descriptors, Frame, Keyframe, KeyframeGeometry, LoopClosure, Verification
from vpr_ros.core.matching.verification import Verifier

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
    # The text rule's counters of this step (core/text/rule.py COUNTERS); empty when text.rule is off.
    text_rule: dict[str, int] = dataclasses.field(default_factory=dict)


class LoopClosureDetector(KeyframeMapMixin):
    """Detects loop closures in a stream of frames of one robot and session (``config.detector``)."""

    def __init__(self, config: Config, model: Extractor, mnn_gemm: GemmFactory | None = None) -> None:
        """``mnn_gemm``: the screen of the MNN count (``models.backends.mnn_screen.configured_screen``
        for ``verify.mnn_screen``); it changes the speed, never the counts. None: numpy fp32."""
        if not config.map.store_local and config.verify.method != "global":
            raise ConfigError(f"verify.method={config.verify.method!r} compares dense local features of "
                              "stored keyframes, so map.store_local must be true (or use 'global')")
        self.config = config
        self.model = model
        self.model_id = model.model_id
        self._selector = KeyframeSelector(config.keyframes)
        self.mnn_gemm = mnn_gemm
        self._verifier = Verifier(config.verify, mnn_gemm)
        self._consistency = ConsistencyFilter(config.verify)
        self._geometry = LoopGeometry(config.geometry, model)
        self._gate = OdometryGate(config.odometry_gate)
        self._text_rule = TextRule(config.text, config.verify)
        # Reads the text of new keyframes in process_extracted (text.ocr=inline); set by whoever builds
        # the detector (the OCR model is optional and heavy), e.g. models.ocr.OcrReader.
        self.text_reader: TextReader | None = None
        # Fleet mode: fills the local features of remote candidates on demand (nodes/fleet.py).
        self.fetch_local: Callable[[Sequence[Candidate], Sequence[Keyframe]], None] | None = None
        # index.first_pass=hash: fills the float descriptors of remote keyframes known by their hash only.
        self.fetch_global: Callable[[Sequence[Keyframe]], None] | None = None
        self._store: live_map.MapLog | None = None  # the live map every new keyframe is appended to
        self.store_failures = 0  # failed writes to the live map (each retry counts)
        self.store_refused = 0   # keyframes or loops the live map cannot hold (kept in memory only)
        self.store_error = ""    # the last write error while keyframes wait for the disk, else ""
        self._pending: list[tuple[str, Any]] = []
        self._sessions = 0
        self.reset()

    # -- map -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every keyframe (own and loaded) and the temporal state."""
        self._keyframes: list[Keyframe] = []
        self._index = keyframe_index(self.model.global_dim, self.config.index, getattr(self.model, "hash_bits", 0),
                                     self._floats_of, self.model_id)
        self._selector.reset()
        self._consistency.reset()
        self._gate.reset()
        self._next_id = 0
        self._last_stamp_ns: int | None = None
        self._own_keys: list[int] = []
        # key -> (map, its key) of keyframes whose local features stay on disk (read per candidate)
        self._local_refs: dict[int, tuple[live_map.MapLog, int]] = {}
        self.detach_store()

    def new_session(self) -> str:
        """Start a new session of this robot (the node's ``~/reset``); returns its id.

        The temporal state (last stamp, keyframe selection, consistency, odometry gate) is cleared and
        new keyframes get the session id ``<detector.session_id>_r<N>``. Every keyframe in memory and in
        the live map is kept: the previous session's become an earlier session of this robot, so a
        revisit (a bag played again) matches them. Nothing on disk is deleted.
        """
        det = self.config.detector
        if not self._sessions:
            self._base_session = det.session_id
        base = self._base_session
        taken = {kf.session_id for kf in self._keyframes if kf.robot_id == det.robot_id}
        while True:
            self._sessions += 1
            session = f"{base}_r{self._sessions}"
            if session not in taken:
                break
        self.config = dataclasses.replace(self.config, detector=dataclasses.replace(det, session_id=session))
        self._selector.reset()
        self._consistency.reset(keep_places=True)
        self._gate.reset()
        self._last_stamp_ns = None
        self._own_keys = []
        return session

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
        text = None if self.text_reader is None else functools.partial(self.text_reader.read, frame.image)
        result = self.process_descriptors(frame.stamp_ns, desc.global_[0], local, frame.pose, geometry, thumbnail,
                                          text, None if desc.hash is None else desc.hash[0])
        result.timings_ms["extract"] = extract_ms
        result.timings_ms["total"] += extract_ms
        return result

    def process_descriptors(self, stamp_ns: int, global_: npt.ArrayLike, local: npt.ArrayLike | None,
                            pose: npt.ArrayLike | None = None,
                            geometry: KeyframeGeometry | Callable[[], KeyframeGeometry | None] | None = None,
                            thumbnail: Callable[[], bytes] | None = None,
                            text: Callable[[], tuple[TextReading, ...]] | None = None,
                            code: npt.ArrayLike | None = None) -> StepResult:
        """Run selection, retrieval and verification on precomputed descriptors of one frame.

        global_: (D,) float32; local: (h, w, c) float32 or None; pose: (4, 4) world_T_body or None;
        geometry: keypoints (+ 3-D points) of the frame for relative poses (``frame_geometry``), or a
        function computing them, called only when the frame becomes a keyframe; thumbnail: a function
        giving the keyframe's JPEG thumbnail (``map.thumbnails``), likewise called only for keyframes;
        text: a function reading the keyframe's text (OCR, ``Keyframe.text``), likewise; code: the frame's
        packed hash (B/8,) uint8 of a hashing model (``Keyframe.hash``; searched with index.first_pass=hash).
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
        readings = None
        if text is not None:
            t_ocr = time.perf_counter()
            readings = tuple(text())
            timings["ocr"] = (time.perf_counter() - t_ocr) * 1e3
        det = self.config.detector
        local_arr = None if local is None else np.ascontiguousarray(local, np.float32)
        kf = Keyframe(id=self._next_id, stamp_ns=stamp_ns, robot_id=det.robot_id,
                      session_id=det.session_id, global_=g,
                      local=local_arr if self.config.map.store_local else None, pose=pose_arr,
                      geometry=geometry, thumbnail=None if thumbnail is None else thumbnail(),
                      text=readings, hash=as_code(code))

        t1 = time.perf_counter()
        exclude = {k for k in self._own_keys[-self._exclusion_span(kf):] if is_excluded(kf, self._keyframes[k], det)}
        keys, sims = self._index.search(g, self.config.index.top_k, exclude, kf.hash)
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
        text_counts: dict[str, int] = {}
        if self.config.text.rule:
            verifications, text_counts = self._text_rule.apply(
                kf.text, verifications, [self._keyframes[v.candidate.keyframe_id].text for v in verifications])
        t3 = time.perf_counter()

        best = next((v for v in verifications if v.accepted), None)
        match = None if best is None else self._keyframes[best.candidate.keyframe_id]
        streak = self._consistency.update(kf, match)
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
                self._consistency.confirm()  # a published loop: its streak's matches become same-place links
        timings["geometry"] = (time.perf_counter() - t4) * 1e3

        key = len(self._keyframes)
        self._keyframes.append(kf)
        self._own_keys.append(key)
        self._index.add([key], g[None], None if kf.hash is None else kf.hash[None])
        self._selector.accept(kf)
        self._next_id += 1
        if self._store is not None:
            self._append_to_store(key)
            if loops:
                self._store_loops(loops)  # after the keyframe the loop names (one write queue, in order)
        timings["search"] = (t2 - t1) * 1e3
        timings["verify"] = (t3 - t2) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return StepResult(stamp_ns, kf, None, verifications, loops, timings, geometry_rejection=rejection,
                          odometry_rejected=gated, text_rule=text_counts)

    def _floats_of(self, keys: Sequence[int]) -> list[npt.NDArray[np.float32] | None]:
        """Float descriptors of keyframes ``keys`` for the hash first pass (core/hash_index.py): other robots'
        keyframes known by their hash only are fetched first (``fetch_global``); None where still unknown."""
        kfs = [self._keyframes[k] for k in keys]
        missing = [kf for kf in kfs if np.size(kf.global_) == 0]
        if missing and self.fetch_global is not None:
            self.fetch_global(missing)  # fills kf.global_ of those their owners answered for
        return [kf.global_ if np.size(kf.global_) else None for kf in kfs]

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
