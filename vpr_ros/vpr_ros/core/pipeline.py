"""A two-stage pipeline around :class:`LoopClosureDetector`: the model works on frame t+1 while
frame t is searched, verified and (if it loops) given a relative pose.

Stage 1 (one worker thread) pulls frames from the source iterator (for a bag that is reading and
decoding) and runs the model on them; stage 2 runs on the caller's thread, in frame order, and does
exactly what ``LoopClosureDetector.process`` does after the model: the same input checks in the same
order, then ``process_descriptors``. So the results, their order and every per-frame exception
(InputError, StampOrderError, a model error) are those of the sequential loop; only the wall time
differs. The queue between the stages is bounded (``depth`` frames), so memory stays flat however
long the stream is. The model, ONNX Runtime, OpenCV decode, FAISS and the numpy GEMMs of
verification all release the GIL, which is what lets the two stages overlap.

Usage::

    with PipelinedDetector(detector).stream(frames) as items:
        for item in items:
            step = item.process()   # raises the frame's error, as detector.process(frame) would
"""

from __future__ import annotations

import ctypes
import dataclasses
import queue
import threading
import time
from types import TracebackType
from typing import Generic, Iterable, Iterator, TypeVar

from vpr_ros.core.detector import LoopClosureDetector, StepResult
from vpr_ros.core.types import Descriptors, Frame

__all__ = ["PipelinedDetector", "PipelineItem", "FrameStream", "set_compute_threads", "fix_mmap_threshold"]

T = TypeVar("T")

# How often a blocked worker looks at the stop flag (the consumer may stop early at any time).
_POLL_SEC = 0.05


def set_compute_threads(other_threads: int = 1) -> dict[str, int]:
    """Set the thread pools of the libraries beside the model explicitly (process-wide).

    The model's own threads are ``model.threads``, set where the model is loaded (ONNX Runtime
    intra-op with spinning off; the torch backend's ``torch.set_num_threads``, which is also the pool
    of a torch MNN screen). FAISS (OpenMP), OpenCV and numpy's OpenBLAS get ``other_threads``: on a small
    machine the pipeline's second stage then takes one core while the model takes the other, instead
    of both stages' pools fighting over the same cores (measured in docs/benchmarks.md). Returns what
    was set. Libraries that are not installed are skipped.
    """
    done: dict[str, int] = {}
    try:
        import cv2
        cv2.setNumThreads(other_threads)
        done["opencv"] = other_threads
    except ImportError:
        pass
    try:
        import faiss
        faiss.omp_set_num_threads(other_threads)
        done["faiss"] = other_threads
    except ImportError:
        pass
    if _set_openblas_threads(other_threads):
        done["openblas"] = other_threads
    return done


def fix_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Keep glibc malloc serving blocks >= ``nbytes`` by mmap (process-wide; False off glibc).

    glibc raises its mmap threshold each time a large mmapped block is freed, after which the
    per-frame temporaries (model outputs, preprocess tensors) and the keyframes' local maps that the
    map keeps (~180 kB each for lite0) share heap arenas, and the holes the temporaries leave between
    kept maps are never returned: on a 10k-frame replay RSS grew ~160 kB per frame beyond what the
    map holds. With the threshold fixed each large block is its own mapping, returned on free, and
    RSS grows by the map's bytes only (docs/benchmarks.md). Costs one mmap/munmap per large block.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3  # from <malloc.h>
    return bool(mallopt(ctypes.c_int(m_mmap_threshold), ctypes.c_int(nbytes)))


def _set_openblas_threads(threads: int) -> bool:
    """numpy's OpenBLAS (verification's GEMMs) to ``threads``: its default is one busy-waiting thread
    per core, which on 2 cores starves the model's thread (OPENBLAS_NUM_THREADS works only before
    numpy is imported). Found among the loaded libraries, as threadpoolctl does."""
    import numpy  # noqa: F401  (loads the library whose pool this sets)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line.split()[-1]}
    except OSError:
        return False
    found = False
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                found = True
                break
    return found


@dataclasses.dataclass
class _Extracted:
    """What stage 1 produced for one frame: descriptors, or the model's error, and its time."""

    descriptors: Descriptors | None
    error: BaseException | None
    extract_ms: float


