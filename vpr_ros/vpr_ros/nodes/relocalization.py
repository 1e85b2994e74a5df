"""Relocalisation in the node: the robot's pose in a loaded map on ``global_pose``, on request or not.

:class:`NodeRelocalization` is owned by the loop-closure node; the decision itself is the ROS-free
:class:`vpr_ros.core.localization.relocalizer.Relocalizer` (docs/relocalization.md says when a fix is
made and when it is refused). Here:

* ``global_pose`` (geometry_msgs/PoseWithCovarianceStamped): ``header.frame_id`` the map frame
  (``detector.map_frame``), ``header.stamp`` the image's stamp (consumers move it to now with their
  odometry), the pose of ``frames.base_frame``, the full 6x6 covariance (x, y, z, rot_x, rot_y, rot_z;
  AMCL reads entries 0, 1, 6, 7 and 35). Reliable, transient-local depth 1: a consumer that asks for
  transient-local gets the last fix when it starts; volatile consumers (AMCL) get new ones.
* ``~/relocalize`` (std_srvs/Trigger) and the ``relocalize_trigger`` topic (PoseWithCovarianceStamped,
  the type of cuVSLAM's ``visual_slam/trigger_hint``; its pose is ignored; best-effort, so any
  publisher's QoS matches): ask for the next confident fix (``relocalization.mode`` on_demand; in once
  mode one more; continuous publishes every confident fix anyway, at most one per
  ``relocalization.min_interval_sec``).
* map -> odom on /tf with ``relocalization.publish_tf`` (nodes/tf_frames.py), from the fix and the
  odometry pose at the same stamp: T_map_odom = T_map_base * T_odom_base^-1.
* ``/diagnostics``: fixes, published fixes, refusals by reason (``relocalization.refused.<reason>``),
  requests, whether one is pending, where the camera's pose on the robot came from.

Threads: :meth:`step` runs on the processing thread (under the detector lock), the service and the
trigger on the executor; a lock of its own keeps them apart and never waits for a frame.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from vpr_ros.core.config import Config
from vpr_ros.core.detector import LoopClosureDetector, StepResult
from vpr_ros.core.localization.relocalizer import REFUSAL_REASONS, Fix, Refusal, Relocalizer
from vpr_ros.nodes.conversions import matrix_to_pose_msg, ns_to_stamp
from vpr_ros.nodes.settings import NodeSettings
from vpr_ros.nodes.tf_frames import CameraMount, MapOdomBroadcaster, tf_lookup

__all__ = ["NodeRelocalization", "fix_to_msg", "POSE_QOS", "TRIGGER_QOS"]

POSE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
TRIGGER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


def fix_to_msg(fix: Fix) -> PoseWithCovarianceStamped:
    """Core Fix -> geometry_msgs/PoseWithCovarianceStamped (map frame, image stamp, 36 covariance values)."""
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = ns_to_stamp(fix.stamp_ns)
    msg.header.frame_id = fix.frame_id
    msg.pose.pose = matrix_to_pose_msg(fix.T_map_base)
    msg.pose.covariance = [float(v) for v in np.asarray(fix.covariance, np.float64).reshape(36)]
    return msg


class NodeRelocalization:
    """The node's relocalisation: publisher, service, trigger, /tf and counters (module docstring).

    ``lock`` is the node's detector lock (held by the processing thread around each frame); ``warn`` the
    node's throttled warning.
    """

    def __init__(self, node: Node, detector: LoopClosureDetector, lock: threading.Lock, config: Config,
                 settings: NodeSettings, warn: Callable[[str, str], None],
                 lookup: Callable[[str, str, float], Any] | None = None) -> None:
        self._node, self._detector, self._detector_lock = node, detector, lock
        self._config = config
        self._log = node.get_logger()
        self._lock = threading.Lock()
        self.counts = {"published": 0, "requests": 0, "triggers": 0, "tf_without_odometry": 0}
        self.mount = CameraMount(config.frames, tf_lookup(node) if lookup is None else lookup, self._log.info, warn,
                                 settings.tf_wait_sec)
        cfg = config.relocalization
        self.tf = MapOdomBroadcaster(node, cfg.enabled and cfg.publish_tf, config.detector.map_frame,
                                     config.frames.odom_frame, settings.tf_republish_sec)
        self._pub = node.create_publisher(PoseWithCovarianceStamped, "global_pose", POSE_QOS)
        node.create_service(Trigger, "~/relocalize", self._on_relocalize)
        self._trigger = node.create_subscription(PoseWithCovarianceStamped, "relocalize_trigger", self._on_trigger,
                                                 TRIGGER_QOS)
        self.relocalizer: Relocalizer | None = None
        self._own_session_warning = ""
        if cfg.enabled:
            self.relocalizer = Relocalizer(config, detector, detector.keyframe_map_poses(), self.mount.parameter)
            self._check_sessions()

    # -- processing thread ------------------------------------------------------------------------
    def step(self, result: StepResult) -> Fix | Refusal | None:
        """Relocalise on one detector step (called under the detector lock); publishes a fix."""
        if self.relocalizer is None or result.keyframe is None:
            return None
        T_base_cam = self.mount.base_from_camera()
        with self._lock:
            self.relocalizer.base_from_camera = T_base_cam
            # The node's odometry poses are of the base frame (the odometry's child frame), as T_odom_base.
            outcome = self.relocalizer.step(result, result.keyframe.pose)
        if isinstance(outcome, Fix):
            self._publish(outcome)
        elif isinstance(outcome, Refusal):
            self._log.debug(f"no fix ({outcome.reason}): {outcome.detail}")
        return outcome

    def _publish(self, fix: Fix) -> None:
        self._pub.publish(fix_to_msg(fix))
        self.counts["published"] += 1
        T_map_odom = fix.T_map_odom
        if self.tf.active:
            if T_map_odom is None:
                self.counts["tf_without_odometry"] += 1
                self._log.warning("relocalization.publish_tf: a fix without odometry (odom.enabled false or no "
                                  "odometry at the image's stamp) gives no map -> odom; publish odometry")
            else:
                self.tf.fix(T_map_odom, fix.stamp_ns)
        x, y, _ = fix.position
        yaw = math.degrees(math.atan2(fix.T_map_base[1, 0], fix.T_map_base[0, 0]))
        sx, sy = math.sqrt(max(fix.covariance[0, 0], 0.0)), math.sqrt(max(fix.covariance[1, 1], 0.0))
        self._log.info(f"fix ({fix.kind}, confirmed by {fix.confirmed_by}): x {x:.3f} m, y {y:.3f} m, yaw {yaw:.1f} "
                       f"deg in {fix.frame_id} (sigma x {sx:.3f}, y {sy:.3f} m), matched "
                       f"{', '.join(fix.matched_keyframes)}")

    # -- executor thread ---------------------------------------------------------------------------
    def map_changed(self) -> None:
        """A map was loaded or reset: the keyframes' map poses are read again."""
        if self.relocalizer is None:
            return
        with self._detector_lock:
            poses = self._detector.keyframe_map_poses()
        with self._lock:
            self.relocalizer.set_map_poses(poses)
        self._check_sessions()

    def session_reset(self) -> None:
        """``~/reset`` started a new session (odometry restarts): earlier keyframes' odometry must not be
        compared with the new session's; ``once`` mode fixes once more in the new odometry frame."""
        if self.relocalizer is None:
            return
        with self._lock:
            self.relocalizer.reset()

    def _check_sessions(self) -> None:
        """Keyframes of the map with this node's own robot_id and session_id are this session's to the
        detector, never the map's: say so instead of never relocalising."""
        det = self._config.detector
        assert self.relocalizer is not None
        if (det.robot_id, det.session_id) in {(k[0], k[1]) for k in self.relocalizer.map_poses}:
            self._own_session_warning = (
                f"the loaded map's keyframes have this node's own robot_id/session_id ({det.robot_id}/"
                f"{det.session_id}), so they count as this session and never relocalise it: give this session "
                "its own detector.session_id")
            self._log.warning(self._own_session_warning)
        else:
            self._own_session_warning = ""

    def _request(self, source: str) -> tuple[bool, str]:
        if self.relocalizer is None:
            return False, "relocalization.enabled is false: set it true to relocalise in a loaded map"
        with self._lock:
            self.relocalizer.request()
            mapped = len(self.relocalizer.map_poses)
        mode = self._config.relocalization.mode
        topic = getattr(self._pub, "topic_name", "global_pose")
        if mode == "continuous":
            what = f"continuous mode: every confident fix is published on {topic}"
        else:
            what = f"request pending: the next confident fix will be published on {topic}"
        if not mapped:
            return False, (f"no map loaded (no keyframe has a pose in the map frame): load one with ~/load_map or "
                           f"map.load_path; {what} once a map is loaded and the camera sees a mapped place")
        self._log.info(f"relocalisation requested ({source})")
        return True, f"map loaded: {mapped} keyframes with poses in {self._config.detector.map_frame}; {what}"

    def _on_relocalize(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.counts["requests"] += 1
        response.success, response.message = self._request("~/relocalize")
        return response

    def _on_trigger(self, msg: PoseWithCovarianceStamped) -> None:
        self.counts["triggers"] += 1
        self._request(f"trigger on {self._trigger.topic_name}")

    # -- diagnostics timer -------------------------------------------------------------------------
    def diagnostics(self) -> tuple[dict[str, str], list[str]]:
        """Key/values for /diagnostics and warnings (publish_tf that cannot work)."""
        out = {f"relocalization.{k}": str(v) for k, v in self.counts.items()}
        out["relocalization.mode"] = (self._config.relocalization.mode if self.relocalizer is not None
                                      else "disabled")
        out["relocalization.base_from_camera"] = self.mount.source
        out["relocalization.tf"] = self.tf.mode
        if self.relocalizer is not None:
            with self._lock:
                counts = dict(self.relocalizer.counts)
                out["relocalization.pending"] = str(self.relocalizer.pending).lower()
                out["relocalization.map_keyframes"] = str(len(self.relocalizer.map_poses))
            out["relocalization.fixes"] = str(counts.get("fixes", 0))
            out.update({f"relocalization.refused.{r}": str(counts.get(r, 0)) for r in REFUSAL_REASONS})
        warnings = [self._own_session_warning] if self._own_session_warning else []
        if self.tf.mode == "unavailable":
            warnings.append("relocalization.publish_tf is true but tf2_ros/tf2_msgs are missing: no map -> odom")
        return out, warnings
