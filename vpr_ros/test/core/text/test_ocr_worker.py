"""OcrWorker (core/text/ocr_worker.py): rate limit, bounded queue dropping the oldest, failures counted
and survived, results delivered; plus one run with the real OCR reader on a real EuRoC frame."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vpr_ros.core.config.text import TextConfig
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.text.ocr_worker import OcrWorker
from vpr_ros.core.text.place_text import TextReading

DATA = Path(__file__).resolve().parents[2] / "data"


class PixelReader:
    """A real (trivial) reader: 'reads' the image's first pixel value as text; records start times.
    Raises on images whose first pixel is 255, to exercise failures; blocks while `gate` is clear."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def read(self, image: np.ndarray) -> tuple[TextReading, ...]:
        self.starts.append(time.monotonic())
        self.started.set()
        self.gate.wait(5.0)
        value = int(image.flat[0])
        if value == 255:
            raise ValueError("unreadable frame")
        return (TextReading(str(value), 1.0, ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))),)


def _img(value: int) -> np.ndarray:
    return np.full((4, 4), value, np.uint8)


class Results:
    def __init__(self) -> None:
        self.items: list[tuple[object, tuple[TextReading, ...]]] = []
        self.errors: list[tuple[object, BaseException]] = []

    def on_result(self, key: object, readings: tuple[TextReading, ...]) -> None:
        self.items.append((key, readings))

    def on_error(self, key: object, exc: BaseException) -> None:
        self.errors.append((key, exc))


def test_results_are_delivered_in_order_with_counters() -> None:
    reader, out = PixelReader(), Results()
    with OcrWorker(reader, out.on_result, rate_hz=100.0, on_error=out.on_error) as worker:
        for k in range(3):
            assert worker.submit(k, _img(10 + k))
        assert worker.wait_idle(5.0)
        stats = worker.stats()
    assert [(k, r[0].text) for k, r in out.items] == [(0, "10"), (1, "11"), (2, "12")]
    assert (stats.read, stats.dropped, stats.failed, stats.pending) == (3, 0, 0, 0)
    assert stats.ms_mean > 0.0 and stats.ms_last > 0.0


def test_rate_limit_spaces_reads() -> None:
    reader, out = PixelReader(), Results()
    worker = OcrWorker(reader, out.on_result, rate_hz=10.0)
    for k in range(4):
        worker.submit(k, _img(k))
    assert worker.wait_idle(5.0)
    worker.close()
    gaps = np.diff(reader.starts)
    assert len(out.items) == 4
    # 10 Hz: 100 ms between starts (less a margin for the reader being descheduled on a busy CI box)
    assert gaps.min() >= 0.08, gaps


def test_full_queue_drops_the_oldest_and_never_blocks() -> None:
    reader, out = PixelReader(), Results()
    reader.gate.clear()
    worker = OcrWorker(reader, out.on_result, rate_hz=100.0, max_pending=3)
    worker.submit("busy", _img(1))
    assert reader.started.wait(5.0)  # the worker holds "busy"; the queue is empty again
    t0 = time.monotonic()
    for k in range(6):
        worker.submit(k, _img(k))
    assert time.monotonic() - t0 < 0.5  # submit returned while the reader is stuck
    assert worker.stats().dropped == 3 and worker.stats().pending == 3
    reader.gate.set()
    assert worker.wait_idle(5.0)
    worker.close()
    assert [k for k, _ in out.items] == ["busy", 3, 4, 5]


def test_a_failed_read_is_counted_reported_and_the_worker_goes_on() -> None:
    reader, out = PixelReader(), Results()
    worker = OcrWorker(reader, out.on_result, rate_hz=100.0, on_error=out.on_error)
    worker.submit("bad", _img(255))
    worker.submit("good", _img(7))
    assert worker.wait_idle(5.0)
    stats = worker.close()
    assert (stats.read, stats.failed) == (1, 1)
    assert [k for k, _ in out.errors] == ["bad"] and isinstance(out.errors[0][1], ValueError)
    assert [k for k, _ in out.items] == ["good"]


