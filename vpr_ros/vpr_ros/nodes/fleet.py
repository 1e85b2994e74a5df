"""Decentralised multi-robot loop closure over ROS 2 (``fleet.enabled``; docs/fleet.md).

Every robot's ``loop_closure_node`` does the same four things, with no central process:

1. broadcasts its keyframes' float16 global descriptors in batches on ``<prefix>/keyframes``
   (vpr_ros_msgs/KeyframeDescriptors), within a byte budget (token bucket);
2. indexes the other robots' batches as remote keyframes (no local features); the topic is
   reliable and transient_local with a bounded depth, so a robot that joins or rejoins late gets
   the history of every robot still running;
3. when a remote keyframe becomes a candidate of a new own keyframe, fetches its dense local
   features from the owner (vpr_ros_msgs/GetKeyframeFeatures, the service named in the batch)
   and verifies locally, exactly as for its own keyframes;
4. publishes the inter-robot loop on its ``loop_closures`` and on ``<prefix>/loops``; the matched
   robot republishes it on its own ``loop_closures``, so both robots hold the merged constraint.

A batch or request from another model (or descriptor dimension) is refused, counted and logged.
Callbacks only queue: batches are indexed by the processing thread (:meth:`FleetLink.drain`) under
the detector lock, and feature requests are answered without that lock.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from vpr_ros_msgs.msg import KeyframeDescriptors, KeyframeGeometry
from vpr_ros_msgs.msg import LoopClosure as LoopClosureMsg
from vpr_ros_msgs.srv import GetKeyframeFeatures

from vpr_ros.core.fleet.bandwidth import TokenBucket
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import FleetError, VprError
from vpr_ros.core.fleet.feature_cache import FetchedFeatures
from vpr_ros.core.keyframes import find_key
from vpr_ros.core.fleet.remote_keyframes import (WIRE_ENCODING, DescriptorBatch, check_model, decode_batch,
                                           decode_geometry, decode_locals, encode_batch, encode_geometry,
                                           encode_locals)
from vpr_ros.core.types import Candidate, Keyframe, LoopClosure
from vpr_ros.nodes import conversions as conv
from vpr_ros.nodes.settings import NodeSettings

__all__ = ["Fleet", "FleetLink", "FLEET_COUNTERS", "history_qos"]

#: Counters every fleet mode reports in diagnostics (``fleet.<name>``).
FLEET_COUNTERS = ("keyframes_sent", "batches_sent", "bytes_sent", "bytes_sent.descriptors",
                  "bytes_sent.features", "bytes_sent.loops", "remote_keyframes", "refused.model_mismatch",
                  "refused.malformed", "features_requested", "features_received", "fetch_failures",
                  "bytes_received.features", "inter_robot_loops.found", "inter_robot_loops.received")


class Fleet(Protocol):
    """What ``loop_closure_node`` calls; FleetLink (DDS) and the central node's in-process map do it."""

    def drain(self) -> None:
        """Index what other robots sent (processing thread, takes the detector lock)."""

    def keyframe(self, kf: Keyframe) -> None:
        """A new own keyframe (processing thread, detector lock held)."""

    def loops(self, loops: Sequence[LoopClosure]) -> None:
        """Loops just published on this robot's ``loop_closures``."""

    def diagnostics(self) -> dict[str, str]:
        """Key/values added to the node's diagnostics."""


