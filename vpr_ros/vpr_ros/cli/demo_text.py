"""Text in the Corridor demo: OCR on keyframes (``text.ocr=inline``), the text rule, and the SIMULATED
plated Corridor (``vpr-ros demo --simulated-plates``, cli/simulated_plates.py).

``--simulated-plates`` replays the plated frames instead of the real ones and turns inline OCR on;
``--text-rule`` turns the rule on (``text.rule=true``). metrics.json then carries ``frames`` (which
frames were replayed, SIMULATED when plated), ``ocr`` (what OCR read on the keyframes, and on
plated frames how many plates it read exactly) and ``text_rule`` (the rule's counters).
:func:`text_extractor` and :func:`attach_text_reader` (models/text_readers.py) give replay and demo OCR
and the text-aware fused descriptor (``text.fused_weight``).
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from vpr_ros.cli.corridor import corridor_dir
from vpr_ros.cli.simulated_plates import BOUNDARIES, SIMULATED_PLATES_LABEL, PlatedCorridor, simulated_plated_corridor
from vpr_ros.core.config import Config, config_from_flat
from vpr_ros.core.eval.groundtruth import KeyframeRecord, load_vprbench_gt
from vpr_ros.core.text.place_text import TextReading
from vpr_ros.core.text.rule import distinctive_text
from vpr_ros.models.text_readers import attach_text_reader, text_extractor  # noqa: F401 - demo uses them from here

__all__ = ["add_arguments", "apply_arguments", "plated_corridor", "attach_text_reader", "text_extractor",
           "ocr_metrics", "format_ocr_summary", "PLATE_SCALE"]

PLATE_SCALE = 4  # 160x120 -> 640x480: the Corridor's own size is too small to carry readable text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulated-plates", action="store_true",
                   help="replay a SIMULATED variant of the Corridor: frames upscaled x4 (640x480) with "
                        "pasted room-number plates (same number at the same place in both traversals); "
                        "turns inline OCR on (text.ocr=inline)")
    p.add_argument("--plate-boundary", choices=BOUNDARIES, default="both",
                   help="with --simulated-plates: places next to a door boundary show both plates "
                        "(default) or none")
    p.add_argument("--text-rule", action="store_true",
                   help="use read text in verification (text.rule=true; docs/place_text.md)")


def apply_arguments(args: argparse.Namespace, config: Config) -> Config:
    """Config after --text-rule and --simulated-plates (an explicit --set text.ocr=... wins)."""
    flat: dict[str, Any] = {}
    if args.text_rule:
        flat["text.rule"] = True
    if args.simulated_plates and not any(s.startswith("text.ocr=") for s in args.set or []):
        flat["text.ocr"] = "inline"
    return config_from_flat(flat, base=config) if flat else config


def plated_corridor(ref: Sequence[Any], query: Sequence[Any], boundary: str = "both") -> PlatedCorridor:
    """The SIMULATED plated Corridor of the demo (seed 0, x4), places from the Corridor's ground truth."""
    pairs = load_vprbench_gt(corridor_dir() / "ground_truth_new.npy")
    return simulated_plated_corridor(ref, query, pairs, scale=PLATE_SCALE, boundary=boundary, seed=0)


def ocr_metrics(keyframes: Sequence[tuple[KeyframeRecord, tuple[TextReading, ...] | None]], min_confidence: float,
                plates: PlatedCorridor | None = None, num_ref: int = 0) -> dict[str, Any]:
    """What OCR read on the replayed keyframes (record, text). With ``plates`` (one stream: frames
    below ``num_ref`` are reference frames; else query frames) also how well it read the plates."""
    read = [(r, t) for r, t in keyframes if t is not None]
    texts = sorted({x.text for _, t in read for x in t})
    out: dict[str, Any] = {
        "keyframes": len(keyframes), "keyframes_read": len(read),
        "keyframes_with_text": sum(bool(t) for _, t in read),
        "keyframes_with_distinctive_text": sum(bool(distinctive_text(t, min_confidence)) for _, t in read),
        "distinct_texts": len(texts), "texts_examples": texts[:20],
    }
    if plates is None or not read:
        return out
    exact = missed = misread = 0
    for record, text in read:
        i = record.frame_index
        shown = set(plates.ref_plates[i] if i < num_ref else plates.query_plates[i - num_ref])
        codes = set(distinctive_text(text, min_confidence).codes)
        exact += codes == shown
        missed += bool(shown - codes)
        misread += bool(codes - shown)
    out.update({"plates": SIMULATED_PLATES_LABEL, "plates_boundary": plates.boundary,
                "plates_read_exactly": exact, "plates_missed": missed, "plates_misread": misread})
    return out


def format_ocr_summary(metrics: dict[str, Any]) -> str:
    ocr = metrics["ocr"]
    line = (f"OCR: {ocr['keyframes_read']} of {ocr['keyframes']} keyframes read, {ocr['keyframes_with_text']} "
            f"with text, {ocr['keyframes_with_distinctive_text']} with distinctive text")
    lat = metrics["latency_ms"].get("ocr")
    if lat:
        line += f"; {lat['mean']:.0f} ms per keyframe (p95 {lat['p95']:.0f})"
    if "plates" in ocr:
        line += (f"\n{ocr['plates']}: pasted plates read exactly on {ocr['plates_read_exactly']} keyframes, "
                 f"a plate missed on {ocr['plates_missed']}, a number read that was not pasted on "
                 f"{ocr['plates_misread']}")
    return line
