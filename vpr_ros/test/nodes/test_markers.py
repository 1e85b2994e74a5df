"""RViz markers of keyframes and loops (real message classes, no DDS participant)."""

import numpy as np
import pytest

pytest.importorskip("visualization_msgs.msg", reason="ros-jazzy-visualization-msgs is not installed")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from vpr_ros.core.types import LoopClosure  # noqa: E402
from vpr_ros.nodes.markers import LOOP_COLOURS, loop_closure_markers  # noqa: E402


def _loop(q, m, robot="r", pose=None):
    return LoopClosure(q, 0, "r", "s", m, 0, robot, "s", 0.9, 0, "mnn", 150, 400, 0, 150.0, 2, "test", 4,
                       relative_pose=pose)


@pytest.fixture
def positions():
    return {("r", "s", i): np.array([float(i), 2.0 * i, 0.5]) for i in range(5)}


def test_keyframes_and_loops_become_sphere_and_line_lists(positions):
    loops = [_loop(4, 0, pose=np.eye(4)), _loop(3, 1)]
    arr = loop_closure_markers(positions, loops, frame_id="map", stamp_ns=12_500_000_000,
                               rejected=[_loop(2, 0), _loop(4, 9), _loop(4, 1, robot="other")])
    clear, keyframes, edges = arr.markers
    assert clear.action == Marker.DELETEALL
    assert keyframes.type == Marker.SPHERE_LIST and edges.type == Marker.LINE_LIST
    assert keyframes.header.frame_id == edges.header.frame_id == "map"
    assert (keyframes.header.stamp.sec, keyframes.header.stamp.nanosec) == (12, 500_000_000)
    assert [(p.x, p.y, p.z) for p in keyframes.points] == [(i, 2.0 * i, 0.5) for i in range(5)]
    # Three drawable loops (the one to keyframe 9 and the other robot's have no position): 6 vertices.
    assert len(edges.points) == len(edges.colors) == 6
    assert (edges.points[0].x, edges.points[1].x) == (4.0, 0.0)
    colours = [(c.r, c.g, c.b, c.a) for c in edges.colors[::2]]
    expected = [LOOP_COLOURS["pose"], LOOP_COLOURS["appearance"], LOOP_COLOURS["rejected"]]
    assert colours == [tuple(np.float32(v) for v in c) for c in expected]
    assert keyframes.pose.orientation.w == 1.0 and edges.scale.x > 0 and keyframes.scale.x > 0


def test_marker_array_serialises_and_empty_input_still_clears(positions):
    arr = loop_closure_markers(positions, [_loop(4, 0)], frame_id="odom", stamp_ns=0)
    back = deserialize_message(serialize_message(arr), MarkerArray)
    assert len(back.markers) == 3 and len(back.markers[2].points) == 2
    empty = loop_closure_markers({}, [], frame_id="odom", stamp_ns=0)
    assert empty.markers[0].action == Marker.DELETEALL and not empty.markers[1].points
