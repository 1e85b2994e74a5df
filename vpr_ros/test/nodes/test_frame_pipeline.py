"""FramePipeline, the node's processing threads, in process: real detector, tiny model, real
sensor_msgs/Image messages; no DDS (test_node_ros.py runs both modes through real nodes).

- pipelined and sequential publish the same keyframes and loops as the offline detector;
- the pipelined mode really overlaps the model with stage 2;
- every frame ends in exactly one counter, whichever stage fails on it, and later frames go on;
- stopping with frames in flight (model mid-call, stage 1 blocked on the handoff) returns promptly.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector, StepResult
from vpr_ros.core.types import Frame
from vpr_ros.nodes.conversions import rgb_to_image_msg
from vpr_ros.nodes.frame_pipeline import FramePipeline
from vpr_ros.nodes.geometry_inputs import GEOMETRY_INPUT_COUNTERS, GeometryInputs
from vpr_ros.nodes.settings import NodeSettings
from vpr_ros.nodes.stats import NodeStats

from revisit_data import corridor_revisit
from tiny_extractor import TinyExtractor

FRAMES = 20  # per traversal
SEC = 1_000_000_000


class TimedExtractor(TinyExtractor):
    """The tiny model, recording when each call ran (and on which thread)."""

    def __init__(self, delay_sec: float = 0.0) -> None:
        super().__init__(delay_sec)
        self.calls: list[tuple[float, float, str]] = []

    def extract(self, images: Any) -> Any:
        t0 = time.perf_counter()
        out = super().extract(images)
        self.calls.append((t0, time.perf_counter(), threading.current_thread().name))
        return out


def _config() -> Any:
    return config_from_flat({"verify.min_matches": 60})


class Rig:
    """A FramePipeline wired to recording hooks, as LoopClosureNode wires it to its own."""

    def __init__(self, pipelined: bool, model: TinyExtractor, *, publish_sec: float = 0.0,
                 fail_publish_stamp: int | None = None, fail_pose_stamp: int | None = None,
                 queue_size: int = 200) -> None:
        self.detector = LoopClosureDetector(_config(), model)
        self.stats = NodeStats(GEOMETRY_INPUT_COUNTERS)
        settings = NodeSettings(queue_size=queue_size, pipeline=pipelined)
        self.published: list[tuple[int, int | None, list[tuple[int, int, float]]]] = []
        self.publish_spans: list[tuple[float, float]] = []
        self.warnings: list[str] = []
        self.between = 0
        self._publish_sec, self._fail_publish, self._fail_pose = publish_sec, fail_publish_stamp, fail_pose_stamp
        self.pipeline = FramePipeline(
            self.detector, threading.Lock(), settings, self.stats,
            GeometryInputs(settings, self.stats.count, self._warn), publish=self._publish,
            between_frames=self._between, before_frame=lambda: None, pose_at=self._pose_at,
            bad=lambda kind, exc: self.stats.bad_input(kind), warn=self._warn)

    def _warn(self, key: str, text: str) -> None:
        self.warnings.append(text)

    def _between(self) -> None:
        self.between += 1

    def _pose_at(self, stamp_ns: int) -> None:
        if stamp_ns == self._fail_pose:
            raise RuntimeError("odometry buffer broke")  # an unexpected bug in stage 1
        return None

    def _publish(self, result: StepResult, image: Any) -> None:
        t0 = time.perf_counter()
        if self._publish_sec:
            time.sleep(self._publish_sec)
        if result.stamp_ns == self._fail_publish:
            raise RuntimeError("publisher broke")  # an unexpected bug in stage 2
        self.publish_spans.append((t0, time.perf_counter()))
        kf = None if result.keyframe is None else result.keyframe.id
        self.published.append((result.stamp_ns, kf, [(lc.query_id, lc.match_id, lc.score)
                                                     for lc in result.loop_closures]))

    def accounted(self) -> dict[str, int]:
        c = self.stats.counters
        return {"received": c["frames_received"], "processed": c["frames_processed"],
                "dropped": c["frames_dropped"], "failed": c["frames_failed"],
                "bad": sum(self.stats.bad_inputs.values())}

    def run(self, msgs: list[Any], timeout: float = 30.0) -> dict[str, int]:
        """Start, enqueue every message, wait until each one is accounted for, stop."""
        self.pipeline.start()
        try:
            for msg in msgs:
                self.pipeline.put(msg)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                a = self.accounted()
                if a["processed"] + a["dropped"] + a["failed"] + a["bad"] >= len(msgs):
                    break
                time.sleep(0.01)
        finally:
            assert self.pipeline.stop(timeout=10.0)
        return self.accounted()


def _revisit_msgs() -> list[Any]:
    return [rgb_to_image_msg(img, stamp, "camera") for stamp, img in corridor_revisit(FRAMES)]


def _offline() -> list[tuple[int, int | None, list[tuple[int, int, float]]]]:
    detector = LoopClosureDetector(_config(), TinyExtractor())
    out = []
    for stamp, img in corridor_revisit(FRAMES):
        r = detector.process(Frame(stamp, img))
        out.append((r.stamp_ns, None if r.keyframe is None else r.keyframe.id,
                    [(lc.query_id, lc.match_id, lc.score) for lc in r.loop_closures]))
    return out


def _overlaps(spans0: list[tuple[float, float]], spans1: list[tuple[float, float]]) -> int:
    return sum(1 for a0, a1 in spans0 for b0, b1 in spans1 if a0 < b1 and b0 < a1)


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "sequential"])
def test_both_modes_publish_what_the_offline_detector_finds(pipelined):
    expected = _offline()
    assert sum(len(loops) for _, _, loops in expected) >= 5, "the revisit must close loops for this to mean anything"
    # Model and stage 2 equally slow (sleeps): the pipelined mode must run them at the same time.
    model = TimedExtractor(delay_sec=0.02)
    rig = Rig(pipelined, model, publish_sec=0.02)
    a = rig.run(_revisit_msgs())
    assert a == {"received": 2 * FRAMES, "processed": 2 * FRAMES, "dropped": 0, "failed": 0, "bad": 0}, rig.warnings
    assert rig.published == expected  # same frames, keyframes, loops and scores, in the same order
    model_spans = [(t0, t1) for t0, t1, _ in model.calls]
    overlapping = _overlaps(model_spans, rig.publish_spans)
    if pipelined:
        assert {name for _, _, name in model.calls} == {"vpr-extract"}
        # Each model call runs while stage 2 publishes the frame before (a wall-time bound would flake on CI).
        assert overlapping >= FRAMES, f"only {overlapping} model calls overlapped stage 2"
    else:
        assert {name for _, _, name in model.calls} == {"vpr_ros_processing"} and overlapping == 0
    assert rig.between > 0  # the between-frames hook (autosave, fleet) ran


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "sequential"])
def test_a_failure_in_either_stage_costs_one_frame_and_is_counted_once(pipelined):
    (_, img0), (_, img1), (_, img2) = corridor_revisit(3)[:3]
    msgs = [rgb_to_image_msg(img0, 10 * SEC)]
    weird = rgb_to_image_msg(img1, 11 * SEC)
    weird.encoding = "weird16"                                               # stage 1: conversion
    msgs += [weird, rgb_to_image_msg(img1, 5 * SEC),                         # time backwards
             rgb_to_image_msg(np.full((1, 1, 3), 128, np.uint8), 12 * SEC),  # model output all-zero
             rgb_to_image_msg(img1, 13 * SEC),                               # stage 1: pose_at raises
             rgb_to_image_msg(img2, 14 * SEC),                               # stage 2: publish raises
             rgb_to_image_msg(img1, 15 * SEC), rgb_to_image_msg(img2, 16 * SEC)]
    rig = Rig(pipelined, TinyExtractor(), fail_pose_stamp=13 * SEC, fail_publish_stamp=14 * SEC)
    a = rig.run(msgs)
    assert a == {"received": 8, "processed": 3, "dropped": 0, "failed": 2, "bad": 3}, (a, rig.warnings)
    bad = {k: v for k, v in rig.stats.bad_inputs.items() if v}
    assert bad == {"unknown_encoding": 1, "time_backwards": 1, "unusable_image": 1}
    assert [s for s, _, _ in rig.published] == [10 * SEC, 15 * SEC, 16 * SEC]  # frames after failures go on
    assert any("odometry buffer broke" in w for w in rig.warnings)
    assert any("publisher broke" in w for w in rig.warnings)


def test_early_check_spares_the_model_a_frame_the_detector_rejects():
    """Stage 1 checks the stamp before the model runs, like the sequential detector.process."""
    _, img = corridor_revisit(1)[0]
    model = TimedExtractor()
    rig = Rig(True, model)
    rig.pipeline.start()
    try:
        rig.pipeline.put(rgb_to_image_msg(img, 10 * SEC))
        end = time.monotonic() + 10
        while rig.stats.counters["frames_processed"] < 1 and time.monotonic() < end:
            time.sleep(0.01)
        rig.pipeline.put(rgb_to_image_msg(img, 5 * SEC))
        while rig.stats.bad_inputs["time_backwards"] < 1 and time.monotonic() < end:
            time.sleep(0.01)
    finally:
        assert rig.pipeline.stop()
    assert rig.stats.bad_inputs["time_backwards"] == 1 and len(model.calls) == 1


@pytest.mark.parametrize("case", ["model_mid_call", "stage1_blocked_on_handoff"])
def test_stop_with_frames_in_flight_returns_promptly(case):
    msgs = _revisit_msgs()[:12]
    if case == "model_mid_call":
        rig = Rig(True, TimedExtractor(delay_sec=0.3))
    else:  # stage 2 slow: one frame in stage 2, one extracted waiting, stage 1 blocked putting the next
        rig = Rig(True, TimedExtractor(), publish_sec=0.3)
    rig.pipeline.start()
    for msg in msgs:
        rig.pipeline.put(msg)
    time.sleep(0.45)
    t0 = time.perf_counter()
    assert rig.pipeline.stop(timeout=5.0)
    assert time.perf_counter() - t0 < 1.5
    assert not [t for t in threading.enumerate() if t.name == "vpr-extract" and t.is_alive()]
    a = rig.accounted()
    # Frames still queued or in flight are dropped uncounted; nothing is counted twice.
    assert a["received"] == 12 and a["processed"] + a["failed"] + a["bad"] < 12 and a["failed"] == a["bad"] == 0
