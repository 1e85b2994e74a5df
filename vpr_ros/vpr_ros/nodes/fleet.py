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

With a hashing model the batches also carry 64-byte hashes, or only them (``fleet.send_descriptors:
hash``); a robot searching hashes first fetches the float descriptors of its Hamming candidates on
demand (nodes/fleet_floats.py).

Every field of what a peer sends is checked before use (core/fleet/validation.py): a batch, a
feature answer or a fleet loop that fails is refused, counted as ``fleet.refused.<reason>`` and
logged (once per peer), and never raises out of a callback. One peer robot and all peers together
may add keyframes up to a memory budget (core/fleet/budget.py). Callbacks only queue: batches are indexed by the processing thread (:meth:`FleetLink.drain`) under
the detector lock, and feature requests are answered without that lock.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Protocol, Sequence

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from vpr_ros_msgs.msg import KeyframeDescriptors
from vpr_ros_msgs.msg import LoopClosure as LoopClosureMsg
from vpr_ros_msgs.srv import GetKeyframeFeatures

from vpr_ros.core.fleet.bandwidth import TokenBucket
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import FleetError, VprError
from vpr_ros.core.fleet.budget import RemoteBudget, remote_keyframe_bytes
from vpr_ros.core.fleet.feature_cache import FetchedFeatures
from vpr_ros.core.fleet.loop_guard import LoopGuard
from vpr_ros.core.fleet.remote_keyframes import (WIRE_ENCODING, DescriptorBatch, check_batch, decode_answer,
                                                 decode_batch, decode_geometry, encode_batch, encode_geometry,
                                                 encode_locals, head)
from vpr_ros.core.fleet.validation import MAX_BATCH, REFUSAL_REASONS, Refused, check_name, model_local_channels
from vpr_ros.core.keyframes import find_key
from vpr_ros.core.types import Candidate, Keyframe, LoopClosure
from vpr_ros.nodes import conversions as conv
from vpr_ros.nodes.fleet_floats import FLOAT_COUNTERS, FleetFloatsMixin
from vpr_ros.nodes.fleet_loops import FleetLoopsMixin
from vpr_ros.nodes.fleet_msgs import batch_to_msg, geometry_to_msg, msg_to_batch, msg_to_geometry_fields
from vpr_ros.nodes.settings import NodeSettings

__all__ = ["Fleet", "FleetLink", "FLEET_COUNTERS", "history_qos", "batch_to_msg", "msg_to_batch",
           "geometry_to_msg", "msg_to_geometry_fields"]

MAX_PEERS = 256        # distinct (robot, session) peers and features services one robot keeps

#: Counters every fleet mode reports in diagnostics (``fleet.<name>``).
FLEET_COUNTERS = ("keyframes_sent", "batches_sent", "bytes_sent", "bytes_sent.descriptors",
                  "bytes_sent.features", "bytes_sent.loops", "remote_keyframes",
                  *(f"refused.{r}" for r in REFUSAL_REASONS), "features_requested", "features_received",
                  "fetch_failures", "bytes_received.features", "inter_robot_loops.found",
                  "inter_robot_loops.received", *FLOAT_COUNTERS)


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


