"""Damaged rosbag2 storage: truncated MCAP is read as far as it goes, the rest are BagErrors."""

import shutil

import numpy as np
import pytest

from conftest import corridor_image
from vpr_ros.core.errors import BagError
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_image_bag
from vpr_ros.io.bags import ImageBag, bag_topics

NS = 1_000_000_000
N = 10


@pytest.fixture(scope="module")
def mcap_bag(tmp_path_factory):
    frames = [Frame((i + 1) * NS, corridor_image("query", i)) for i in range(N)]
    return write_image_bag(tmp_path_factory.mktemp("b") / "bag", frames, "/cam", encoding="rgb8",
                           storage="mcap")


def _frames(path):
    with ImageBag(path, "/cam") as bag:
        return list(bag), bag.stats


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_mcap_yields_the_intact_prefix(tmp_path, mcap_bag, keep):
    bag = tmp_path / "bag"
    shutil.copytree(mcap_bag, bag)
    data_file = next(bag.glob("*.mcap"))
    data = data_file.read_bytes()
    data_file.write_bytes(data[:int(len(data) * keep)])
    intact, _ = _frames(mcap_bag)
    frames, stats = _frames(bag)
    assert stats.salvaged and 0 < len(frames) < N
    assert stats.lost_messages == N - len(frames)
    assert 0 < stats.lost_bytes < len(data) * (1 - keep) + len(data) / N  # at most one frame's bytes
    for got, want in zip(frames, intact):  # the prefix, bit for bit
        assert got.stamp_ns == want.stamp_ns
        np.testing.assert_array_equal(got.image, want.image)
    assert "/cam" in bag_topics(bag)


def test_mcap_without_any_message_left_is_a_bag_error(tmp_path, mcap_bag):
    bag = tmp_path / "bag"
    shutil.copytree(mcap_bag, bag)
    data_file = next(bag.glob("*.mcap"))
    data_file.write_bytes(data_file.read_bytes()[:100])
    with pytest.raises(BagError, match="cannot open bag"):
        _frames(bag)


def test_a_file_is_not_a_bag(tmp_path):
    (tmp_path / "x.db3").write_bytes(b"SQLite format 3\0")
    with pytest.raises(BagError, match="not a directory"):
        _frames(tmp_path / "x.db3")


def test_truncated_zstd_mcap_keeps_what_decompresses(tmp_path):
    # rosbag2's MCAP writer compresses chunks with zstd by default: a cut-off chunk is read in part
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

    from vpr_ros.core.images import rgb_to_raw
    from vpr_ros.io.msgdefs import typestore

    store = typestore()
    types = store.types
    writer = Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=store)
        for i in range(40):  # about 2 MB: two zstd chunks
            h, w, step, data = rgb_to_raw(corridor_image("ref", i), "rgb8")
            stamp = types["builtin_interfaces/msg/Time"](sec=i + 1, nanosec=0)
            msg = types["sensor_msgs/msg/Image"](
                header=types["std_msgs/msg/Header"](stamp=stamp, frame_id="cam"), height=h, width=w,
                encoding="rgb8", is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
            writer.write(conn, (i + 1) * NS, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    intact, _ = _frames(tmp_path / "bag")
    data_file = next((tmp_path / "bag").glob("*.mcap"))
    data = data_file.read_bytes()
    data_file.write_bytes(data[:int(len(data) * 0.9)])
    frames, stats = _frames(tmp_path / "bag")
    # the first chunk is whole; most of the second is decompressed up to the cut
    assert stats.salvaged and 30 <= len(frames) < 40 and stats.lost_messages == 40 - len(frames)
    for got, want in zip(frames, intact):
        np.testing.assert_array_equal(got.image, want.image)
