"""``cslam_bridge``: our keyframes and loop closures for Swarm-SLAM's back end (cslam
``pose_graph_manager``), replacing its front end.

    ros2 launch vpr_ros cslam_bridge.launch.py namespace:=r0 cslam_robot_id:=0

- ``cslam/keyframe_odom`` (cslam_common_interfaces/KeyframeOdom): each of our keyframes with its id
  and odometry (from the Keyframe message, or from ``odom`` at its stamp when it has no pose; a
  keyframe with neither is not sent).
  cslam keys it ``LabeledSymbol('g', 'A' + robot, id)`` and chains consecutive keyframes with
  odometry factors; it anchors keyframe 0, so a session's first keyframe should be id 0.
- ``cslam/intra_robot_loop_closure``: loops within our robot and session, keyframe0 = match,
  keyframe1 = query, transform = pose of the query base in the match base (GTSAM Between(kf0, kf1)).
- ``/cslam/inter_robot_loop_closure``: loops with another robot, robot0 = match, robot1 = query.
- cslam ignores covariance (fixed sigmas 0.1 m / 0.01 rad, its own odometry's too): the diagnostics
  say so and report the last loop's own sigmas for comparison. Loops without a metric pose, to
  another session of ours, or naming a keyframe not published on keyframe_odom are not sent.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vpr_ros.core.geometry.backend_edges import BackendLoop, KeyframeRef
from vpr_ros.core.geometry.backend_nodes import robot_index
from vpr_ros.nodes.bridges.common import RELIABLE, BridgeNode, import_peer, run_bridge, spec
from vpr_ros.nodes.conversions import matrix_to_pose_msg, matrix_to_transform_msg, ns_to_stamp

__all__ = ["CslamBridge", "main", "CSLAM_SIGMA_M", "CSLAM_SIGMA_RAD"]

#: cslam's fixed noise of every odometry and loop factor (decentralized_pgo.cpp).
CSLAM_SIGMA_M, CSLAM_SIGMA_RAD = 0.1, 0.01
_UINT32 = 2 ** 32


class CslamBridge(BridgeNode):
    BACKEND = "Swarm-SLAM"
    PARAMETERS = (
        spec("cslam.robot_id", int, -1,
             "Our robot's cslam id (its 'robot_id' parameter); -1: from robot_id via cslam.robot_names, "
             "else the number our robot id ends with.", lo=-1, hi=255),
        spec("cslam.robot_names", str, "",
             "Comma-separated vpr_ros robot ids in cslam id order (robot0,robot1 -> 0, 1); empty: the "
             "number each robot id ends with."),
        spec("cslam.child_frame_id", str, "base_link", "child_frame_id of the odometry in keyframe_odom."),
    )
    COUNTERS = ("keyframes_sent", "intra_loops_sent", "inter_loops_sent",
                "skipped.no_pose", "skipped.scale_unknown", "skipped.other_session", "skipped.unknown_keyframe",
                "skipped.unknown_robot", "skipped.id_overflow")
    NOTES = {"covariance": f"ignored by cslam (fixed sigmas {CSLAM_SIGMA_M} m, {CSLAM_SIGMA_RAD} rad)",
             "loop_direction": "keyframe0/robot0 = match, keyframe1/robot1 = query, transform = T_match_query"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("cslam_bridge", **kwargs)
        msgs = import_peer("cslam_common_interfaces.msg", "cslam_bridge", "Swarm-SLAM",
                           "build cslam_interfaces from MISTLab/Swarm-SLAM in your workspace")
        self._KeyframeOdom, self._Intra, self._Inter = msgs.KeyframeOdom, msgs.IntraRobotLoopClosure, \
            msgs.InterRobotLoopClosure
        self._names = [n.strip() for n in self.params["cslam.robot_names"].split(",") if n.strip()]
        self._kf_pub = self.create_publisher(self._KeyframeOdom, "cslam/keyframe_odom", RELIABLE)
        self._intra_pub = self.create_publisher(self._Intra, "cslam/intra_robot_loop_closure", RELIABLE)
        self._inter_pub = self.create_publisher(self._Inter, "/cslam/inter_robot_loop_closure", RELIABLE)
        self._published: set[tuple[str, str, int]] = set()
        self._session: str | None = None
        self._last_sigmas: tuple[float, float] | None = None

    def cslam_robot(self, robot_id: str) -> int | None:
        if robot_id == self.robot_id and self.params["cslam.robot_id"] >= 0:
            return int(self.params["cslam.robot_id"])
        return robot_index(robot_id, self._names)

    def on_keyframe(self, ref: KeyframeRef, pose: np.ndarray | None, msg: Any) -> None:
        if self._session is None:
            self._session = ref.session_id
            if ref.keyframe_id != 0:
                self.warnings["first_id"] = (f"the first keyframe has id {ref.keyframe_id}, not 0: cslam anchors "
                                             "its graph at keyframe 0")
        if ref.session_id != self._session:
            self.count("skipped.other_session")
            return
        if ref.keyframe_id >= _UINT32:
            self.count("skipped.id_overflow")
            return
        if pose is None:
            return  # counted as keyframes_without_pose; its loops are skipped as unknown_keyframe
        out = self._KeyframeOdom(id=ref.keyframe_id)
        out.odom.header.stamp = ns_to_stamp(ref.stamp_ns)
        out.odom.header.frame_id = msg.header.frame_id
        out.odom.child_frame_id = self.params["cslam.child_frame_id"]
        out.odom.pose.pose = matrix_to_pose_msg(pose)
        out.gps.header.stamp = out.odom.header.stamp
        self._kf_pub.publish(out)
        self._published.add((ref.robot_id, ref.session_id, ref.keyframe_id))
        self.count("keyframes_sent")

    def on_loop(self, loop: BackendLoop) -> None:
        if not self.metric_pose(loop):
            return
        if max(loop.query.keyframe_id, loop.match.keyframe_id) >= _UINT32:
            self.count("skipped.id_overflow")
            return
        ours = [r for r in (loop.query, loop.match) if r.robot_id == self.robot_id]
        if not ours:
            self.count("skipped.unknown_keyframe")  # no keyframe of ours seen yet
            return
        if any(r.session_id != self._session for r in ours):
            self.count("skipped.other_session")  # cslam has one session per robot
            return
        if any((r.robot_id, r.session_id, r.keyframe_id) not in self._published for r in ours):
            self.count("skipped.unknown_keyframe")  # a key without a value breaks cslam's optimisation
            return
        if loop.covariance is not None:
            d = np.diag(loop.covariance)
            self._last_sigmas = (math.sqrt(max(d[:3].max(), 0.0)), math.sqrt(max(d[3:].max(), 0.0)))
        transform = matrix_to_transform_msg(loop.T_match_query)
        if loop.query.robot_id == loop.match.robot_id:
            self._intra_pub.publish(self._Intra(keyframe0_id=loop.match.keyframe_id,
                                                keyframe1_id=loop.query.keyframe_id, success=True,
                                                transform=transform))
            self.count("intra_loops_sent")
            return
        robot0, robot1 = self.cslam_robot(loop.match.robot_id), self.cslam_robot(loop.query.robot_id)
        if robot0 is None or robot1 is None:
            self.count("skipped.unknown_robot")
            return
        self._inter_pub.publish(self._Inter(robot0_keyframe_id=loop.match.keyframe_id, robot0_id=robot0,
                                            robot1_keyframe_id=loop.query.keyframe_id, robot1_id=robot1,
                                            success=True, transform=transform))
        self.count("inter_loops_sent")

    def extra_diagnostics(self) -> dict[str, str]:
        if self._last_sigmas is None:
            return {}
        return {"last_loop_sigma_m": f"{self._last_sigmas[0]:.4f}",
                "last_loop_sigma_rad": f"{self._last_sigmas[1]:.5f}"}


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run vpr_ros cslam_bridge``)."""
    return run_bridge(CslamBridge, "cslam_bridge", args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
