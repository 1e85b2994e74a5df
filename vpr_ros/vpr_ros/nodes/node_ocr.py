"""OCR of the node's keyframes (``text.ocr``, docs/place_text.md "In the node").

background: every new keyframe's image goes to the OCR worker (core/text/ocr_worker.py) after the keyframe
is stored; the worker reads at most ``text.ocr_rate_hz`` keyframes per second on its own thread and
its results join the map through ``detector.set_text`` under the node's detector lock. inline: the
detector reads each new keyframe itself before verification (``detector.text_reader``).

Optional by design: with OCR on and rapidocr missing (or its models failing to load) the node logs
one clear error and runs without OCR, because loop closure must not depend on reading text.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Sequence

from vpr_ros.core.config.text import TextConfig
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import VprError
from vpr_ros.core.text.ocr_worker import OcrWorker
from vpr_ros.core.text.place_text import TextReading
from vpr_ros.core.types import Keyframe

__all__ = ["NodeOcr", "Identity", "keyframe_identity"]

#: (robot, session, id, stamp): names one keyframe across a reset or load_map, which reuse map keys.
Identity = tuple[str, str, int, int]


def keyframe_identity(kf: Keyframe) -> Identity:
    return kf.robot_id, kf.session_id, kf.id, kf.stamp_ns


class NodeOcr:
    """The node's OCR, per ``text.ocr``; :attr:`mode` is "unavailable" when OCR was asked for but cannot run."""

    def __init__(self, config: TextConfig, detector: LoopClosureDetector, lock: threading.Lock, logger: Any,
                 warn: Callable[[str, str], None], changed: Callable[[], None] = lambda: None) -> None:
        self.mode = config.ocr
        self._detector = detector
        self._lock = lock
        self._warn = warn
        self._changed = changed  # the map holds new text: autosave must write a snapshot map
        self._worker: OcrWorker | None = None
        self.stale = 0  # results for keyframes no longer in the map (reset or load_map meanwhile)
        if self.mode == "off":
            return
        try:
            from vpr_ros.models.ocr import OcrReader  # the OCR models load only when asked for

            reader = OcrReader(config)
        except VprError as exc:
            logger.error(f"text.ocr={self.mode}, but OCR cannot run, so the node runs without it: {exc}")
            self.mode = "unavailable"
            return
        if self.mode == "inline":
            detector.text_reader = reader
        else:
            self._worker = OcrWorker.from_config(reader, config, self._apply, self._on_error)

    def submit(self, key: int, identity: Identity, image: Any) -> None:
        """A new keyframe (map key ``key``) and its image; never blocks (the worker drops the oldest)."""
        if self._worker is not None:
            self._worker.submit((key, identity), image)

    def _apply(self, job: tuple[int, Identity], readings: Sequence[TextReading]) -> None:
        key, identity = job
        with self._lock:
            if key >= self._detector.num_keyframes or keyframe_identity(self._detector.keyframe(key)) != identity:
                self.stale += 1  # the map was reset or replaced while the keyframe was being read
                return
            self._detector.set_text(key, readings)
            self._changed()

    def _on_error(self, job: tuple[int, Identity], exc: BaseException) -> None:
        _, (robot, session, kf_id, _) = job
        self._warn("ocr", f"OCR of keyframe {kf_id} ({robot}/{session}) failed, it stays without text: "
                          f"{type(exc).__name__}: {exc}")

    def diagnostics(self) -> dict[str, str]:
        out = {"ocr.mode": self.mode}
        if self._worker is not None:
            stats = dataclasses.asdict(self._worker.stats())
            out.update({f"ocr.{k}": f"{v:.1f}" if isinstance(v, float) else str(v) for k, v in stats.items()})
            out["ocr.stale"] = str(self.stale)
        return out

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
