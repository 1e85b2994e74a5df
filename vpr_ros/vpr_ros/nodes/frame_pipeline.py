"""The node's frame processing: a bounded input queue and the thread(s) that empty it.

Callbacks only enqueue (:meth:`FramePipeline.put`). When the model is slower than the camera the
queue drops its oldest frame (counted), so the newest view of the world is processed next and no
callback ever blocks. Two modes (the ``pipeline`` node setting):

- pipelined (default): the two stages of core/pipeline.py. Stage 1 (thread "vpr-extract") takes a
  message from the queue, converts it, checks it and runs the model; stage 2 (thread
  "vpr_ros_processing") searches, verifies and publishes, and between frames autosaves and drains
  the fleet inbox. One extracted frame at most waits between the stages (depth 1), so the model works
  on frame t+1 while frame t is verified.
- sequential: one thread does all of it, frame by frame.

Both give the same keyframes and loop closures in the same order: stage 2 repeats the detector's
checks on each frame in order (``PipelineItem.process``), so a frame the early check in stage 1 let
through is still rejected exactly where the sequential node rejects it. Every frame taken from the
queue ends in exactly one counter (frames_processed, bad_input.<kind> or frames_failed), so
processed + dropped + bad + failed == received once the node is idle; a failure in either stage costs
that frame, never the node. At shutdown the frames still queued or in flight are dropped uncounted.

Threads: besides the model's own (``model.threads``), FAISS, OpenCV and numpy's OpenBLAS get one
thread each in both modes (``set_compute_threads``, as ``vpr-ros replay``), so stage 2 takes one core
beside the model's instead of their default pools fighting it (docs/benchmarks.md, issue 11).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any, Callable, Iterator

from sensor_msgs.msg import CompressedImage, Image

from vpr_ros.core.detector import LoopClosureDetector, StepResult
from vpr_ros.core.errors import InputError, StampOrderError, VprError
from vpr_ros.core.images import ImageTooLargeError
from vpr_ros.core.pipeline import PipelinedDetector, PipelineItem, set_compute_threads
from vpr_ros.core.types import Frame
from vpr_ros.nodes import conversions as conv
from vpr_ros.nodes.geometry_inputs import GeometryInputs
from vpr_ros.nodes.settings import NodeSettings
from vpr_ros.nodes.stats import NodeStats

__all__ = ["FramePipeline"]

# How often an idle processing thread does its between-frames work (autosave, fleet inbox).
_IDLE_SEC = 0.5


@dataclasses.dataclass(frozen=True)
class _Timing:
    """When a frame arrived and was converted (perf_counter seconds), for the latency stages."""

    received: float
    start: float
    converted: float


class FramePipeline:
    """Queue + processing threads of one node around ``detector`` (see the module docstring).

    Hooks into the node: ``publish(result, image)`` after each processed frame (under the detector
    lock), ``between_frames()`` between frames and when idle (autosave, fleet drain),
    ``before_frame()`` right before a frame is searched (fleet drain), ``pose_at(stamp_ns)`` the
    odometry pose of a frame or None (it may wait up to ``odom.wait_sec`` for odometry that has not
    arrived yet: nodes/odom_buffer.py; stage 1's thread, never a callback), ``bad(kind, exc)`` and ``warn(key, text)`` the node's
    counting and throttled logging.
    """

    def __init__(self, detector: LoopClosureDetector, lock: threading.Lock, settings: NodeSettings,
                 stats: NodeStats, inputs: GeometryInputs, *, publish: Callable[[StepResult, Any], None],
                 between_frames: Callable[[], None], before_frame: Callable[[], None],
                 pose_at: Callable[[int], Any], bad: Callable[[str, Exception], None],
                 warn: Callable[[str, str], None]) -> None:
        self.pipelined = settings.pipeline
        self._detector, self._lock, self._settings, self._stats = detector, lock, settings, stats
        self._inputs, self._publish, self._between, self._before = inputs, publish, between_frames, before_frame
        self._pose_at, self._bad, self._warn = pose_at, bad, warn
        self._queue: collections.deque[tuple[Any, float]] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self.threads: dict[str, int] = {}
        self._worker = threading.Thread(target=self._run_pipelined if self.pipelined else self._run_sequential,
                                        name="vpr_ros_processing", daemon=True)

    def start(self) -> None:
        """Set the libraries' thread pools (process-wide) and start processing."""
        self.threads = set_compute_threads(1)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Frames waiting in the input queue (not counting the one or two in flight)."""
        with self._wake:
            return len(self._queue)

    def put(self, msg: Image | CompressedImage) -> None:
        """Enqueue one image message (callback thread; never blocks)."""
        self._stats.count("frames_received")
        with self._wake:
            if len(self._queue) >= self._settings.queue_size:
                self._queue.popleft()
                self._stats.count("frames_dropped")
            self._queue.append((msg, time.perf_counter()))
            self._wake.notify()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop both stages (frames in flight are dropped); False if a thread outlived ``timeout``."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._worker.ident is not None:  # started
            self._worker.join(timeout=timeout)
        return not self._worker.is_alive()

    # -- the two modes ---------------------------------------------------------------------------
    def _run_sequential(self) -> None:
        while not self._stopping:
            self._hook(self._between)  # between frames, so image callbacks never wait for a save
            got = self._take(_IDLE_SEC)
            if got is None:
                continue
            self._hook(self._before)  # other robots' keyframes join the index before this frame
            self._guard(self._one_sequential, *got)

    def _run_pipelined(self) -> None:
        stream = PipelinedDetector(self._detector, depth=1).stream(self._frames())
        try:
            while not self._stopping:
                self._hook(self._between)
                try:
                    item = stream.next_within(_IDLE_SEC)
                except StopIteration:  # stage 1 ended: only at shutdown
                    return
                if item is None or self._stopping:
                    continue
                self._hook(self._before)
                self._guard(self._one_pipelined, item)
        finally:
            stream.close()  # with the flag set, stage 1 leaves its wait; waits for a model call in progress

    def _frames(self) -> Iterator[tuple[Frame, _Timing]]:
        """Stage 1's source (runs on the extraction thread): checked frames, until shutdown."""
        while not self._stopping:
            got = self._take(None)
            if got is None:
                return
            prepared = self._guard(self._prepare, *got, early_check=True)
            if prepared is not None:
                yield prepared

    # -- per frame -------------------------------------------------------------------------------
    def _take(self, timeout: float | None) -> tuple[Any, float] | None:
        with self._wake:
            while not self._queue and not self._stopping:
                if not self._wake.wait(timeout) and timeout is not None:
                    break
            if self._stopping or not self._queue:
                return None
            return self._queue.popleft()

    def _prepare(self, msg: Image | CompressedImage, received: float,
                 early_check: bool = False) -> tuple[Frame, _Timing] | None:
        """Message -> Frame (None: bad input, counted). ``early_check``: the detector's checks against
        the frames stage 2 has finished, so a frame it will reject does not cost a model run."""
        start = time.perf_counter()
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        max_pixels = self._settings.image_max_pixels
        try:
            image = (conv.compressed_msg_to_rgb(msg, max_pixels) if isinstance(msg, CompressedImage)
                     else conv.image_msg_to_rgb(msg, max_pixels))
        except ImageTooLargeError as exc:
            self._bad("too_large", exc)
            return None
        except InputError as exc:
            self._bad(conv.classify_bad_image(msg), exc)
            return None
        size = self._inputs.camera_size
        if size is not None and image.shape[:2] != size:
            self._bad("size_mismatch", InputError(f"image is {image.shape[1]}x{image.shape[0]}, "
                                                  f"camera_info says {size[1]}x{size[0]}"))
            return None
        frame = Frame(stamp_ns, image, self._pose_at(stamp_ns), **self._inputs.frame_inputs(stamp_ns, image.shape[:2]))
        if early_check:
            # Without the lock: the last stamp only grows between resets, so a frame older than it is
            # also older than the frame in stage 2 (raises StampOrderError, counted by _guard).
            self._detector.check_frame(frame)
        return frame, _Timing(received, start, time.perf_counter())

    def _one_sequential(self, msg: Image | CompressedImage, received: float) -> None:
        prepared = self._prepare(msg, received)
        if prepared is None:
            return
        frame, timing = prepared
        t0 = time.perf_counter()
        with self._lock:
            result = self._detector.process(frame)
            self._finish(frame, timing, result, t0, time.perf_counter(), extract_ms=0.0)

    def _one_pipelined(self, item: PipelineItem[_Timing]) -> None:
        t0 = time.perf_counter()
        with self._lock:
            result = item.process()  # the checks again, in order, then search + verify
            # detector = the model's time in stage 1 + this stage's, as in the sequential node.
            self._finish(item.frame, item.tag, result, t0, time.perf_counter(),
                         extract_ms=result.timings_ms.get("extract", 0.0))

    def _finish(self, frame: Frame, timing: _Timing, result: StepResult, t0: float, t1: float,
                extract_ms: float) -> None:
        self._publish(result, frame.image)
        t2 = time.perf_counter()
        self._stats.count("frames_processed")
        timings = {k: v for k, v in result.timings_ms.items() if k != "total"}
        timings.update(queue_wait=(timing.start - timing.received) * 1e3,
                       convert=(timing.converted - timing.start) * 1e3, detector=(t1 - t0) * 1e3 + extract_ms,
                       publish=(t2 - t1) * 1e3, total=(t2 - timing.received) * 1e3)
        self._stats.latency(timings)

    def _guard(self, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one frame's step; its failure becomes that frame's one counter (None returned)."""
        try:
            return step(*args, **kwargs)
        except StampOrderError as exc:
            self._bad("time_backwards", exc)
        except InputError as exc:  # the model's output for this image is unusable (all-zero, NaN)
            self._bad("unusable_image", exc)
        except VprError as exc:  # a core failure costs one frame, never the node
            self._stats.count("frames_failed")
            self._warn("core", f"frame dropped: {exc}")
        except Exception as exc:  # noqa: BLE001 - an unexpected bug must not kill the thread silently
            self._stats.count("frames_failed")
            self._warn("unexpected", f"frame dropped by an unexpected {type(exc).__name__}: {exc}")
        return None

    def _hook(self, hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception as exc:  # noqa: BLE001 - autosave/fleet trouble must not stop the frames
            self._warn("between_frames", f"between frames: unexpected {type(exc).__name__}: {exc}")
