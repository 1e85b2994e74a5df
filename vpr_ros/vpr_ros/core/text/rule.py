"""The text rule of verification: confidently read, distinctive text on both keyframes agrees or conflicts.

Appearance alone confuses look-alike places (two doors of one corridor); their plates tell them
apart. After MNN verification (core/matching/verification.py) the detector hands each candidate to
:class:`TextRule` with the query's and the candidate's ``Keyframe.text`` (core/text/place_text.py).

**Distinctive text.** Only readings with ``confidence >= text.min_confidence`` count. Their text is
folded (lower case, accents dropped) and split at anything that is not a letter or digit into runs
("Room 2.14-B" -> "room", "2", "14", "b"). A run is

- a *code* when it holds a digit and is at least :data:`MIN_CODE_LEN` characters long ("214",
  "b12", "14"); single digits ("2", a floor, an arrow's "1") are too common to tell places apart;
- a *word* when it is letters only, at least :data:`MIN_WORD_LEN` long and not in
  :data:`STOP_WORDS` (signage found at many places: "room", "exit", "floor", "fire", ...).

OCR slips: a letter OCR confuses with a digit (O/o->0, I/l/i->1, Z->2, S->5, B->8, G->6) is read as
that digit when it sits between two digits ("2I4" -> "214"); a letter at the edge of a run is
kept, since room codes such as "B12" are real.

**Decision** (:func:`compare_text`), per candidate:

- ``none``: either side has no distinctive text (not read yet = None, nothing read = (), or only
  low-confidence or non-distinctive readings): the verification is left exactly as it was;
- codes on both sides decide when both have codes: ``agree`` when they share a code; ``conflict``
  when no code of one side equals or contains a code of the other (a clipped plate read as "14"
  is compatible with "214": ``none`` rather than a conflict); ``none`` otherwise;
- otherwise words decide: ``agree`` when a word is shared, else ``none``. Words never conflict
  (one view sees "kitchen", another of the same place "office").

Partial overlaps are deliberate: a keyframe between two doors reads {"214", "216"}; it agrees with
a keyframe reading {"216"} (a shared plate: the places neighbour) and conflicts with {"218"}.

**Effect on the verification.** ``agree`` multiplies the score by ``1 + text.agreement_boost`` and
can turn a rejection into an acceptance: the boosted score is compared with the method's score
threshold (``mnn``: ``verify.min_matches``; ``mnn+fundamental``: ``verify.min_inliers``, with the
unboosted MNN count still needing ``verify.min_matches``; ``global``: ``verify.min_global_similarity``),
and every other gate of the method (the global similarity floor) must still pass unboosted.
``conflict`` with ``text.conflict=veto`` rejects the candidate and sets its score to 0 (its MNN
count stays in ``local_matches``); with ``penalty`` the score is multiplied by
``text.conflict_penalty`` and the candidate stays accepted only if the lowered score still passes
the threshold. A penalty never accepts a candidate. The candidates are re-sorted by score.

Counters (:data:`COUNTERS`, ``StepResult.text_rule``, summed in replay metrics): every verified
candidate is counted once as ``unread`` (either side's text is None: OCR has not looked),
``none``, ``agree`` or ``conflict``; ``vetoed``: accepted candidates the rule rejected (veto or
penalty); ``boosted_accept``: rejected candidates the boost accepted; ``best_changed``: 1 when the
best accepted candidate of the step is another one than without the rule.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import VerifyConfig
from vpr_ros.core.config.text import TextConfig
from vpr_ros.core.text.place_text import TextReading, fold
from vpr_ros.core.types import Verification

__all__ = ["PlaceText", "TextReader", "TextRule", "distinctive_text", "compare_text", "OUTCOMES", "COUNTERS",
           "STOP_WORDS", "MIN_CODE_LEN", "MIN_WORD_LEN"]

Text = Sequence[TextReading] | None

OUTCOMES = ("none", "agree", "conflict")
COUNTERS = ("unread", "none", "agree", "conflict", "vetoed", "boosted_accept", "best_changed")
MIN_CODE_LEN = 2
MIN_WORD_LEN = 4
#: Words of signage seen at many places (English and a few German ones): they name no place.
STOP_WORDS = frozenset({
    "room", "rooms", "exit", "floor", "level", "door", "fire", "push", "pull", "open", "closed", "keep",
    "stairs", "stair", "lift", "elevator", "toilet", "toilets", "only", "staff", "private", "office",
    "emergency", "escape", "this", "that", "with", "from", "please", "notice", "caution", "danger",
    "warning", "entrance", "welcome", "north", "south", "east", "west", "left", "right", "zimmer",
    "raum", "ausgang", "notausgang", "etage", "stock", "bitte", "eingang",
})
_RUN = re.compile(r"[^\W_]+")
# Letters OCR confuses with digits; used only between two digits ("2I4" -> "214").
_SLIPS = {"o": "0", "i": "1", "l": "1", "z": "2", "s": "5", "b": "8", "g": "6"}


class TextReader(Protocol):
    """What the detector needs from an OCR model (``text.ocr=inline``; models/ocr.py gives one)."""

    def read(self, image: npt.NDArray[np.uint8]) -> tuple[TextReading, ...]:
        """(H, W, 3) uint8 RGB image -> the text lines read on it (empty when none)."""


@dataclasses.dataclass(frozen=True)
class PlaceText:
    """The distinctive text of one keyframe: codes (runs with a digit) and words (see module doc)."""

    codes: frozenset[str] = frozenset()
    words: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.codes or self.words)


def _fix_slips(run: str) -> str:
    if not any(c.isdigit() for c in run):
        return run
    chars = list(run)
    for i in range(1, len(chars) - 1):
        if chars[i] in _SLIPS and chars[i - 1].isdigit() and chars[i + 1].isdigit():
            chars[i] = _SLIPS[chars[i]]
    return "".join(chars)


def distinctive_text(readings: Iterable[TextReading] | None, min_confidence: float) -> PlaceText:
    """Codes and words of the readings at or above ``min_confidence`` (empty for None or ())."""
    codes: set[str] = set()
    words: set[str] = set()
    for r in readings or ():
        if not r.confidence >= min_confidence:  # NaN confidence counts as unsure
            continue
        for run in _RUN.findall(fold(r.text)):
            run = _fix_slips(run)
            if any(c.isdigit() for c in run):
                if len(run) >= MIN_CODE_LEN:
                    codes.add(run)
            elif len(run) >= MIN_WORD_LEN and run.isalpha() and run not in STOP_WORDS:
                words.add(run)
    return PlaceText(frozenset(codes), frozenset(words))


def _compatible(codes0: frozenset[str], codes1: frozenset[str]) -> bool:
    """A code of one side equals or contains one of the other (a clipped or split plate)."""
    return any(a in b or b in a for a in codes0 for b in codes1)


def compare_text(text0: PlaceText, text1: PlaceText) -> str:
    """"none", "agree" or "conflict" for two keyframes' distinctive text (module doc)."""
    if not text0 or not text1:
        return "none"
    if text0.codes and text1.codes:
        if text0.codes & text1.codes:
            return "agree"
        return "none" if _compatible(text0.codes, text1.codes) else "conflict"
    return "agree" if text0.words & text1.words else "none"


