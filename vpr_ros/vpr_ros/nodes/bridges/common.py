"""What every backend bridge shares: the peer-package import gate, parameters, our messages as the
core's dataclasses, the counters on ``diagnostics`` and ``main()``.

A bridge subscribes to ``loop_closures`` (vpr_ros_msgs/LoopClosure) and ``keyframes``
(vpr_ros_msgs/Keyframe), converts each loop's relative pose from the loop's body frame to the
robot's base frame (``base_from_body``), and hands it to :meth:`BridgeNode.on_loop`. Every loop
ends in exactly one counter (diagnostics): forwarded, or skipped/unmatched with the reason.
"""

from __future__ import annotations

import collections
import importlib
import threading
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterUninitializedException)
from rclpy.node import Node
from nav_msgs.msg import Odometry
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from vpr_ros_msgs.msg import Keyframe as KeyframeMsg, LoopClosure as LoopClosureMsg

from vpr_ros.core.config import FieldSpec
from vpr_ros.core.errors import ConfigError, InputError, VprError
from vpr_ros.core.geometry.backend_edges import (BackendLoop, KeyframeRef, change_body_frame, is_rigid,
                                                 transform_from_xyz_quat)
from vpr_ros.nodes.conversions import odometry_to_pose, pose_to_matrix, stamp_to_ns
from vpr_ros.nodes.input_watch import run_node
from vpr_ros.nodes.odom_buffer import OdomBuffer
from vpr_ros.nodes.params import parameter_descriptor

__all__ = ["PeerPackageMissing", "import_peer", "spec", "COMMON_PARAMETERS", "RELIABLE", "loop_from_msg",
           "keyframe_from_msg", "BridgeNode", "run_bridge"]

IDENTITY = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


class PeerPackageMissing(VprError, ImportError):
    """The backend's message package is not importable; the message says what to install."""


