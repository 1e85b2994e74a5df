"""Text on keyframes: what OCR read and what people called a place (labels), as plain data.

A keyframe's ``text`` is None until OCR has looked at it (``text.ocr``), then a tuple of
:class:`TextReading` (empty when nothing was read). Its ``labels`` are :class:`PlaceLabel` given by a
user or another node (``~/label_place``, ``vpr-ros map label``, a labels YAML). Both are stored with
the keyframe in the map (core/map/text_table.py) and survive save/load.

Normalised forms make readings comparable across fonts and OCR slips: lower case, letters and
digits only, split into tokens ("Room 2.14-B" -> ["room", "2", "14", "b"]), plus ``digits`` (the
digit runs only, "214"). The text rule and token queries compare these, never the raw strings.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from typing import Any, Iterable, Sequence

from vpr_ros.core.errors import MapStoreError

__all__ = ["MAX_LABEL_CHARS", "TextReading", "PlaceLabel", "fold", "tokens", "digit_runs", "readings_to_json", "readings_from_json",
           "confident_tokens"]

#: The longest place label (and label source) a map stores or a query accepts as a label.
MAX_LABEL_CHARS = 256

_TOKEN = re.compile(r"[0-9]+|[^\W\d_]+")
_DIGITS = re.compile(r"[0-9]+")


@dataclasses.dataclass(frozen=True)
class TextReading:
    """One line of text OCR found on a keyframe.

    text: the string as read. confidence: recognition confidence in [0, 1]. box: four (x, y) corners
    in pixels of the keyframe's original image, clockwise from top-left.
    """

    text: str
    confidence: float
    box: tuple[tuple[float, float], ...] = ()

    @property
    def tokens(self) -> list[str]:
        return tokens(self.text)

    @property
    def digits(self) -> str:
        """The digit runs joined ("Room 2-14" -> "214"); "" when the text has no digits."""
        return "".join(digit_runs(self.text))


@dataclasses.dataclass(frozen=True)
class PlaceLabel:
    """A name or address given to a place. source: who gave it ("user", "yaml", a node name)."""

    label: str
    source: str = "user"
    stamp_ns: int = 0


def fold(text: str) -> str:
    """Lower case with accents dropped and full-width forms made plain (NFKD): the base of every comparison."""
    # NFKD then drop combining marks: "Café" and "Cafe" are one token; full-width digits become ASCII.
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def tokens(text: str) -> list[str]:
    """Normalised tokens: lower case, accents dropped, runs of letters or of digits."""
    return _TOKEN.findall(fold(text))


def digit_runs(text: str) -> list[str]:
    return _DIGITS.findall(fold(text))


def confident_tokens(readings: Iterable[TextReading] | None, min_confidence: float) -> set[str]:
    """Tokens of the readings at or above ``min_confidence`` (empty for None: not read)."""
    out: set[str] = set()
    for r in readings or ():
        if r.confidence >= min_confidence:
            out.update(r.tokens)
    return out


def readings_to_json(readings: Sequence[TextReading]) -> str:
    return json.dumps([{"text": r.text, "confidence": round(float(r.confidence), 6),
                        "box": [[round(float(x), 2), round(float(y), 2)] for x, y in r.box]} for r in readings],
                      ensure_ascii=False)


def readings_from_json(doc: str, where: str) -> tuple[TextReading, ...]:
    """Inverse of :func:`readings_to_json`; ``where`` names the source in the error."""
    try:
        items: Any = json.loads(doc)
        out = []
        for item in items:
            box = tuple((float(x), float(y)) for x, y in item.get("box", ()))
            out.append(TextReading(str(item["text"]), float(item["confidence"]), box))
        return tuple(out)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MapStoreError(f"{where}: stored text is not readable ({exc}); the text of this keyframe "
                            "is lost, delete the row or re-run OCR on the map") from exc
