"""Background OCR of stored keyframes (``text.ocr: background``): a worker thread off the hot path.

The node or replay stores a keyframe as usual, then hands its image to :meth:`OcrWorker.submit`,
which never blocks: the image waits in a bounded queue, and when the queue is full the OLDEST
waiting keyframe is dropped (counted), because a robot cares more about the place it is at now.
The worker reads at most ``text.ocr_rate_hz`` keyframes per second, so OCR takes a bounded share of
the CPU, and delivers each result either through ``on_result(key, readings)`` on the worker thread,
or, without a callback, into an outbox that the owner empties with :meth:`OcrWorker.take_results` on
its own thread. The detector takes no locks, so a node should use the outbox and call
``detector.set_text(key, readings)`` from the thread that runs the detector. A read that raises is
counted and reported through ``on_error``; the worker goes on with the next keyframe.

ROS-free and OCR-library-free: the reader is any object with ``read(image) -> tuple[TextReading, ...]``
(models/ocr.py's :class:`~vpr_ros.models.ocr.OcrReader` in production).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Callable, Hashable, Protocol

import numpy as np
import numpy.typing as npt

from vpr_ros.core.config.text import TextConfig
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.text.place_text import TextReading

__all__ = ["OcrWorker", "OcrWorkerStats", "TextReader"]

log = logging.getLogger(__name__)


class TextReader(Protocol):
    def read(self, image: npt.NDArray[np.uint8]) -> tuple[TextReading, ...]: ...


ResultCallback = Callable[[Hashable, "tuple[TextReading, ...]"], None]
ErrorCallback = Callable[[Hashable, BaseException], None]


@dataclasses.dataclass(frozen=True)
class OcrWorkerStats:
    """Counters since the worker started.

    read: keyframes read and delivered. dropped: waiting keyframes pushed out of the full queue.
    failed: reads (or result callbacks) that raised. discarded: still waiting when the worker was
    closed without draining. pending: waiting now. ms_mean / ms_last: milliseconds per read (OCR only,
    not the wait for the rate limit), 0 before the first.
    """

    read: int = 0
    dropped: int = 0
    failed: int = 0
    discarded: int = 0
    pending: int = 0
    ms_mean: float = 0.0
    ms_last: float = 0.0


def _log_error(key: Hashable, exc: BaseException) -> None:
    log.warning("OCR of keyframe %s failed (%s: %s); its text stays unread", key, type(exc).__name__, exc)


class OcrWorker:
    """One thread reading submitted keyframe images at a bounded rate.

    Args:
        reader: object with ``read(image) -> tuple[TextReading, ...]``; used only by the worker thread.
        on_result: called on the worker thread with (key, readings) after each successful read;
            None keeps the results for :meth:`take_results` (for a single-threaded detector).
        rate_hz: at most this many reads start per second (``text.ocr_rate_hz``).
        max_pending: queue bound; submitting to a full queue drops the oldest waiting keyframe.
        on_error: called on the worker thread with (key, exception) for a failed read or callback;
            by default the failure is logged (``logging``) and the worker goes on.
    """

    def __init__(self, reader: TextReader, on_result: ResultCallback | None = None, *, rate_hz: float = 1.0,
                 max_pending: int = 16, on_error: ErrorCallback | None = None,
                 name: str = "vpr-ocr") -> None:
        if not rate_hz > 0:
            raise ConfigError(f"OCR worker rate_hz must be > 0, got {rate_hz}; set text.ocr_rate_hz")
        if max_pending < 1:
            raise ConfigError(f"OCR worker max_pending must be >= 1, got {max_pending}")
        self._reader = reader
        self._on_result = on_result or self._keep
        self._outbox: list[tuple[Hashable, tuple[TextReading, ...]]] = []
        self._on_error = on_error or _log_error
        self._period_s = 1.0 / rate_hz
        self._queue: collections.deque[tuple[Hashable, npt.NDArray[np.uint8]]] = collections.deque(
            maxlen=max_pending)
        self._cond = threading.Condition()
        self._closed = False
        self._drain = False
        self._busy = False
        self._next_start = 0.0  # monotonic time before which no read may start (rate limit)
        self._read = self._dropped = self._failed = self._discarded = 0
        self._ms_total = self._ms_last = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, reader: TextReader, config: TextConfig, on_result: ResultCallback | None = None,
                    on_error: ErrorCallback | None = None, max_pending: int = 16) -> "OcrWorker":
        return cls(reader, on_result, rate_hz=config.ocr_rate_hz, max_pending=max_pending, on_error=on_error)

    def submit(self, key: Hashable, image: npt.NDArray[np.uint8]) -> bool:
        """Queue ``image`` (copied) for reading as keyframe ``key``. Never blocks.

        Returns False when the worker is closed (nothing queued). A full queue drops its oldest
        entry (``stats().dropped``) to make room.
        """
        copy = np.array(image, copy=True)  # the caller may reuse its buffer for the next frame
        with self._cond:
            if self._closed:
                return False
            if len(self._queue) == self._queue.maxlen:
                self._dropped += 1  # deque(maxlen) pushes the oldest out on append
            self._queue.append((key, copy))
            self._cond.notify_all()
        return True

    def take_results(self) -> list[tuple[Hashable, tuple[TextReading, ...]]]:
        """Results read since the last call, oldest first (only when built without ``on_result``)."""
        with self._cond:
            out, self._outbox = self._outbox, []
        return out

    def _keep(self, key: Hashable, readings: tuple[TextReading, ...]) -> None:
        with self._cond:
            self._outbox.append((key, readings))

    def stats(self) -> OcrWorkerStats:
        with self._cond:
            return OcrWorkerStats(read=self._read, dropped=self._dropped, failed=self._failed,
                                  discarded=self._discarded, pending=len(self._queue),
                                  ms_mean=self._ms_total / self._read if self._read else 0.0,
                                  ms_last=self._ms_last)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is waiting or being read; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, drain: bool = False, timeout: float | None = None) -> OcrWorkerStats:
        """Stop the worker and join its thread; returns the final counters.

        drain=False discards what is still waiting (``discarded``) after the read in progress;
        drain=True reads it all first, without the rate limit (the robot is no longer running, as at
        the end of a replay). Idempotent.
        """
        with self._cond:
            self._closed = True
            self._drain = drain
            if not drain:
                self._discarded += len(self._queue)
                self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout)
        return self.stats()

    def __enter__(self) -> "OcrWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next(self) -> tuple[Hashable, npt.NDArray[np.uint8]] | None:
        with self._cond:
            while True:
                if self._queue and (self._drain or not self._closed):
                    wait = 0.0 if self._drain else self._next_start - time.monotonic()
                    if wait <= 0:
                        self._busy = True
                        return self._queue.popleft()
                    self._cond.wait(wait)  # woken early by close(); re-check everything
                elif self._closed:
                    return None
                else:
                    self._cond.wait()

    def _run(self) -> None:
        while (item := self._next()) is not None:
            key, image = item
            start = time.monotonic()
            with self._cond:
                self._next_start = start + self._period_s
            try:
                readings = tuple(self._reader.read(image))
                elapsed_ms = (time.monotonic() - start) * 1e3
                self._on_result(key, readings)
            except Exception as exc:  # noqa: BLE001 - one bad frame or callback must not end background OCR
                with self._cond:
                    self._failed += 1
                self._report(key, exc)
            else:
                with self._cond:
                    self._read += 1
                    self._ms_last = elapsed_ms
                    self._ms_total += elapsed_ms
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _report(self, key: Hashable, exc: BaseException) -> None:
        try:
            self._on_error(key, exc)
        except Exception:  # noqa: BLE001 - a broken error callback must not end the worker either
            log.exception("OCR error callback failed for keyframe %s", key)
