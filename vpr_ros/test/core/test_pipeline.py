"""PipelinedDetector: the same results, in the same order, with the same per-frame errors, as the
sequential ``LoopClosureDetector.process`` loop (real Corridor frames, the tiny extractor)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import TinyExtractor
from vpr_ros.cli.demo import corridor_frames
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.pipeline import PipelinedDetector
from vpr_ros.core.types import Frame

NS = 1_000_000_000


class FailingExtractor(TinyExtractor):
    """The tiny extractor, failing on images whose top-left pixel is (1, 2, 3) (a 'model error')."""

    def __init__(self, delay_sec: float = 0.0) -> None:
        self.delay_sec = delay_sec
        self.threads: set[str] = set()

    def extract(self, images):
        self.threads.add(threading.current_thread().name)
        if self.delay_sec:
            time.sleep(self.delay_sec)
        if any(tuple(im[0, 0]) == (1, 2, 3) for im in images):
            raise ValueError("model cannot run on this image")
        return super().extract(images)


def _config():
    return config_from_flat({"detector.min_loop_gap_sec": 5.0, "verify.min_matches": 30,
                             "verify.temporal_consistency": 2})


def _stream(count: int = 40) -> list[Frame]:
    """Corridor ref then query traversal at 2 Hz, with a reordered stamp, an empty image and an image
    the model fails on inserted, each followed by frames that must still be processed."""
    images = corridor_frames("ref", count) + corridor_frames("query", count)
    frames = [Frame(i * NS // 2, im) for i, im in enumerate(images)]
    bad = images[5].copy()
    bad[0, 0] = (1, 2, 3)
    frames.insert(10, Frame(frames[9].stamp_ns - 1, images[3]))          # StampOrderError
    frames.insert(20, Frame(frames[19].stamp_ns + 1, np.zeros((0, 0, 3), np.uint8)))  # InputError
    frames.insert(30, Frame(frames[29].stamp_ns + 1, bad))               # the model's ValueError
    return frames


def _summary(step):
    return (step.stamp_ns, None if step.keyframe is None else step.keyframe.id, step.skipped_reason,
            [(v.candidate.keyframe_id, v.candidate.rank, v.candidate.similarity, v.score, v.accepted,
              v.local_matches) for v in step.verifications],
            [(lc.query_id, lc.match_id, lc.score, lc.consistent_keyframes) for lc in step.loop_closures],
            sorted(step.timings_ms))


def _outcome(call):
    try:
        return ("ok", _summary(call()))
    except Exception as exc:  # the test records every error, in order
        return ("error", type(exc).__name__, str(exc))


def test_pipelined_results_equal_the_sequential_loop_errors_included():
    frames = _stream()
    model = FailingExtractor()
    sequential = LoopClosureDetector(_config(), model)
    expected = [_outcome(lambda f=f: sequential.process(f)) for f in frames]

    model.threads.clear()
    pipelined = LoopClosureDetector(_config(), model)
    with PipelinedDetector(pipelined, depth=2).stream((f, i) for i, f in enumerate(frames)) as items:
        got = [(item.tag, _outcome(item.process)) for item in items]

    assert [tag for tag, _ in got] == list(range(len(frames)))
    assert [o for _, o in got] == expected
    kinds = [o[1] for o in expected if o[0] == "error"]
    assert kinds == ["StampOrderError", "InputError", "ValueError"]
    assert sum(1 for o in expected if o[0] == "ok" and o[1][4]) > 0, "the stream must contain loops"
    assert model.threads == {"vpr-extract"}  # the model really ran on the worker thread
    assert [kf.global_.tobytes() for kf in pipelined.keyframes] == \
        [kf.global_.tobytes() for kf in sequential.keyframes]


def test_stages_overlap():
    """With a slow model, a stream takes about max(model, rest) per frame, not the sum."""
    delay, n = 0.05, 12
    frames = [Frame(i * NS, im) for i, im in enumerate(corridor_frames("ref", n))]
    det = LoopClosureDetector(_config(), FailingExtractor(delay_sec=delay))
    t0 = time.perf_counter()
    with PipelinedDetector(det).stream((f, None) for f in frames) as items:
        for item in items:
            item.process()
            time.sleep(delay)  # stage 2 as slow as the model
    wall = time.perf_counter() - t0
    assert wall < 0.75 * 2 * delay * n, f"{wall:.2f} s: the stages did not overlap"


def test_early_stop_and_source_errors():
    frames = [Frame(i * NS, im) for i, im in enumerate(corridor_frames("ref", 30))]
    det = LoopClosureDetector(_config(), FailingExtractor(delay_sec=0.005))
    stream = PipelinedDetector(det, depth=1).stream((f, None) for f in frames)
    with stream as items:
        for i, item in enumerate(items):
            item.process()
            if i == 3:
                break
    assert not stream._thread.is_alive()  # the worker stopped; nothing keeps reading ahead

    def broken():
        yield frames[0], 0
        yield frames[1], 1
        raise OSError("bag is damaged")

    det = LoopClosureDetector(_config(), TinyExtractor())
    seen = []
    with pytest.raises(OSError, match="damaged"):
        with PipelinedDetector(det).stream(broken()) as items:
            for item in items:
                seen.append(item.tag)
                item.process()
    assert seen == [0, 1]  # the frames before the failure were all processed first


def test_depth_is_checked():
    with pytest.raises(ValueError, match="depth"):
        PipelinedDetector(LoopClosureDetector(_config(), TinyExtractor()), depth=0)


def test_next_within_waits_at_most_the_timeout_then_gives_the_frame():
    """The node's stage 2 polls with a timeout so it can autosave and drain the fleet while idle."""
    frames = [Frame(i * NS, im) for i, im in enumerate(corridor_frames("ref", 2))]
    release = threading.Event()

    def source():
        yield frames[0], 0
        release.wait(5.0)  # a camera that pauses
        yield frames[1], 1

    det = LoopClosureDetector(_config(), TinyExtractor())
    with PipelinedDetector(det).stream(source()) as stream:
        first = None
        while first is None:
            first = stream.next_within(0.05)
        assert first.tag == 0
        t0 = time.perf_counter()
        assert stream.next_within(0.1) is None  # nothing ready: back to the caller, not blocked
        assert 0.08 <= time.perf_counter() - t0 < 2.0
        release.set()
        second = None
        while second is None:
            second = stream.next_within(0.05)
        assert second.tag == 1 and second.process().stamp_ns == NS
        with pytest.raises(StopIteration):
            while stream.next_within(0.05) is None:
                pass
