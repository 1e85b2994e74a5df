"""replay_bag with the pipeline on and off: the same ReplayResult (outcomes, loops, counters, bag
statistics), on a real Corridor bag with a reordered stamp, also when it stops early."""

from __future__ import annotations

import dataclasses

import cv2
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from conftest import TinyExtractor
from vpr_ros.cli.demo import corridor_frames
from vpr_ros.cli.session import replay_bag
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import StampOrderError
from vpr_ros.io.msgdefs import typestore

NS = 1_000_000_000
TOPIC = "/camera/image"


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """JPEG CompressedImage bag; record times increase, message 12's header stamp goes back 1 ns."""
    images = corridor_frames("ref", 30) + corridor_frames("query", 30)
    stamps = [(i + 1) * NS // 2 for i in range(len(images))]
    images.insert(12, images[2])
    stamps.insert(12, stamps[11] - 1)
    store = typestore()
    path = tmp_path_factory.mktemp("bag") / "corridor"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/CompressedImage", typestore=store)
        for i, (stamp, image) in enumerate(zip(stamps, images)):
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            assert ok
            header = store.types["std_msgs/msg/Header"](
                stamp=store.types["builtin_interfaces/msg/Time"](sec=stamp // NS, nanosec=stamp % NS),
                frame_id="cam")
            msg = store.types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                                  data=jpeg.reshape(-1))
            writer.write(conn, (i + 1) * NS, store.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    return path


def _replay(bag, pipeline, **kw):
    config = config_from_flat({"detector.min_loop_gap_sec": 5.0, "verify.min_matches": 30,
                               "verify.temporal_consistency": 2})
    return replay_bag(LoopClosureDetector(config, TinyExtractor()), bag, TOPIC, pipeline=pipeline, **kw)


def _comparable(result):
    fields = dataclasses.asdict(result)
    fields.pop("timings_ms")
    fields.pop("_lookup")
    return repr(fields), sorted(result.timings_ms), [len(v) for v in result.timings_ms.values()]


@pytest.mark.parametrize("max_frames", [None, 17])
def test_pipeline_gives_the_sequential_result(bag, max_frames):
    sequential = _replay(bag, False, max_frames=max_frames)
    pipelined = _replay(bag, True, max_frames=max_frames)
    assert sequential.stamps_backwards == 1
    assert sequential.num_frames == (60 if max_frames is None else max_frames)
    if max_frames is None:
        assert sequential.loop_closures, "the replay must find loops for the comparison to mean anything"
    # the pipeline reads ahead, yet reports the bag statistics of the point where the loop stopped
    assert sequential.stats.images == (61 if max_frames is None else max_frames + 2)
    assert _comparable(pipelined) == _comparable(sequential)


def test_abort_on_backwards_stamp_names_the_message(bag):
    for pipeline in (False, True):
        with pytest.raises(StampOrderError, match="message 12 of"):
            _replay(bag, pipeline, on_stamp_backwards="abort")


def test_pipelined_keyframes_are_the_sequential_ones_thumbnails_included(bag):
    # Stage 2 runs the detector's own post-model step, so nothing a keyframe carries can differ.
    dets = {}
    for pipeline in (False, True):
        config = config_from_flat({"detector.min_loop_gap_sec": 5.0, "verify.min_matches": 30})
        dets[pipeline] = LoopClosureDetector(config, TinyExtractor())
        replay_bag(dets[pipeline], bag, TOPIC, pipeline=pipeline)
    seq, pipe = dets[False].keyframes, dets[True].keyframes
    assert len(seq) == len(pipe) > 0 and all(k.thumbnail for k in pipe)
    assert [k.thumbnail for k in seq] == [k.thumbnail for k in pipe]