def import_peer(module: str, bridge: str, backend: str, install: str) -> ModuleType:
    """``importlib.import_module(module)`` or :class:`PeerPackageMissing` naming the package."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise PeerPackageMissing(
            f"{bridge} needs the message package '{package}' of {backend} ({exc}). Install it "
            f"({install}) or source the workspace that builds it, then start {bridge} again.") from None


def spec(name: str, type_: type, default: Any, description: str, lo: float | None = None,
         hi: float | None = None, choices: tuple[str, ...] | None = None) -> FieldSpec:
    return FieldSpec(name, type_, default, description, lo, hi, choices)


#: Parameters every bridge declares (each bridge adds its own, under its backend's name).
COMMON_PARAMETERS: tuple[FieldSpec, ...] = (
    spec("base_from_body", list, IDENTITY,
         "Pose of the loops' body frame in the robot's base frame, [x, y, z, qx, qy, qz, qw] (m, unit "
         "quaternion). Identity for loop_closure_node's loops, which are already of the base frame "
         "(frames.base_frame; it knows the camera's mounting from TF or frames.base_from_camera): setting "
         "the mounting here too would apply it twice. The camera's mounting only for camera-frame loops."),
    spec("robot_id", str, "",
         "Our robot id (detector.robot_id) whose loops this bridge passes on; empty: the robot of the "
         "first message on 'keyframes', or of each loop."),
    spec("odom.max_age_sec", float, 0.2,
         "A keyframe without a pose takes the odometry ('odom', the same source as the keyframes') at its "
         "stamp, interpolated between poses at most this far, seconds.", lo=0.0, hi=60.0),
    spec("diagnostics.period_sec", float, 1.0, "Period of the 'diagnostics' topic, seconds.", lo=0.05, hi=3600.0),
)


def loop_from_msg(msg: LoopClosureMsg) -> BackendLoop:
    """vpr_ros_msgs/LoopClosure -> BackendLoop (pose and covariance None when not valid)."""
    query = KeyframeRef(msg.query_robot_id, msg.query_session_id, int(msg.query_keyframe_id),
                        stamp_to_ns(msg.query_stamp))
    match = KeyframeRef(msg.match_robot_id, msg.match_session_id, int(msg.match_keyframe_id),
                        stamp_to_ns(msg.match_stamp))
    if not msg.relative_pose_valid:
        return BackendLoop(query, match)
    T = _pose_matrix(msg.relative_pose.pose)
    cov = np.asarray(msg.relative_pose.covariance, np.float64).reshape(6, 6)
    if T is None:
        return BackendLoop(query, match)
    return BackendLoop(query, match, T, None if not np.any(cov) else cov, bool(msg.translation_scale_known))


def keyframe_from_msg(msg: KeyframeMsg) -> tuple[KeyframeRef, np.ndarray | None]:
    """vpr_ros_msgs/Keyframe -> (KeyframeRef, odometry pose (4, 4) of the base or None)."""
    ref = KeyframeRef(msg.robot_id, msg.session_id, int(msg.keyframe_id), stamp_to_ns(msg.header.stamp))
    return ref, _pose_matrix(msg.pose) if msg.has_pose else None


def _pose_matrix(pose: Pose) -> np.ndarray | None:
    try:
        return pose_to_matrix(pose, "keyframe")
    except InputError:
        return None


class BridgeNode(Node):
    """Base of the bridges: parameters, subscriptions, robot filter, counters and diagnostics.

    Subclasses set ``BACKEND`` (diagnostics name), ``PARAMETERS`` (their own specs) and ``NOTES``
    (fixed diagnostics values saying what the backend does with our poses), and implement
    :meth:`on_loop` (a loop in base frames) and optionally :meth:`on_keyframe`."""

    BACKEND = "backend"
    PARAMETERS: tuple[FieldSpec, ...] = ()
    NOTES: dict[str, str] = {}
    COUNTERS: tuple[str, ...] = ()

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.params = {s.name: self._declare(s) for s in COMMON_PARAMETERS + self.PARAMETERS}
        try:
            self.base_T_body = transform_from_xyz_quat(self.params["base_from_body"])
        except ValueError as exc:
            raise ConfigError(f"parameter base_from_body: {exc}") from None
        self.robot_id: str = self.params["robot_id"]
        self._lock = threading.Lock()
        self.counters: collections.Counter[str] = collections.Counter({k: 0 for k in (
            "loops_received", "keyframes_received", "keyframes_without_pose", *self.COUNTERS)})
        self.warnings: dict[str, str] = {}
        self.keyframe_poses: dict[tuple[str, str, int], np.ndarray | None] = {}
        self.create_subscription(LoopClosureMsg, "loop_closures", self._on_loop_msg, RELIABLE)
        self.create_subscription(KeyframeMsg, "keyframes", self._on_keyframe_msg, RELIABLE)
        self._odom = OdomBuffer(self.params["odom.max_age_sec"], wait_sec=0.0, size=2000)
        self.create_subscription(Odometry, "odom", self._on_odom, qos_profile_sensor_data)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_timer(self.params["diagnostics.period_sec"], self.publish_diagnostics)

    def _declare(self, s: FieldSpec) -> Any:
        try:
            value = self.declare_parameter(s.name, s.default, parameter_descriptor(s)).value
        except (InvalidParameterTypeException, InvalidParameterValueException,
                ParameterUninitializedException) as exc:
            hint = " (write numbers with a decimal point, e.g. 1.0)" if s.type in (float, list) else ""
            raise ConfigError(f"parameter {s.name} ({s.type.__name__}){hint}: {exc}") from None
        if s.choices and value not in s.choices:
            raise ConfigError(f"parameter {s.name} is {value!r}; use one of: {', '.join(s.choices)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                (s.min is not None and value < s.min) or (s.max is not None and value > s.max)):
            raise ConfigError(f"parameter {s.name} = {value} is outside [{s.min}, {s.max}]")
        return list(value) if isinstance(value, (list, tuple)) or s.type is list else value

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def metric_pose(self, loop: BackendLoop) -> bool:
        """Whether ``loop`` carries a measured metric pose; if not it is counted (``skipped.no_pose`` or
        ``skipped.scale_unknown``: a monocular direction) and the bridge sends nothing."""
        if loop.T_match_query is None:
            self.count("skipped.no_pose")
            return False
        if not loop.scale_known:
            self.count("skipped.scale_unknown")
            return False
        return True

    def _on_odom(self, msg: Odometry) -> None:
        try:
            self._odom.add(stamp_to_ns(msg.header.stamp), odometry_to_pose(msg))
        except InputError:
            self.count("bad_odometry")

    def _on_keyframe_msg(self, msg: KeyframeMsg) -> None:
        ref, pose = keyframe_from_msg(msg)
        self.count("keyframes_received")
        if not self.robot_id:
            self.robot_id = ref.robot_id
        if ref.robot_id != self.robot_id:
            return
        if pose is None and len(self._odom):
            pose = self._odom.pose_at(ref.stamp_ns)
        if pose is None:
            self.count("keyframes_without_pose")
        self.keyframe_poses[(ref.robot_id, ref.session_id, ref.keyframe_id)] = pose
        self.on_keyframe(ref, pose, msg)

    def _on_loop_msg(self, msg: LoopClosureMsg) -> None:
        self.count("loops_received")
        loop = loop_from_msg(msg)
        if self.robot_id and self.robot_id not in (loop.query.robot_id, loop.match.robot_id):
            self.count("skipped.other_robot")
            return
        if loop.T_match_query is not None:
            T, cov = change_body_frame(loop.T_match_query, loop.covariance, self.base_T_body)
            if not is_rigid(T, 1e-5):
                self.count("skipped.bad_pose")
                return
            loop = BackendLoop(loop.query, loop.match, T, cov, loop.scale_known)
        try:
            self.on_loop(loop)
        except (VprError, ValueError) as exc:  # a loop the backend cannot take: log, count, go on
            self.count("skipped.error")
            self.get_logger().warning(f"loop {loop.query.keyframe_id}->{loop.match.keyframe_id} not "
                                      f"forwarded: {exc}", throttle_duration_sec=5.0)

    def on_keyframe(self, ref: KeyframeRef, pose: np.ndarray | None, msg: KeyframeMsg) -> None:
        """One of our robot's keyframes (``pose``: odometry of the base from the message or from
        'odom' at its stamp, or None)."""

    def on_loop(self, loop: BackendLoop) -> None:
        raise NotImplementedError

    def keyframe_pose(self, ref: KeyframeRef) -> np.ndarray | None:
        return self.keyframe_poses.get((ref.robot_id, ref.session_id, ref.keyframe_id))

    def extra_diagnostics(self) -> dict[str, str]:
        return {}

    def publish_diagnostics(self) -> None:
        with self._lock:
            values = {k: str(v) for k, v in sorted(self.counters.items())}
        values.update(self.NOTES)
        values.update(self.extra_diagnostics())
        problems = list(self.warnings.values())
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            name=f"{self.get_name()}: {self.BACKEND} bridge", message="; ".join(problems) or "running",
            hardware_id=self.robot_id, values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def run_bridge(factory: Callable[[], BridgeNode], prog: str, args: Sequence[str] | None = None) -> int:
    """``main()`` of a bridge: exit 2 with one line on a startup failure (a missing peer package, a
    bad parameter), 0 after Ctrl-C or shutdown."""
    return run_node(factory, prog, args)
