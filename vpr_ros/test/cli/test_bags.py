"""rosbag2 I/O through real rosbags bags (sqlite3 and mcap): images, poses, errors, LoopClosure output."""

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from conftest import corridor_image
from vpr_ros.core.errors import BagError
from vpr_ros.core.images import image_from_raw, rgb_to_raw
from vpr_ros.core.types import Frame, LoopClosure
from vpr_ros.io.bag_writer import write_image_bag, write_loop_closures
from vpr_ros.io.bags import ImageBag, bag_topics
from vpr_ros.io.msgdefs import LOOP_CLOSURE_TYPE, typestore
from vpr_ros.io.poses import pose_matrix

NS = 1_000_000_000
REPO = Path(__file__).resolve().parents[3]
ENCODINGS = ["mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8", "png", "jpeg"]


def test_packaged_msg_is_identical_to_the_interface_package():
    shipped = (resources.files("vpr_ros") / "data" / "LoopClosure.msg").read_bytes()
    assert shipped == (REPO / "vpr_ros_msgs" / "msg" / "LoopClosure.msg").read_bytes()


@pytest.fixture(scope="module")
def images():
    return [corridor_image("ref", i) for i in range(3)]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_round_trips_through_a_bag(tmp_path, images, storage, encoding):
    frames = [Frame((i + 1) * NS, im) for i, im in enumerate(images)]
    path = write_image_bag(tmp_path / "bag", frames, "/cam", encoding=encoding, storage=storage)
    with ImageBag(path, "/cam") as bag:
        assert bag.num_images == 3
        out = list(bag)
    assert [f.stamp_ns for f in out] == [NS, 2 * NS, 3 * NS]
    for frame, original in zip(out, images):
        assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8
        if encoding in ("mono8", "mono16"):
            expected = image_from_raw("mono8", *rgb_to_raw(original, "mono8"))
            np.testing.assert_array_equal(frame.image, expected)
        elif encoding == "jpeg":
            assert np.abs(frame.image.astype(int) - original).mean() < 4.0
        else:
            np.testing.assert_array_equal(frame.image, original)