class TextRule:
    """Applies the text rule (``text.*``) to the verifications of one query keyframe."""

    def __init__(self, text: TextConfig, verify: VerifyConfig) -> None:
        self.text = text
        self.verify = verify

    def _threshold(self, v: Verification) -> tuple[float, bool]:
        """The method's score threshold, and whether every other gate of the method passed."""
        cfg = self.verify
        if v.method == "global":
            return cfg.min_global_similarity, True
        other = v.candidate.similarity >= cfg.min_global_similarity
        if v.method == "mnn+fundamental":
            return float(cfg.min_inliers), other and v.local_matches >= cfg.min_matches
        return float(cfg.min_matches), other

    def apply(self, text0: Text, verifications: Sequence[Verification],
              texts1: Sequence[Text]) -> tuple[list[Verification], dict[str, int]]:
        """Verifications of one query (``text0``) against candidates with ``texts1`` (same order)
        -> (the verifications after the rule, best score first; the counters of this step)."""
        counts = dict.fromkeys(COUNTERS, 0)
        mine = distinctive_text(text0, self.text.min_confidence)
        out = []
        for v, text1 in zip(verifications, texts1, strict=True):
            if text0 is None or text1 is None:
                counts["unread"] += 1
                out.append(v)
                continue
            outcome = compare_text(mine, distinctive_text(text1, self.text.min_confidence))
            counts[outcome] += 1
            if outcome == "none":
                out.append(v)
                continue
            threshold, gates = self._threshold(v)
            if outcome == "agree":
                score = v.score * (1.0 + self.text.agreement_boost)
                accepted = v.accepted or (gates and score >= threshold)
                counts["boosted_accept"] += accepted and not v.accepted
            elif self.text.conflict == "veto":
                score, accepted = 0.0, False
            else:
                score = v.score * self.text.conflict_penalty
                accepted = v.accepted and score >= threshold
            counts["vetoed"] += v.accepted and not accepted
            out.append(dataclasses.replace(v, score=float(score), accepted=bool(accepted)))
        out.sort(key=lambda v: (-v.score, v.candidate.rank))
        counts["best_changed"] = int(_best(verifications) != _best(out))
        return out, counts


def _best(verifications: Iterable[Verification]) -> int | None:
    ranked = sorted(verifications, key=lambda v: (-v.score, v.candidate.rank))
    return next((v.candidate.keyframe_id for v in ranked if v.accepted), None)
