"""The node's OCR glue without DDS: results land on the keyframe they were read from, never on
another keyframe that took its map key after a reset."""

from __future__ import annotations

import logging
import threading

import numpy as np

from vpr_ros.core.config import Config
from vpr_ros.core.config.text import TextConfig
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.text.place_text import TextReading
from vpr_ros.nodes.node_ocr import NodeOcr, keyframe_identity

from tiny_extractor import TinyExtractor


def _fill(detector: LoopClosureDetector, stamps_s: range) -> None:
    rng = np.random.default_rng(stamps_s.start)
    for s in stamps_s:
        detector.process_descriptors(s * 10**9, rng.standard_normal(TinyExtractor.global_dim),
                                     rng.standard_normal((12, 16, 36)).astype(np.float32))


def test_a_result_for_a_keyframe_gone_since_is_dropped_not_put_on_its_successor():
    detector = LoopClosureDetector(Config(), TinyExtractor())
    _fill(detector, range(0, 3))
    changes: list[int] = []
    ocr = NodeOcr(TextConfig(), detector, threading.Lock(), logging.getLogger("test"), lambda *_: None,
                  changed=lambda: changes.append(1))
    reading = (TextReading("ROOM 214", 0.99),)
    job = (1, keyframe_identity(detector.keyframe(1)))
    ocr._apply(job, reading)
    assert detector.keyframe(1).text == reading and ocr.stale == 0 and changes == [1]  # autosave is due
    # The map is reset and refilled: key 1 is now another keyframe (same id, another stamp).
    detector.reset()
    _fill(detector, range(50, 52))
    ocr._apply(job, reading)
    assert detector.keyframe(1).text is None and ocr.stale == 1
    ocr._apply((2, keyframe_identity(detector.keyframe(0))), reading)  # a key past the end of the map
    assert ocr.stale == 2 and detector.keyframe(0).text is None and changes == [1]
    assert ocr.diagnostics() == {"ocr.mode": "off"}