class PipelineItem(Generic[T]):
    """One frame of the stream, extracted ahead; :meth:`process` runs stage 2 on it."""

    def __init__(self, detector: LoopClosureDetector, frame: Frame, tag: T, extracted: _Extracted) -> None:
        self.frame = frame
        self.tag = tag  # whatever the source gave with the frame (e.g. its bag message index)
        self._detector = detector
        self._extracted = extracted

    def process(self) -> StepResult:
        """``detector.process(frame)`` with the model's output computed ahead; same errors, same order."""
        det, frame = self._detector, self.frame
        det.check_frame(frame)  # as process(): a rejected frame's descriptors are dropped
        if self._extracted.error is not None:
            raise self._extracted.error
        assert self._extracted.descriptors is not None
        result = det.process_extracted(frame, self._extracted.descriptors, self._extracted.extract_ms)
        return result


class FrameStream(Generic[T]):
    """Iterator of :class:`PipelineItem` in source order; a context manager that stops the worker."""

    _END = object()

    def __init__(self, detector: LoopClosureDetector, source: Iterable[tuple[Frame, T]], depth: int) -> None:
        self._detector = detector
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._work, args=(iter(source),), name="vpr-extract", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SEC)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, source: Iterator[tuple[Frame, T]]) -> None:
        model = self._detector.model
        try:
            for frame, tag in source:
                if self._stop.is_set():
                    return
                if frame.image is None or frame.image.size == 0:
                    extracted = _Extracted(None, None, 0.0)  # stage 2 raises InputError for it
                else:
                    t0 = time.perf_counter()
                    try:
                        desc, error = model.extract([frame.image]), None
                    except Exception as exc:  # surfaces for this frame, in order, in stage 2
                        desc, error = None, exc
                    extracted = _Extracted(desc, error, (time.perf_counter() - t0) * 1e3)
                if not self._put((frame, tag, extracted)):
                    return
        except BaseException as exc:  # the source failed (damaged bag): the consumer raises it in order
            self._put((self._END, exc))
            return
        self._put((self._END, None))

    def __iter__(self) -> "FrameStream[T]":
        return self

    def __next__(self) -> PipelineItem[T]:
        if self._done:
            raise StopIteration
        return self._item(self._queue.get())

    def next_within(self, timeout: float) -> PipelineItem[T] | None:
        """``next(stream)``, or None when no frame is ready within ``timeout`` seconds: for a consumer
        with work of its own between frames (the node's autosave and fleet inbox). StopIteration at
        the end, like ``next``."""
        if self._done:
            raise StopIteration
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return self._item(item)

    def _item(self, item: object) -> PipelineItem[T]:
        if item[0] is self._END:  # type: ignore[index]
            self._done = True
            self._thread.join()
            error = item[1]  # type: ignore[index]
            if error is not None:
                raise error
            raise StopIteration
        frame, tag, extracted = item  # type: ignore[misc]
        return PipelineItem(self._detector, frame, tag, extracted)

    def close(self) -> None:
        """Stop the worker (it may be mid-extract: waits for that frame) and drop what it read ahead."""
        self._stop.set()
        self._done = True
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=_POLL_SEC)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> "FrameStream[T]":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PipelinedDetector:
    """Runs a :class:`LoopClosureDetector` over a frame stream with extraction one frame ahead.

    ``depth``: frames extracted ahead of stage 2 (1-2; more only costs memory: each holds a decoded
    image and its local feature map).
    """

    def __init__(self, detector: LoopClosureDetector, depth: int = 1) -> None:
        if not 1 <= depth <= 8:
            raise ValueError(f"depth={depth}; choose 1 to 8 frames ahead")
        self.detector = detector
        self.depth = depth

    def stream(self, source: Iterable[tuple[Frame, T]]) -> FrameStream[T]:
        """Items for ``(frame, tag)`` pairs of ``source``, which is iterated on the worker thread
        (so the caller must not touch its state meanwhile: pass what it needs in ``tag``)."""
        return FrameStream(self.detector, source, self.depth)