@pytest.mark.parametrize("pose_type", ["odometry", "pose"])
def test_poses_are_interpolated_at_image_stamps(tmp_path, images, pose_type):
    # poses at 0, 1, 2 s moving 1 m/s along x and turning 90 deg/s; images at 0.5 s and 2.2 s
    yaw = [pose_matrix((float(i), 0.0, 0.0), (0.0, 0.0, np.sin(np.pi / 4 * i), np.cos(np.pi / 4 * i)))
           for i in range(3)]
    path = tmp_path / "bag"
    store = typestore()
    write_image_bag(path, [Frame(i * NS, images[0], yaw[i]) for i in range(3)], "/cam",
                    pose_topic="/odom", pose_type=pose_type)
    # re-read the poses and query them at stamps of our choosing through the track
    with ImageBag(path, "/cam", "/odom", max_pose_gap_sec=1.5) as bag:
        track = bag.pose_track()
        frames = list(bag)
    assert store is typestore() and len(track) == 3 and bag.stats.poses == 3
    np.testing.assert_allclose(frames[1].pose, yaw[1], atol=1e-9)
    mid = track.at(NS // 2)
    np.testing.assert_allclose(mid[:3, 3], [0.5, 0, 0], atol=1e-9)
    angle = np.degrees(np.arctan2(mid[1, 0], mid[0, 0]))
    assert angle == pytest.approx(45.0)
    np.testing.assert_allclose(track.at(2 * NS + NS // 5), yaw[2])  # nearest within the gap
    assert track.at(4 * NS) is None                                  # 2 s from any pose


def test_missing_topic_lists_the_topics(tmp_path, images):
    path = write_image_bag(tmp_path / "bag", [Frame(NS, images[0], np.eye(4))], "/cam",
                           pose_topic="/odom")
    assert bag_topics(path) == {"/cam": "sensor_msgs/msg/Image", "/odom": "nav_msgs/msg/Odometry"}
    with pytest.raises(BagError, match="'/camera/image_raw' is not in bag") as err:
        ImageBag(path, "/camera/image_raw")
    assert "/cam [sensor_msgs/msg/Image]" in str(err.value) and "/odom" in str(err.value)
    with pytest.raises(BagError, match="has type nav_msgs/msg/Odometry"):
        ImageBag(path, "/odom")
    with pytest.raises(BagError, match="does not exist"):
        ImageBag(tmp_path / "nope", "/cam")


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_corrupt_messages_are_skipped_and_counted(tmp_path, images, storage):
    store = typestore()
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]

    def image_msg(sec, data, encoding="rgb8"):
        h, w, step, _ = rgb_to_raw(images[0])
        return store.serialize_cdr(Image(header=Header(stamp=Time(sec=sec, nanosec=0), frame_id="c"),
                                         height=h, width=w, encoding=encoding, is_bigendian=0, step=step,
                                         data=np.frombuffer(data, np.uint8)), Image.__msgtype__)

    good = rgb_to_raw(images[0])[3]
    path = tmp_path / "bag"
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conn = writer.add_connection("/cam", Image.__msgtype__, typestore=store)
        writer.write(conn, 1 * NS, image_msg(1, good))
        writer.write(conn, 2 * NS, b"\x00\x01\x00\x00garbage")        # not CDR of an Image
        writer.write(conn, 3 * NS, image_msg(3, good[:100]))           # truncated pixel data
        writer.write(conn, 4 * NS, image_msg(4, good, "yuv422"))       # unsupported encoding
        writer.write(conn, 5 * NS, image_msg(5, good))
    with ImageBag(path, "/cam") as bag:
        frames = [(f.stamp_ns, bag.message_index) for f in bag]
    assert frames == [(NS, 0), (5 * NS, 4)]
    assert bag.stats.corrupt == 3 and bag.stats.images == 2
    text = " ".join(bag.stats.corrupt_examples)
    assert "truncated" in text and "yuv422" in text


def _loop(i: int, pose: bool) -> LoopClosure:
    rel = pose_matrix((1.0, 2.0, 3.0), (0.0, 0.0, np.sin(0.25), np.cos(0.25))) if pose else None
    return LoopClosure(
        query_id=100 + i, query_stamp_ns=50 * NS + i, query_robot_id="r1", query_session_id="s2",
        match_id=i, match_stamp_ns=NS + i, match_robot_id="r0", match_session_id="s1",
        global_similarity=0.75, retrieval_rank=2, verification_method="mnn", local_matches=123,
        local_features=400, geometric_inliers=0, score=123.0, consistent_keyframes=3,
        descriptor_model="tiny@test", descriptor_dim=108, relative_pose=rel,
        covariance=np.diag(np.arange(1.0, 7.0)) if pose else None)


@pytest.mark.parametrize("storage, version", [("mcap", 9), ("sqlite3", 9), ("mcap", 8)])
def test_loop_closure_bag_reads_back_with_the_empty_typestore(tmp_path, storage, version):
    path = write_loop_closures(tmp_path / "lc", [_loop(1, True), _loop(0, False)], frame_id="world",
                               storage=storage, version=version)
    with AnyReader([path], default_typestore=get_typestore(Stores.EMPTY)) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {"/loop_closures": LOOP_CLOSURE_TYPE}
        msgs = [(ts, reader.deserialize(raw, c.msgtype)) for c, ts, raw in reader.messages()]
    assert [ts for ts, _ in msgs] == [50 * NS, 50 * NS + 1]      # ordered by query stamp
    plain, posed = msgs[0][1], msgs[1][1]
    assert posed.header.frame_id == "world"
    assert (posed.header.stamp.sec, posed.header.stamp.nanosec) == (50, 1)
    assert (posed.query_keyframe_id, posed.match_keyframe_id) == (101, 1)
    assert (posed.query_robot_id, posed.query_session_id) == ("r1", "s2")
    assert (posed.match_robot_id, posed.match_session_id) == ("r0", "s1")
    assert (posed.match_stamp.sec, posed.match_stamp.nanosec) == (1, 1)
    assert posed.global_similarity == pytest.approx(0.75) and posed.retrieval_rank == 2
    assert (posed.local_matches, posed.local_features, posed.consistent_keyframes) == (123, 400, 3)
    assert posed.verification_method == "mnn" and posed.score == pytest.approx(123.0)
    assert posed.descriptor_model == "tiny@test" and posed.descriptor_dim == 108
    assert posed.relative_pose_valid and not plain.relative_pose_valid
    p = posed.relative_pose.pose
    assert (p.position.x, p.position.y, p.position.z) == (1.0, 2.0, 3.0)
    assert p.orientation.z == pytest.approx(np.sin(0.25)) and p.orientation.w == pytest.approx(np.cos(0.25))
    np.testing.assert_allclose(posed.relative_pose.covariance, np.diag(np.arange(1.0, 7.0)).reshape(36))
    assert plain.relative_pose.pose.orientation.w == 1.0
    assert not np.any(plain.relative_pose.covariance)


def test_writer_refuses_to_overwrite(tmp_path):
    write_loop_closures(tmp_path / "lc", [])
    with pytest.raises(BagError, match="already exists"):
        write_loop_closures(tmp_path / "lc", [])
    with pytest.raises(BagError, match="storage 'rosbag1'"):
        write_loop_closures(tmp_path / "other", [], storage="rosbag1")
