"""RViz markers of keyframes and loops (real message classes, no DDS participant)."""

import numpy as np
import pytest

pytest.importorskip("visualization_msgs.msg", reason="ros-jazzy-visualization-msgs is not installed")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from vpr_ros.core.eval import loop_class  # noqa: E402
from vpr_ros.core.types import Keyframe, LoopClosure  # noqa: E402
from vpr_ros.nodes.markers import LOOP_COLOURS, MarkerTrail, loop_closure_markers  # noqa: E402


def _loop(q, m, robot="r", pose=None, mnn=150, rejection=""):
    return LoopClosure(q, 0, "r", "s", m, 0, robot, "s", 0.9, 0, "mnn", mnn, 400, 0, 150.0, 2, "test", 4,
                       relative_pose=pose, geometry_rejection=rejection)


@pytest.fixture
def positions():
    return {("r", "s", i): np.array([float(i), 2.0 * i, 0.5]) for i in range(5)}


def test_keyframes_and_loops_become_sphere_and_line_lists(positions):
    loops = [_loop(4, 0, pose=np.eye(4), mnn=300), _loop(3, 1, mnn=121)]  # clear / just past min_matches 120
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
    expected = [LOOP_COLOURS["correct"], LOOP_COLOURS["suspect"], LOOP_COLOURS["rejected"]]
    assert colours == [tuple(np.float32(v) for v in c) for c in expected]
    assert keyframes.pose.orientation.w == 1.0 and edges.scale.x > 0 and keyframes.scale.x > 0


def test_marker_array_serialises_and_empty_input_still_clears(positions):
    arr = loop_closure_markers(positions, [_loop(4, 0)], frame_id="odom", stamp_ns=0)
    back = deserialize_message(serialize_message(arr), MarkerArray)
    assert len(back.markers) == 3 and len(back.markers[2].points) == 2
    empty = loop_closure_markers({}, [], frame_id="odom", stamp_ns=0)
    assert empty.markers[0].action == Marker.DELETEALL and not empty.markers[1].points


def _rgba(c):
    return (c.r, c.g, c.b, c.a)


def test_loop_colours_come_from_the_one_colour_code(positions):
    """Markers, report and plots share core/eval/loop_class.py: one colour per class, all different."""
    assert LOOP_COLOURS is loop_class.COLOURS
    assert len({loop_class.COLOURS[c] for c in loop_class.CLASSES}) == 3
    weak_geometry = _loop(2, 0, mnn=400, rejection="too_few_inliers")  # geometry found no pose: suspect
    arr = loop_closure_markers(positions, [_loop(4, 0, mnn=300), weak_geometry], frame_id="odom", stamp_ns=0,
                               rejected=[_loop(3, 1, mnn=300)], min_matches=120)
    got = [_rgba(c) for c in arr.markers[2].colors[::2]]
    assert got == [tuple(np.float32(v) for v in loop_class.COLOURS[c])
                   for c in (loop_class.CORRECT, loop_class.SUSPECT, loop_class.REJECTED)]


def _keyframe(i, x):
    pose = np.eye(4)
    pose[0, 3] = x
    return Keyframe(i, i * 100, "r", "s", np.ones(4, np.float32), pose=pose)


def test_trail_markers_are_in_the_frame_of_the_odometry():
    """Keyframe positions come from nav_msgs/Odometry: the markers take its header.frame_id, not 'map'."""
    trail = MarkerTrail(min_matches=120)
    trail.odometry_frame("odom_wheels")
    trail.add(_keyframe(0, 0.0), [])
    trail.add(_keyframe(1, 1.0), [_loop(1, 0, mnn=300)])
    arr = trail.message("map", 5)
    assert {m.header.frame_id for m in arr.markers} == {"odom_wheels"}
    assert len(arr.markers[2].points) == 2  # the loop edge between the two keyframes, in that frame too
    trail.odometry_frame("odom2")  # a new frame redraws
    assert {m.header.frame_id for m in trail.message("map", 6).markers} == {"odom2"}
    bare = MarkerTrail()  # odometry without a frame_id: the node's map frame
    bare.odometry_frame("")
    bare.add(_keyframe(0, 0.0), [])
    assert bare.message("map", 5).markers[1].header.frame_id == "map"


def test_node_hands_the_odometry_frame_to_the_markers():
    """LoopClosureNode._on_odom passes each Odometry message's header.frame_id to its MarkerTrail."""
    from types import SimpleNamespace

    from nav_msgs.msg import Odometry
    from vpr_ros.nodes.loop_closure_node import LoopClosureNode

    trail, poses = MarkerTrail(), []
    node = SimpleNamespace(stats=SimpleNamespace(count=lambda *a: None), _markers=trail,
                           _odom=SimpleNamespace(add=lambda t, p: poses.append(p)), _bad=None)
    msg = Odometry()
    msg.header.frame_id = "odom"
    msg.pose.pose.orientation.w = 1.0
    LoopClosureNode._on_odom(node, msg)
    trail.add(_keyframe(0, 0.0), [])
    assert len(poses) == 1 and trail.message("map", 0).markers[1].header.frame_id == "odom"
