"""``hydra_bridge``: our loop closures as ``pose_graph_tools_msgs/PoseGraph`` loop-closure edges on
``external_loop_closures`` (Hydra, Kimera-PGMO / Kimera-Multi style consumers).

    ros2 launch vpr_ros hydra_bridge.launch.py output_topic:=/hydra/external_loop_closures

One PoseGraph per loop with one edge of type LOOPCLOSE (1), pose = T_match_query (the pose of the
query base in the match base), covariance filled (row-major, ``hydra.covariance_order``; ours is the
right perturbation in the query's frame). The two consumers read the edge's direction oppositely, so
the keys follow ``hydra.key_mode``:

- ``stamp_ns`` (Hydra): from = query, to = match, because Hydra reads ``pose`` as ``to_T_from``
  (MIT-SPARK/Hydra ``external_loop_closure_receiver.cpp``). ``key_from``/``key_to`` are the two
  keyframes' image stamps in nanoseconds; Hydra looks up its agent node nearest each stamp (within
  its ``max_time_difference``, default 1 s) of robot ``robot_from``/``robot_to``.
- ``index`` (Kimera-PGMO, Kimera-Distributed / Kimera-Multi): from = match, to = query, because these
  read ``pose`` as ``from_T_to`` (``BetweenFactor(from, to, pose)``; kimera_pgmo: "measure =
  from_T_to"), whose error is in the ``to`` (query) frame, as our covariance. ``key_from``/``key_to``
  are the keyframe *indices*: the consumer builds its GTSAM key ``Symbol(prefix of robot_from,
  key_from)`` itself (kimera_pgmo ``processIncrementalPoseGraph``), so a full symbol key here would
  name no node. Valid only when our keyframe ids are the consumer's keyframe indices.

``robot_from``/``robot_to`` are the robots' small integer ids (``hydra.robot_names``, else the
number the robot id ends with, else ``hydra.default_robot``). Hydra itself uses its configured loop
variance (``lc_variance``), not the covariance.
"""

from __future__ import annotations

from typing import Any

from vpr_ros.core.geometry.backend_edges import COVARIANCE_ORDERS, BackendLoop, KeyframeRef, reorder_covariance
from vpr_ros.core.geometry.backend_nodes import robot_index
from vpr_ros.nodes.bridges.common import RELIABLE, BridgeNode, import_peer, run_bridge, spec
from vpr_ros.nodes.conversions import matrix_to_pose_msg, ns_to_stamp

__all__ = ["HydraBridge", "main", "KEY_MODES"]

KEY_MODES = ("stamp_ns", "index")
LOOPCLOSE = 1  # pose_graph_tools_msgs/PoseGraphEdge.LOOPCLOSE


class HydraBridge(BridgeNode):
    BACKEND = "Hydra/Kimera"
    PARAMETERS = (
        spec("hydra.key_mode", str, "stamp_ns",
             "How edge keys are formed: stamp_ns (image stamps in ns, from = query: what Hydra's external loop "
             "closures expect) or index (keyframe indices, from = match: Kimera-PGMO / Kimera-Multi, which add "
             "their robot prefix).", choices=KEY_MODES),
        spec("hydra.robot_names", str, "",
             "Comma-separated vpr_ros robot ids in the consumer's robot id order; empty: the number each "
             "robot id ends with, else hydra.default_robot."),
        spec("hydra.default_robot", int, 0, "Robot id for a robot id without a number and not in "
             "hydra.robot_names (-1: drop its loops).", lo=-1, hi=255),
        spec("hydra.covariance_order", str, "translation_first",
             "Row/column order of the edge covariance: translation_first (x, y, z, rx, ry, rz, ROS) or "
             "rotation_first (GTSAM Pose3).", choices=COVARIANCE_ORDERS),
        spec("hydra.frame_id", str, "", "header.frame_id of the PoseGraph and its edges."),
    )
    COUNTERS = ("edges_sent", "skipped.no_pose", "skipped.scale_unknown", "skipped.no_covariance",
                "skipped.unknown_robot")
    NOTES = {"edge": "type LOOPCLOSE, pose = T_match_query; stamp_ns keys: from = query, to = match (Hydra: "
                     "pose = to_T_from); index keys: from = match, to = query (Kimera: pose = from_T_to)"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("hydra_bridge", **kwargs)
        msgs = import_peer("pose_graph_tools_msgs.msg", "hydra_bridge", "Hydra/Kimera (MIT-SPARK pose_graph_tools)",
                           "build pose_graph_tools_msgs from MIT-SPARK/pose_graph_tools in your workspace")
        self._PoseGraph, self._Edge = msgs.PoseGraph, msgs.PoseGraphEdge
        self._names = [n.strip() for n in self.params["hydra.robot_names"].split(",") if n.strip()]
        self._pub = self.create_publisher(self._PoseGraph, "external_loop_closures", RELIABLE)
        self.NOTES = {**self.NOTES, "keys": self.params["hydra.key_mode"],
                      "covariance_order": self.params["hydra.covariance_order"]}

    def robot(self, robot_id: str) -> int | None:
        index = robot_index(robot_id, self._names)
        if index is None and not self._names and self.params["hydra.default_robot"] >= 0:
            index = int(self.params["hydra.default_robot"])
        return index

    def key(self, ref: KeyframeRef) -> int:
        return ref.stamp_ns if self.params["hydra.key_mode"] == "stamp_ns" else ref.keyframe_id

    def on_loop(self, loop: BackendLoop) -> None:
        if not self.metric_pose(loop):
            return
        if loop.covariance is None:
            self.count("skipped.no_covariance")
            return
        # T_match_query is Hydra's to_T_from with from = query, and Kimera's from_T_to with from = match
        ref_from, ref_to = ((loop.query, loop.match) if self.params["hydra.key_mode"] == "stamp_ns"
                            else (loop.match, loop.query))
        robot_from, robot_to = self.robot(ref_from.robot_id), self.robot(ref_to.robot_id)
        if robot_from is None or robot_to is None:
            self.count("skipped.unknown_robot")
            return
        edge = self._Edge(key_from=self.key(ref_from), key_to=self.key(ref_to),
                          robot_from=robot_from, robot_to=robot_to, type=LOOPCLOSE,
                          pose=matrix_to_pose_msg(loop.T_match_query),
                          covariance=[float(v) for v in reorder_covariance(
                              loop.covariance, self.params["hydra.covariance_order"]).reshape(36)])
        edge.header.stamp = ns_to_stamp(loop.query.stamp_ns)
        edge.header.frame_id = self.params["hydra.frame_id"]
        graph = self._PoseGraph(edges=[edge])
        graph.header = edge.header
        self._pub.publish(graph)
        self.count("edges_sent")


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run vpr_ros hydra_bridge``)."""
    return run_bridge(HydraBridge, "hydra_bridge", args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