class FleetLink(FleetLoopsMixin, FleetFloatsMixin):
    """One robot's side of the decentralised fleet (see the module docstring)."""

    def __init__(self, node: Node, detector: LoopClosureDetector, lock: threading.Lock, settings: NodeSettings,
                 count: Callable[[str, int], None], warn: Callable[[str, str], None],
                 loop_pub: Any, map_frame: str) -> None:
        self._node, self._detector, self._lock = node, detector, lock
        self._settings, self._warn, self._count = settings, warn, count
        self._loop_pub, self._map_frame = loop_pub, map_frame
        self.robot_id = detector.config.detector.robot_id
        self._send = self._check_send_mode()  # fleet.send_descriptors; ConfigError before anything is created
        prefix = settings.fleet_topic_prefix.rstrip("/")
        rate = settings.fleet_bandwidth_bytes_per_sec
        self._bucket = TokenBucket(rate, rate, time.monotonic())  # 1 s of burst
        self._outbox: collections.deque[Keyframe] = collections.deque()
        self._inbox: collections.deque[tuple[DescriptorBatch, int]] = collections.deque()  # (batch, reserved)
        # (session, id) -> detector key of our own keyframes, for feature answers and fleet loops: the
        # features are read through the detector (from the live map on disk), never pinned in RAM here.
        self._own: dict[tuple[str, int], int] = {(kf.session_id, kf.id): key for key, kf in
                                                 enumerate(detector.keyframes) if kf.robot_id == self.robot_id}
        dim = detector.model.global_dim
        total_mb = settings.fleet_remote_budget_mb
        if detector.config.map.memory_budget_mb > 0:  # other robots' keyframes count within the map's budget
            total_mb = min(total_mb, detector.config.map.memory_budget_mb)
        self._budget = RemoteBudget(settings.fleet_peer_budget_mb * 1e6, total_mb * 1e6, remote_keyframe_bytes(dim))
        # A fleet loop waits this long for the batch carrying its query keyframe (budget-delayed batches).
        self._loop_guard: LoopGuard[LoopClosureMsg] = LoopGuard(max(2.0, 5 * settings.fleet_request_timeout_sec))
        self._channels = model_local_channels(detector.model)  # fetched features must have the own model's channels
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
        detector.fetch_global = self.fetch_global  # index.first_pass=hash: floats of Hamming candidates

    # -- sending ----------------------------------------------------------------------------
    def keyframe(self, kf: Keyframe) -> None:
        """Queue our new keyframe ``kf`` for broadcast (call right after the detector made it)."""
        key = find_key(self._detector.keyframes, kf.robot_id, kf.session_id, kf.id)  # the last one, usually
        with self._mutex:
            if key is not None:
                self._own[(kf.session_id, kf.id)] = key
            if kf.local is not None and kf.local.ndim == 3:
                self._channels = int(kf.local.shape[-1])
            self._outbox.append(kf)

    def _flush(self) -> None:
        """Timer: send queued keyframes in batches while the budget allows; release waiting fleet loops."""
        self._release_loops()
        while True:
            with self._mutex:
                kfs = list(self._outbox)[:self._settings.fleet_batch_size]
            if not kfs:
                return
            batch = encode_batch(kfs, self._detector.model_id, self._detector.model.global_dim, self.features_service,
                                 self._send)
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
        try:
            self._take_batch(msg)
        except Refused as exc:
            self._refuse(msg.robot_id, msg.session_id, exc.reason, str(exc))
        except Exception as exc:  # noqa: BLE001 - nothing a peer sends may end the executor
            self._refuse(msg.robot_id, msg.session_id, "malformed", f"{type(exc).__name__}: {exc}")

    def _take_batch(self, msg: KeyframeDescriptors) -> None:
        if msg.robot_id == self.robot_id and msg.session_id == self._detector.config.detector.session_id:
            return  # our own broadcast
        batch = msg_to_batch(msg)
        check_batch(batch, self._detector.model_id, self._detector.model.global_dim, self._first_pass, self.hash_bytes)
        robot, peer, service = batch.robot_id, (batch.robot_id, batch.session_id), batch.features_service
        with self._mutex:
            if peer not in self._servers and len(self._servers) >= MAX_PEERS:
                raise Refused("peers", f"already {len(self._servers)} robot sessions in the fleet")
        if service and service not in self._clients:
            if len(self._clients) >= MAX_PEERS:
                raise Refused("peers", f"already {len(self._clients)} features services in the fleet")
            try:  # created here, on the executor thread; the processing thread only uses them
                self._clients[service] = self._node.create_client(GetKeyframeFeatures, service)
            except Exception as exc:  # noqa: BLE001 - rclpy's name checks are the last word
                raise Refused("name", f"features service {service[:40]!r}: {exc}") from None
        n = len(batch.ids)
        with self._mutex:
            self._servers[peer] = service
            self._loop_guard.seen(robot, batch.session_id, batch.ids.tolist(), batch.stamps_ns.tolist())
            reserved = self._budget.reserve(robot, n)
            if reserved:
                self._inbox.append((head(batch, reserved), reserved))
        if reserved < n:
            self._refuse(robot, batch.session_id, "budget", f"{n - reserved} keyframes over the budget "
                         f"(fleet.peer_budget_mb, fleet.remote_budget_mb, map.memory_budget_mb)", n - reserved)

    def _refuse(self, robot: str, session: str, kind: str, text: str, n: int = 1) -> None:
        self._count(f"fleet.refused.{kind}", n)
        robot = robot if len(robot) <= 40 else robot[:40] + "..."
        peer = (robot, session[:40], kind)
        if peer not in self._refused and len(self._refused) < 1000:  # logged once per peer and reason
            self._refused.add(peer)
            self._node.get_logger().error(f"fleet: refused input of robot {robot!r}: {text}")
        else:
            self._warn(f"fleet_{kind}", f"fleet: refused input of robot {robot!r} ({kind})")

    def drain(self) -> None:
        with self._mutex:
            batches = list(self._inbox)
            self._inbox.clear()
        for batch, reserved in batches:
            added = 0
            try:
                keyframes = decode_batch(batch, self._detector.model_id, self._detector.model.global_dim,
                                         self._first_pass, self.hash_bytes)
                with self._lock:
                    added = self._detector.add_remote_keyframes(keyframes)
            except (VprError, ValueError) as exc:  # runs on the processing thread: a bad batch must not end it
                self._refuse(batch.robot_id, batch.session_id, getattr(exc, "reason", "malformed"), str(exc))
            finally:
                with self._mutex:
                    self._budget.settle(batch.robot_id, reserved, added)
            self._count("fleet.remote_keyframes", added)

    # -- local features on demand ----------------------------------------------------------------
    def fetch_local(self, candidates: Sequence[Candidate], keyframes: Sequence[Keyframe]) -> None:
        """Detector hook (processing thread): attach the local features of promising remote candidates.

        What a peer answers is checked keyframe by keyframe (shape against the own model's, NaN/Inf,
        ids asked for); a keyframe without usable features is a fetch failure and is not verified,
        the other candidates are."""
        min_sim = self._detector.config.verify.min_global_similarity
        groups: dict[tuple[str, str], list[Keyframe]] = collections.defaultdict(list)
        for c, kf in zip(candidates, keyframes):
            if c.similarity >= min_sim:  # below it verification rejects anyway: do not pay for features
                groups[(kf.robot_id, kf.session_id)].append(kf)
        for (robot, session), kfs in groups.items():
            self._count("fleet.features_requested", len(kfs))
            try:
                got, refused = self._request(robot, session, [kf.id for kf in kfs])
            except Exception as exc:  # noqa: BLE001 - a peer's answer must never cost the frame
                if isinstance(exc, Refused):
                    self._refuse(robot, session, exc.reason, f"feature answer: {exc}")
                self._count("fleet.fetch_failures", len(kfs))
                self._warn("fleet_fetch", f"fleet: no local features from robot {robot!r}: {exc}")
                continue
            for exc in refused:
                self._refuse(robot, session, exc.reason, f"feature answer: {exc}")
            for kf in kfs:
                if kf.id in got:  # kept (up to fleet.feature_cache_mb): later queries verify without asking
                    kf.local, geometry = got[kf.id]
                    kf.geometry = kf.geometry or geometry  # keypoints give the loop a relative pose
                    dropped = self._fetched.add(kf)
                    if dropped:
                        self._count("fleet.features_evicted", len(dropped))
            self._count("fleet.features_received", sum(kf.id in got for kf in kfs))
            self._count("fleet.fetch_failures", sum(kf.id not in got for kf in kfs))

    def _request(self, robot: str, session: str, ids: list[int]) -> tuple[dict[int, tuple[Any, Any]], list[Refused]]:
        """id -> (local (h, w, c) float32, KeyframeGeometry or None) of the keyframes the owner holds
        and answered usably, and the refusals of the keyframes it answered unusably."""
        response = self._call_features(robot, session, ids)
        self._count("fleet.bytes_received.features", len(response.local_features))
        if response.encoding != WIRE_ENCODING:
            raise Refused("malformed", f"features encoded as {response.encoding[:40]!r}; only {WIRE_ENCODING!r} is known")
        got_ids = [int(i) for i in response.keyframe_ids]
        if response.geometries and len(response.geometries) != len(got_ids):
            raise Refused("malformed", f"{len(response.geometries)} keyframe geometries for {len(got_ids)} keyframes")
        locals_, refused = decode_answer(got_ids, list(response.local_shapes), bytes(response.local_features),
                                         ids, self._channels)
        out: dict[int, tuple[Any, Any]] = {}
        for k, kid in enumerate(got_ids):
            if kid not in locals_:
                continue
            try:
                geometry = decode_geometry(msg_to_geometry_fields(response.geometries[k])) if response.geometries else None
            except (FleetError, ValueError, TypeError) as exc:
                refused.append(exc if isinstance(exc, Refused) else Refused("malformed", f"geometry of {kid}: {exc}"))
                continue
            out[kid] = (locals_[kid], geometry)
        return out, refused

    def _on_get_features(self, request: GetKeyframeFeatures.Request,
                         response: GetKeyframeFeatures.Response) -> GetKeyframeFeatures.Response:
        response.encoding = WIRE_ENCODING
        try:
            check_name(request.descriptor_model, "descriptor_model")
            if len(request.keyframe_ids) > MAX_BATCH:
                raise Refused("malformed", f"{len(request.keyframe_ids)} keyframes asked for, at most {MAX_BATCH}")
        except Refused as exc:
            self._count(f"fleet.refused.{exc.reason}", 1)
            response.success, response.message = False, str(exc)
            return response
        if request.descriptor_model != self._detector.model_id:
            self._count("fleet.refused.model_mismatch", 1)
            response.success, response.message = False, (
                f"this robot uses model {self._detector.model_id!r}, the request {request.descriptor_model!r}; "
                "run the same model on every robot")
            return response
        with self._mutex:
            keys = [self._own.get((request.session_id, int(i))) for i in request.keyframe_ids]
        if request.global_only:  # a hash-first peer re-ranking its Hamming candidates (nodes/fleet_floats.py)
            return self._answer_globals(request, response, keys)
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
                "fleet.remote_mb": f"{self._budget.held_bytes / 1e6:.1f}", "fleet.loops_waiting": str(len(self._loop_guard)),
                "fleet.budget_bytes_per_sec": str(self._settings.fleet_bandwidth_bytes_per_sec)}

