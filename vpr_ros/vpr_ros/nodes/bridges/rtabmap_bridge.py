"""``rtabmap_bridge``: our loop closures as RTAB-Map user links (``rtabmap_msgs/srv/AddLink``).

    ros2 launch vpr_ros rtabmap_bridge.launch.py rtabmap_namespace:=rtabmap

- Node ids: RTAB-Map's ``mapData`` nodes give (id, stamp, odometry pose); each of our keyframes is
  the node with the nearest stamp within ``rtabmap.max_stamp_diff_sec`` (RTAB-Map's detection
  period, 1/``Rtabmap/DetectionRate``). A loop whose nodes are not known yet waits up to
  ``rtabmap.wait_node_sec`` for the next map data, then counts as unmatched.
- The link: from = the query's node (the newer), to = the match's node, type 4 (user closure),
  transform = pose of the match node's base in the query node's base, corrected by the odometry
  between each node and its keyframe (both odometry poses of the same source); information =
  inverse covariance in RTAB-Map's order (x, y, z, roll, pitch, yaw), clamped when singular.
- ``add_link`` answers nothing: a link counts as accepted when a later ``mapGraph`` (or the graph in
  ``mapData``) holds it, and as rejected when ``rtabmap.confirm_graphs`` graphs after the call do not
  (RTAB-Map removes links that fail ``RGBD/OptimizeMaxError``, or whose nodes left working memory).
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np

from vpr_ros.core.geometry.backend_edges import BackendLoop, information_matrix
from vpr_ros.core.geometry.backend_nodes import (LinkConfirmations, StampedNode, StampIndex, edge_between_nodes,
                                                 stamp_gap)
from vpr_ros.io.poses import pose_matrix
from vpr_ros.nodes.bridges.common import RELIABLE, BridgeNode, import_peer, run_bridge, spec
from vpr_ros.nodes.conversions import matrix_to_transform_msg

__all__ = ["RtabmapBridge", "main", "USER_CLOSURE"]

#: rtabmap::Link::kUserClosure
USER_CLOSURE = 4
_EXACT_NS = 1_000_000  # stamps closer than 1 ms need no odometry correction


class RtabmapBridge(BridgeNode):
    BACKEND = "RTAB-Map"
    PARAMETERS = (
        spec("rtabmap.max_stamp_diff_sec", float, 1.0,
             "A keyframe is the RTAB-Map node with the nearest stamp at most this far, seconds "
             "(1/Rtabmap/DetectionRate: RTAB-Map makes a node per detection period).", lo=0.0, hi=60.0),
        spec("rtabmap.wait_node_sec", float, 3.0,
             "How long a loop waits for RTAB-Map to publish the nodes of its keyframes (mapData), "
             "seconds; then it counts as unmatched.", lo=0.0, hi=600.0),
        spec("rtabmap.correct_stamp_gap", bool, True,
             "Correct the link by the odometry between each node and its keyframe (RTAB-Map's node pose "
             "and the keyframe's pose must come from the same odometry)."),
        spec("rtabmap.confirm_graphs", int, 2,
             "A sent link not in this many map graphs received after it counts as rejected.", lo=1, hi=1000),
        spec("rtabmap.min_sigma_m", float, 0.001,
             "Translation standard deviation floor of the information matrix, metres.", lo=1e-9, hi=100.0),
        spec("rtabmap.min_sigma_rad", float, 0.001,
             "Rotation standard deviation floor of the information matrix, radians.", lo=1e-9, hi=10.0),
    )
    COUNTERS = ("links_sent", "links_accepted", "links_rejected", "unmatched", "skipped.no_pose",
                "skipped.scale_unknown", "information_clamped", "stamp_gap_uncorrected")
    NOTES = {"link_type": "4 (user closure), from = query node, to = match node",
             "information_order": "x, y, z, roll, pitch, yaw (inverse covariance)"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("rtabmap_bridge", **kwargs)
        self._msgs = import_peer("rtabmap_msgs.msg", "rtabmap_bridge", "RTAB-Map",
                                 "apt install ros-$ROS_DISTRO-rtabmap-msgs")
        srv = import_peer("rtabmap_msgs.srv", "rtabmap_bridge", "RTAB-Map", "apt install ros-$ROS_DISTRO-rtabmap-msgs")
        self.nodes = StampIndex()
        self.confirmations = LinkConfirmations(self.params["rtabmap.confirm_graphs"])
        self._waiting: collections.deque[tuple[float, BackendLoop]] = collections.deque()
        self._client = self.create_client(srv.AddLink, "add_link")
        self.create_subscription(self._msgs.MapData, "mapData", self._on_map_data, RELIABLE)
        self.create_subscription(self._msgs.MapGraph, "mapGraph", self._on_map_graph, RELIABLE)
        self.create_timer(0.2, self._retry)

    def on_loop(self, loop: BackendLoop) -> None:
        if loop.query.robot_id != loop.match.robot_id:
            self.count("skipped.other_robot")  # RTAB-Map's graph holds one robot
        elif self.metric_pose(loop) and not self._try_send(loop):  # RTAB-Map needs a metric transform
            self._waiting.append((time.monotonic(), loop))

    def _node(self, stamp_ns: int) -> StampedNode | None:
        return self.nodes.nearest(stamp_ns, int(round(self.params["rtabmap.max_stamp_diff_sec"] * 1e9)))

    def _try_send(self, loop: BackendLoop) -> bool:
        """Sends the loop when both its nodes are known and add_link is up; False to retry later."""
        query_node, match_node = self._node(loop.query.stamp_ns), self._node(loop.match.stamp_ns)
        if query_node is None or match_node is None or not self._client.service_is_ready():
            return False
        if query_node.node_id == match_node.node_id:
            self.count("unmatched")  # both keyframes fall on one node: no loop for RTAB-Map
            return True
        gaps = [None, None]
        if self.params["rtabmap.correct_stamp_gap"]:
            for i, (node, ref) in enumerate(((query_node, loop.query), (match_node, loop.match))):
                gaps[i] = stamp_gap(node, self.keyframe_pose(ref))
                if gaps[i] is None and abs(node.stamp_ns - ref.stamp_ns) > _EXACT_NS:
                    self.count("stamp_gap_uncorrected")
        T, cov = edge_between_nodes(loop.T_match_query, loop.covariance, gaps[0], gaps[1])
        info, clamped = information_matrix(np.zeros((6, 6)) if cov is None else cov,
                                           self.params["rtabmap.min_sigma_m"], self.params["rtabmap.min_sigma_rad"])
        if clamped:
            self.count("information_clamped")
        link = self._msgs.Link(from_id=query_node.node_id, to_id=match_node.node_id, type=USER_CLOSURE,
                               transform=matrix_to_transform_msg(T), information=[float(v) for v in info.reshape(36)])
        request = self._client.srv_type.Request(link=link)
        future = self._client.call_async(request)
        future.add_done_callback(lambda f, a=link.from_id, b=link.to_id: self._sent(f, a, b))
        return True

    def _sent(self, future: Any, from_id: int, to_id: int) -> None:
        if future.exception() is not None:
            self.count("links_failed")
            self.get_logger().warning(f"add_link {from_id}->{to_id} failed: {future.exception()}")
            return
        self.count("links_sent")
        self.confirmations.sent(from_id, to_id)

    def _retry(self) -> None:
        now, wait = time.monotonic(), self.params["rtabmap.wait_node_sec"]
        for _ in range(len(self._waiting)):
            since, loop = self._waiting.popleft()
            if self._try_send(loop):
                continue
            if now - since < wait:
                self._waiting.append((since, loop))
            elif not self._client.service_is_ready():
                self.count("unmatched.no_add_link_service")
                self.count("unmatched")
            else:
                self.count("unmatched")
        self.warnings.pop("add_link", None)
        if not self._client.service_is_ready():
            self.warnings["add_link"] = f"service {self._client.srv_name} is not available"

    def _on_map_data(self, msg: Any) -> None:
        for node in msg.nodes:
            if node.stamp > 0.0:
                p, q = node.pose.position, node.pose.orientation
                pose = pose_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w)) if (q.x or q.y or q.z or q.w) else None
                self.nodes.add(StampedNode(int(node.id), int(round(node.stamp * 1e9)), pose))
        self._on_map_graph(msg.graph)

    def _on_map_graph(self, graph: Any) -> None:
        if not graph.poses_id and not graph.links:
            return  # an empty graph (map data carrying nodes only) confirms nothing
        accepted, rejected = self.confirmations.graph((link.from_id, link.to_id) for link in graph.links)
        self.count("links_accepted", len(accepted))
        self.count("links_rejected", len(rejected))
        for a, b in rejected:
            self.get_logger().warning(f"RTAB-Map did not keep the link {a}<->{b} (RGBD/OptimizeMaxError, or a "
                                      "node left working memory)")

    def extra_diagnostics(self) -> dict[str, str]:
        return {"nodes_known": str(len(self.nodes)), "links_pending": str(self.confirmations.pending),
                "loops_waiting": str(len(self._waiting))}


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run vpr_ros rtabmap_bridge``)."""
    return run_bridge(RtabmapBridge, "rtabmap_bridge", args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