def test_a_failing_result_callback_is_counted_and_survived() -> None:
    reader, seen = PixelReader(), []

    def on_result(key: object, readings: tuple[TextReading, ...]) -> None:
        seen.append(key)
        if key == 0:
            raise KeyError("keyframe 0 is not in the map")

    errors: list[object] = []
    worker = OcrWorker(reader, on_result, rate_hz=100.0, on_error=lambda k, e: errors.append(k))
    worker.submit(0, _img(0))
    worker.submit(1, _img(1))
    assert worker.wait_idle(5.0)
    stats = worker.close()
    assert seen == [0, 1] and errors == [0]
    assert (stats.read, stats.failed) == (1, 1)


def test_close_discards_or_drains_what_is_waiting() -> None:
    for drain, expect_read, expect_discarded in ((False, 1, 4), (True, 5, 0)):
        reader, out = PixelReader(), Results()
        worker = OcrWorker(reader, out.on_result, rate_hz=0.5)  # 2 s between reads: the rest must wait
        for k in range(5):
            worker.submit(k, _img(k))
        assert reader.started.wait(5.0)
        t0 = time.monotonic()
        stats = worker.close(drain=drain, timeout=5.0)
        assert time.monotonic() - t0 < 1.5  # close() cuts the rate-limit wait short
        assert (stats.read, stats.discarded) == (expect_read, expect_discarded)
        assert not worker.submit(9, _img(9))


def test_submit_copies_the_image() -> None:
    reader, out = PixelReader(), Results()
    reader.gate.clear()
    worker = OcrWorker(reader, out.on_result, rate_hz=100.0)
    worker.submit("busy", _img(1))
    assert reader.started.wait(5.0)
    buffer = _img(42)
    worker.submit("k", buffer)
    buffer[:] = 99  # the caller reuses its buffer for the next frame
    reader.gate.set()
    worker.close(drain=True, timeout=5.0)
    assert dict((k, r[0].text) for k, r in out.items)["k"] == "42"


def test_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError):
        OcrWorker(PixelReader(), lambda k, r: None, rate_hz=0.0)
    with pytest.raises(ConfigError):
        OcrWorker(PixelReader(), lambda k, r: None, max_pending=0)


def test_real_ocr_reader_through_the_worker() -> None:
    pytest.importorskip("rapidocr_onnxruntime", reason="OCR package not installed (requirements/ocr.txt)")
    from vpr_ros.models.ocr import OcrReader

    config = TextConfig(ocr="background", ocr_rate_hz=5.0)
    out = Results()
    grey = cv2.imread(str(DATA / "kimera_euroc" / "left_img_1.png"), cv2.IMREAD_GRAYSCALE)
    worker = OcrWorker.from_config(OcrReader(config), config, out.on_result, on_error=out.on_error)
    worker.submit(17, grey)
    assert worker.wait_idle(30.0)
    stats = worker.close()
    assert out.errors == []
    assert [k for k, _ in out.items] == [17]
    assert ["nova"] in [r.tokens for r in out.items[0][1]]
    assert stats.read == 1 and stats.ms_mean > 0


def test_outbox_results_reach_the_map_through_the_detector_thread(tmp_path: Path) -> None:
    # The detector takes no locks: a node leaves on_result unset and applies the results itself.
    from store_maps import MODEL, synthetic_keyframes
    from test_map_log import _detector

    from vpr_ros.core.map.snapshot import load_keyframes

    det = _detector()
    det.attach_store(tmp_path / "live")
    for kf in synthetic_keyframes(3):
        det.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose)
    worker = OcrWorker(PixelReader(), rate_hz=100.0)
    worker.submit(1, _img(21))
    worker.submit(2, _img(22))
    assert worker.wait_idle(5.0)
    for key, readings in worker.take_results():
        det.set_text(key, readings)
    assert worker.take_results() == []
    worker.close()
    det.detach_store()
    _, back = load_keyframes(tmp_path / "live", MODEL)
    assert back[0].text is None  # never read: not "nothing found"
    assert [r.text for r in back[1].text] == ["21"] and [r.text for r in back[2].text] == ["22"]