def history_qos(depth: int) -> QoSProfile:
    """Reliable, transient_local, bounded: late joiners get up to ``depth`` messages per publisher."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def batch_to_msg(batch: DescriptorBatch, stamp: Any) -> KeyframeDescriptors:
    msg = KeyframeDescriptors(robot_id=batch.robot_id, session_id=batch.session_id, descriptor_model=batch.model_id,
                              descriptor_dim=batch.dim, features_service=batch.features_service,
                              keyframe_ids=batch.ids.tolist(), encoding=batch.encoding,
                              stamps=[conv.ns_to_stamp(int(t)) for t in batch.stamps_ns])
    msg.header.stamp = stamp
    msg.descriptors = batch.descriptors
    if batch.poses is not None:
        msg.poses = batch.poses.reshape(-1).tolist()
    return msg


def msg_to_batch(msg: KeyframeDescriptors) -> DescriptorBatch:
    poses = np.asarray(msg.poses, np.float64)
    return DescriptorBatch(msg.robot_id, msg.session_id, msg.descriptor_model, int(msg.descriptor_dim),
                           np.asarray(msg.keyframe_ids, np.uint64),
                           np.array([conv.stamp_to_ns(s) for s in msg.stamps], np.int64), bytes(msg.descriptors),
                           poses.reshape(-1, 4, 4) if poses.size else None, msg.features_service, msg.encoding)


_GEOMETRY_FIELDS = ("valid", "image_height", "image_width", "keypoints", "descriptor_type", "descriptor_size",
                    "descriptors", "points3d", "k", "d", "distortion_model", "t_body_cam")


def geometry_to_msg(fields: dict[str, Any]) -> KeyframeGeometry:
    msg = KeyframeGeometry()
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def msg_to_geometry_fields(msg: KeyframeGeometry) -> dict[str, Any]:
    return {name: getattr(msg, name) for name in _GEOMETRY_FIELDS}


class FleetLink:
    """One robot's side of the decentralised fleet (see the module docstring)."""

    def __init__(self, node: Node, detector: LoopClosureDetector, lock: threading.Lock, settings: NodeSettings,
                 count: Callable[[str, int], None], warn: Callable[[str, str], None],
                 loop_pub: Any, map_frame: str) -> None:
        self._node, self._detector, self._lock = node, detector, lock
        self._settings, self._warn, self._count = settings, warn, count
        self._loop_pub, self._map_frame = loop_pub, map_frame
        self.robot_id = detector.config.detector.robot_id
        prefix = settings.fleet_topic_prefix.rstrip("/")
        rate = settings.fleet_bandwidth_bytes_per_sec
        self._bucket = TokenBucket(rate, rate, time.monotonic())  # 1 s of burst
        self._outbox: collections.deque[Keyframe] = collections.deque()
        self._inbox: collections.deque[DescriptorBatch] = collections.deque()
        # (session, id) -> detector key of our own keyframes, for feature answers: the features are read
        # through the detector (from the live map on disk), never pinned in RAM here.
        self._own: dict[tuple[str, int], int] = {}
        self._fetched = FetchedFeatures(int(settings.fleet_feature_cache_mb * 1e6))
        self._servers: dict[tuple[str, str], str] = {}   # (robot, session) -> its features service
        self._clients: dict[str, Any] = {}
        self._refused: set[tuple[str, str]] = set()
        self._mutex = threading.Lock()
        self._bytes_sent = 0
        self._keyframes_sent = 0
        self.features_service = node.resolve_service_name("fleet/get_features")
        qos = history_qos(settings.fleet_history_depth)
        self._kf_pub = node.create_publisher(KeyframeDescriptors, f"{prefix}/keyframes", qos)
        node.create_subscription(KeyframeDescriptors, f"{prefix}/keyframes", self._on_batch, qos)
        self._fleet_loop_pub = node.create_publisher(LoopClosureMsg, f"{prefix}/loops", history_qos(100))
        node.create_subscription(LoopClosureMsg, f"{prefix}/loops", self._on_fleet_loop, history_qos(100))
        node.create_service(GetKeyframeFeatures, "fleet/get_features", self._on_get_features)
        node.create_timer(0.05, self._flush)
        detector.fetch_local = self.fetch_local

    # -- sending ----------------------------------------------------------------------------
    def keyframe(self, kf: Keyframe) -> None:
        """Queue our new keyframe ``kf`` for broadcast (call right after the detector made it)."""
        key = find_key(self._detector.keyframes, kf.robot_id, kf.session_id, kf.id)  # the last one, usually
        with self._mutex:
            if key is not None:
                self._own[(kf.session_id, kf.id)] = key
            self._outbox.append(kf)

    def _flush(self) -> None:
        """Timer: send queued keyframes in batches while the budget allows."""
        while True:
            with self._mutex:
                kfs = list(self._outbox)[:self._settings.fleet_batch_size]
            if not kfs:
                return
            batch = encode_batch(kfs, self._detector.model_id, self._detector.model.global_dim, self.features_service)
            msg = batch_to_msg(batch, self._node.get_clock().now().to_msg())
            size = len(serialize_message(msg))  # the bytes DDS carries (CDR), not an estimate
            if not self._bucket.try_spend(size, time.monotonic()):
                return  # over budget: the keyframes wait in the outbox for the next tick
            self._kf_pub.publish(msg)
            with self._mutex:
                for _ in kfs:
                    self._outbox.popleft()
            self._count("fleet.batches_sent", 1)
            self._count("fleet.keyframes_sent", len(kfs))
            with self._mutex:
                self._keyframes_sent += len(kfs)
            self._sent("descriptors", size)

    def _sent(self, kind: str, size: int) -> None:
        self._count(f"fleet.bytes_sent.{kind}", size)
        self._count("fleet.bytes_sent", size)
        with self._mutex:
            self._bytes_sent += size

    def loops(self, loops: Sequence[LoopClosure]) -> None:
        for loop in loops:
            if loop.match_robot_id != loop.query_robot_id:  # the matched robot gets it too
                msg = conv.loop_closure_to_msg(loop, self._map_frame)
                self._fleet_loop_pub.publish(msg)
                self._count("fleet.inter_robot_loops.found", 1)
                self._sent("loops", len(serialize_message(msg)))

    # -- receiving ----------------------------------------------------------------------------
    def _on_batch(self, msg: KeyframeDescriptors) -> None:
        if msg.robot_id == self.robot_id and msg.session_id == self._detector.config.detector.session_id:
            return  # our own broadcast
        try:
            batch = msg_to_batch(msg)
            check_model(batch.model_id, batch.dim, self._detector.model_id, self._detector.model.global_dim,
                        f"robot {batch.robot_id!r}")
        except (FleetError, ValueError) as exc:
            self._refuse(msg.robot_id, msg.session_id, "model_mismatch" if isinstance(exc, FleetError)
                         else "malformed", str(exc))
            return
        if batch.features_service and batch.features_service not in self._clients:
            # Created here, on the executor thread; the processing thread only uses them.
            self._clients[batch.features_service] = self._node.create_client(GetKeyframeFeatures,
                                                                             batch.features_service)
        with self._mutex:
            self._servers[(batch.robot_id, batch.session_id)] = batch.features_service
            self._inbox.append(batch)

    def _refuse(self, robot: str, session: str, kind: str, text: str) -> None:
        self._count(f"fleet.refused.{kind}", 1)
        if (robot, session) not in self._refused:  # logged once per peer, counted every time
            self._refused.add((robot, session))
            self._node.get_logger().error(f"fleet: refused keyframes of robot {robot!r}: {text}")
        else:
            self._warn(f"fleet_{kind}", f"fleet: refused keyframes of robot {robot!r} ({kind})")

    def drain(self) -> None:
        with self._mutex:
            batches = list(self._inbox)
            self._inbox.clear()
        for batch in batches:
            try:
                keyframes = decode_batch(batch, self._detector.model_id, self._detector.model.global_dim)
            except FleetError as exc:
                self._refuse(batch.robot_id, batch.session_id, "malformed", str(exc))
                continue
            try:
                with self._lock:
                    added = self._detector.add_remote_keyframes(keyframes)
            except VprError as exc:  # runs on the processing thread: a bad batch must not end it
                self._refuse(batch.robot_id, batch.session_id, "malformed", str(exc))
                continue
            self._count("fleet.remote_keyframes", added)

    def _on_fleet_loop(self, msg: LoopClosureMsg) -> None:
        if msg.match_robot_id == self.robot_id and msg.query_robot_id != self.robot_id:
            self._loop_pub.publish(msg)
            self._count("fleet.inter_robot_loops.received", 1)
            self._count("loop_closures", 1)

    # -- local features on demand ----------------------------------------------------------------
    def fetch_local(self, candidates: Sequence[Candidate], keyframes: Sequence[Keyframe]) -> None:
        """Detector hook (processing thread): attach the local features of promising remote candidates."""
        min_sim = self._detector.config.verify.min_global_similarity
        groups: dict[tuple[str, str], list[Keyframe]] = collections.defaultdict(list)
        for c, kf in zip(candidates, keyframes):
            if c.similarity >= min_sim:  # below it verification rejects anyway: do not pay for features
                groups[(kf.robot_id, kf.session_id)].append(kf)
        for (robot, session), kfs in groups.items():
            self._count("fleet.features_requested", len(kfs))
            try:
                got = self._request(robot, session, [kf.id for kf in kfs])
            except FleetError as exc:
                self._count("fleet.fetch_failures", len(kfs))
                self._warn("fleet_fetch", f"fleet: no local features from robot {robot!r}: {exc}")
                continue
            for kf in kfs:
                if kf.id in got:  # kept (up to fleet.feature_cache_mb): later queries verify without asking
                    kf.local, geometry = got[kf.id]
                    kf.geometry = kf.geometry or geometry  # keypoints give the loop a relative pose
                    dropped = self._fetched.add(kf)
                    if dropped:
                        self._count("fleet.features_evicted", len(dropped))
            self._count("fleet.features_received", sum(kf.id in got for kf in kfs))
            self._count("fleet.fetch_failures", sum(kf.id not in got for kf in kfs))

    def _request(self, robot: str, session: str, ids: list[int]) -> dict[int, tuple[Any, Any]]:
        """id -> (local (h, w, c) float32, KeyframeGeometry or None) of the keyframes the owner holds."""
        with self._mutex:
            service = self._servers.get((robot, session), "")
        client = self._clients.get(service)
        timeout = self._settings.fleet_request_timeout_sec
        if client is None or not client.wait_for_service(timeout_sec=timeout):
            raise FleetError(f"its features service {service or '(unknown)'} is not available; is it running?")
        done = threading.Event()
        future = client.call_async(GetKeyframeFeatures.Request(
            robot_id=robot, session_id=session, descriptor_model=self._detector.model_id, keyframe_ids=ids))
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            raise FleetError(f"no answer from {service} within {timeout:g} s (fleet.request_timeout_sec)")
        response = future.result()
        if not response.success:
            raise FleetError(response.message)
        self._count("fleet.bytes_received.features", len(response.local_features))
        if response.encoding != WIRE_ENCODING:
            raise FleetError(f"features encoded as {response.encoding!r}; only {WIRE_ENCODING!r} is known")
        ids = [int(i) for i in response.keyframe_ids]
        locals_ = decode_locals(ids, list(response.local_shapes), bytes(response.local_features))
        if response.geometries and len(response.geometries) != len(ids):
            raise FleetError(f"{len(response.geometries)} keyframe geometries for {len(ids)} keyframes")
        geometries = [decode_geometry(msg_to_geometry_fields(g)) for g in response.geometries] or [None] * len(ids)
        return {i: (locals_[i], g) for i, g in zip(ids, geometries)}

    def _on_get_features(self, request: GetKeyframeFeatures.Request,
                         response: GetKeyframeFeatures.Response) -> GetKeyframeFeatures.Response:
        response.encoding = WIRE_ENCODING
        if request.descriptor_model != self._detector.model_id:
            self._count("fleet.refused.model_mismatch", 1)
            response.success, response.message = False, (
                f"this robot uses model {self._detector.model_id!r}, the request {request.descriptor_model!r}; "
                "run the same model on every robot")
            return response
        with self._mutex:
            keys = [self._own.get((request.session_id, int(i))) for i in request.keyframe_ids]
        kfs = [self._own_keyframe(key, request.session_id, int(i)) for key, i in zip(keys, request.keyframe_ids)]
        kept = [kf for kf in kfs if kf is not None and kf.local is not None and request.robot_id == self.robot_id]
        ids, shapes, data = encode_locals(kept)
        response.keyframe_ids, response.local_shapes, response.local_features = ids, shapes, data
        response.geometries = [geometry_to_msg(encode_geometry(kf.geometry)) for kf in kept]
        response.success = True
        response.message = f"{len(ids)} of {len(request.keyframe_ids)} keyframes"
        # Answered at once (a peer's verification waits); the debt delays our next broadcasts.
        size = len(serialize_message(response))
        self._bucket.spend(size, time.monotonic())
        self._sent("features", size)
        return response

    def _own_keyframe(self, key: int | None, session: str, kf_id: int) -> Keyframe | None:
        """Our keyframe ``key`` with its local features (read from the live map if they live there);
        None if the map no longer holds it there (reset) or it cannot be read (logged, counted)."""
        if key is None:
            return None
        try:
            kf = self._detector.keyframe_with_local(key)
        except (IndexError, VprError) as exc:
            self._count("fleet.answer_failures", 1)
            self._warn("fleet_answer", f"fleet: cannot answer for keyframe {kf_id}: {exc}")
            return None
        return kf if (kf.session_id, kf.id) == (session, kf_id) else None

    def diagnostics(self) -> dict[str, str]:
        with self._mutex:
            outbox = len(self._outbox)
            per_kf = self._bytes_sent / self._keyframes_sent if self._keyframes_sent else 0.0
        # Everything sent (descriptors, feature answers, loops) over the keyframes broadcast.
        return {"fleet.bytes_per_keyframe": f"{per_kf:.1f}", "fleet.outbox": str(outbox),
                "fleet.peers": str(len({r for r, _ in self._servers})),
                "fleet.features_cached_mb": f"{self._fetched.bytes / 1e6:.1f}",
                "fleet.budget_bytes_per_sec": str(self._settings.fleet_bandwidth_bytes_per_sec)}
