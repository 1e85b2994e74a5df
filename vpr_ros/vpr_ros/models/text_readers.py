"""OCR readers and the text-aware fused descriptor for replay and demo (``text.ocr``, ``text.fused_weight``).

One OCR reader per text configuration is built on first use (the OCR models load only when asked for);
:func:`text_extractor` wraps a model in the fused descriptor, :func:`attach_text_reader` gives a
detector the reader its configuration asks for.
"""

from __future__ import annotations

from vpr_ros.core.config import Config
from vpr_ros.core.config.text import TextConfig
from vpr_ros.core.detector import Extractor, LoopClosureDetector
from vpr_ros.core.text.rule import TextReader
from vpr_ros.models.text_fused import TextFusedExtractor

__all__ = ["text_extractor", "attach_text_reader"]

_READERS: dict[TextConfig, TextReader] = {}


def _reader(text: TextConfig) -> TextReader:
    if text not in _READERS:
        from vpr_ros.models.ocr import OcrReader  # optional dependency: only when asked for

        _READERS[text] = OcrReader(text)
    return _READERS[text]


def text_extractor(config: Config, model: Extractor) -> Extractor:
    """``model``, or with ``text.fused_weight`` > 0 the text-aware fused descriptor around it."""
    if config.text.fused_weight <= 0:
        return model
    from vpr_ros.models.text_embedding import EMBED_DIM, TextEmbedder  # torch, MiniLM: only when asked for

    return TextFusedExtractor(model, _reader(config.text), TextEmbedder(), config.text.fused_weight,
                              config.text.min_confidence, EMBED_DIM)


def attach_text_reader(detector: LoopClosureDetector) -> None:
    """Give the detector an OCR reader when ``text.ocr`` is inline (one reader per text config); a
    fused-descriptor model reads every frame anyway, so it is the reader then, whatever ``text.ocr``."""
    if isinstance(detector.model, TextFusedExtractor):
        detector.text_reader = detector.model
    elif detector.config.text.ocr == "inline":
        detector.text_reader = _reader(detector.config.text)
