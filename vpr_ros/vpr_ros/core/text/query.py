"""Find keyframes by text: a query such as "room 214" against place labels and OCR readings.

Ranking, best first (``PlaceMatch.score`` = tier base + strength in [0, 1]; ties: lower key first):

- ``label`` (score 4 = 3 + 1): a label equal to the query after normalisation (core/place_text.tokens: case,
  accents and punctuation do not matter, "Room-214" == "room 214").
- ``token``, all query tokens present (2 + strength): in one label, one reading, or the union of a
  keyframe's readings (OCR often splits "ROOM" and "214" into two lines).
- ``token``, some query tokens present (1 + strength).
- ``embedding`` (0 + strength): only when an embedder is given and the tiers above found fewer than
  ``limit`` keyframes: cosine of sentence embeddings of the query and each label/reading, kept when it
  is at least ``min_cosine``.

Token strength = coverage x confidence x (0.5 + 0.5 x specificity). Coverage weighs each query token
by its rarity in the keyframes' text (smoothed IDF), so in a corridor of "Room 2xx" plates "214"
counts more than "room". Confidence is the OCR confidence (labels: 1); readings below
``min_confidence`` are ignored. Specificity is the share of the source's tokens the query matched, so
a plate reading just "ROOM 214" beats a poster that mentions room 214 among other words.

Numbers and separators: a query number matches a reading whose digits are equal once separators are
dropped ("214" vs "ROOM 2-14", or query "2-14" vs "214"), but counts only half, because "2-14" may
also be floor 2, room 14; an exact digit run always ranks above such a loose one.

Numbers are never optional (issue 19): a keyframe matches a query with digits only through a label or
reading that holds every number of the query, so "room 214" on a map of "ROOM 370" plates finds
nothing, by tokens or by embedding. :func:`similar_places` lists those look-alikes separately, for a
caller that says so ("similar (not the same number)"). ``PlaceMatch.exact``: the label equals the
query, or one source holds every query token (tiers 3 and 2).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError
from vpr_ros.core.text.place_text import digit_runs, tokens
from vpr_ros.core.types import Keyframe

__all__ = ["PlaceMatch", "Embedder", "find_places", "similar_places", "HOW", "MIN_COSINE", "MAX_QUERY_CHARS"]

HOW = ("label", "token", "embedding")
#: all-MiniLM-L6-v2 cosines of unrelated short sign texts reach ~0.42 ("kitchen" vs "Toilets"), related
#: ones 0.55-0.9 ("kitchen" vs "Cafeteria" 0.56, "exit" vs "Emergency exit" 0.74); docs/place_text.md.
MIN_COSINE = 0.45
LOOSE_WEIGHT = 0.5  # a number matched only after dropping separators
#: Longest query accepted: a place name or address. A megabyte-long query took minutes over a
#: 20k-keyframe map, long enough to stall a node's executor (and its image callbacks) on ~/find_place.
MAX_QUERY_CHARS = 256


@dataclasses.dataclass(frozen=True)
class PlaceMatch:
    """A keyframe that matches a text query. key: its map key (position in the keyframe list).

    how: "label" | "token" | "embedding" (module docstring); evidence: the label or reading that matched;
    exact: a label equal to the query, or a label or reading holding every query token.
    """

    key: int
    score: float
    how: str
    evidence: str
    exact: bool = False


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """(N, D) float32, L2-normalised."""


@dataclasses.dataclass(frozen=True)
class _Source:
    text: str  # shown in the evidence
    kind: str  # "label", "text" (one reading) or "lines" (all readings of the keyframe, for tokens only)
    tokens: frozenset[str]
    joined: frozenset[str]  # per line: its digit runs joined ("ROOM 2-14" -> "214")
    confidence: float


def _sources(kf: Keyframe, min_confidence: float) -> list[_Source]:
    out = [_Source(lb.label, "label", frozenset(tokens(lb.label)), frozenset({"".join(digit_runs(lb.label))}) - {""},
                   1.0) for lb in kf.labels]
    read = [r for r in kf.text or () if r.confidence >= min_confidence and tokens(r.text)]
    out += [_Source(r.text, "text", frozenset(tokens(r.text)), frozenset({r.digits}) - {""}, float(r.confidence))
            for r in read]
    if len(read) > 1:  # one sign read as several lines
        out.append(_Source(" / ".join(r.text for r in read), "lines",
                           frozenset(t for r in read for t in tokens(r.text)),
                           frozenset(r.digits for r in read) - {""}, min(float(r.confidence) for r in read)))
    return out


def _idf(query: Sequence[str], keyframe_sources: Sequence[list[_Source]]) -> dict[str, float]:
    n = len(keyframe_sources)
    df = {q: sum(any(q in s.tokens for s in srcs) for srcs in keyframe_sources) for q in query}
    return {q: math.log((n + 1) / (df[q] + 1)) + 1.0 for q in query}  # smoothed, always >= 1


def _has_numbers(query: Sequence[str], src: _Source) -> bool:
    """Whether ``src`` holds every number of the query (exactly, or with separators dropped)."""
    q_digits = [q for q in query if q.isdigit()]
    q_joined = "".join(q_digits) if len(q_digits) > 1 else None
    if q_joined is not None and q_joined in src.tokens | src.joined:
        return True
    return all(q in src.tokens or q in src.joined for q in q_digits)


def _token_match(query: Sequence[str], idf: dict[str, float], src: _Source) -> tuple[int, float, bool]:
    """(tier 2 = all tokens, 1 = some, 0 = none; strength; any loose number) of one source."""
    q_digits = [q for q in query if q.isdigit()]
    q_joined = "".join(q_digits) if len(q_digits) > 1 else None
    got: dict[str, float] = {}
    for q in query:
        if q in src.tokens:
            got[q] = 1.0
        elif q.isdigit() and (q in src.joined or (q_joined is not None and q_joined in src.tokens)):
            got[q] = LOOSE_WEIGHT
    if not got:
        return 0, 0.0, False
    coverage = sum(idf[q] * w for q, w in got.items()) / sum(idf[q] for q in query)
    specificity = min(1.0, len(got) / len(src.tokens))
    loose = any(w < 1.0 for w in got.values())
    tier = 2 if len(got) == len(query) else 1
    return tier, coverage * src.confidence * (0.5 + 0.5 * specificity), loose


def _evidence(src: _Source, loose: bool = False, cosine: float | None = None) -> str:
    what = f'label "{src.text}"' if src.kind == "label" else f'text "{src.text}" (confidence {src.confidence:.2f})'
    if loose:
        what += ", number matched without separators"
    if cosine is not None:
        what += f", cosine {cosine:.3f}"
    return what


def find_places(keyframes: Sequence[Keyframe], query: str, limit: int = 10, embedder: Embedder | None = None,
                min_confidence: float = 0.0, min_cosine: float = MIN_COSINE) -> list[PlaceMatch]:
    """Keyframes whose labels or OCR text match ``query``, best first, at most ``limit``; with digits in
    the query only those holding every number of it.

    Raises:
        InputError: the query has no letters or digits, is longer than MAX_QUERY_CHARS, or limit < 1.
    """
    return _search(keyframes, query, limit, embedder, min_confidence, min_cosine)[0]


def similar_places(keyframes: Sequence[Keyframe], query: str, limit: int = 10,
                   min_confidence: float = 0.0) -> list[PlaceMatch]:
    """Keyframes that share words but not the number with ``query`` ("ROOM 370" for "room 214"), best
    first; never matches, for "similar (not the same number)" lists. Empty for a query without digits."""
    return _search(keyframes, query, limit, None, min_confidence, MIN_COSINE)[1]


def _search(keyframes: Sequence[Keyframe], query: str, limit: int, embedder: Embedder | None,
            min_confidence: float, min_cosine: float) -> tuple[list[PlaceMatch], list[PlaceMatch]]:
    if len(query) > MAX_QUERY_CHARS:
        raise InputError(f"text query of {len(query)} characters; keep it to {MAX_QUERY_CHARS} (a place name, "
                         "number or address)")
    query_tokens = tokens(query)
    q = list(dict.fromkeys(query_tokens))
    if not q:
        raise InputError(f"text query {query!r} has no letters or digits; give a name, number or address")
    if limit < 1:
        raise InputError(f"limit must be at least 1 (got {limit})")
    per_kf = [_sources(kf, min_confidence) for kf in keyframes]
    idf = _idf(q, per_kf)
    best: dict[int, tuple[int, float, str, str]] = {}  # key -> (tier, strength, how, evidence)
    near: dict[int, tuple[int, float, str, str]] = {}  # the same, for sources without the query's numbers
    for key, srcs in enumerate(per_kf):
        for src in srcs:
            if src.kind == "label" and tokens(src.text) == query_tokens:
                cand = (3, 1.0, "label", _evidence(src))
            else:
                tier, strength, loose = _token_match(q, idf, src)
                if tier == 0:
                    continue
                cand = (tier, strength, "token", _evidence(src, loose))
            found = best if cand[0] == 3 or _has_numbers(q, src) else near
            if key not in found or cand[:2] > found[key][:2]:
                found[key] = cand
    if embedder is not None and len(best) < limit:
        best.update(_embedding_matches(query, q, per_kf, set(best), embedder, min_cosine))
    return _ranked(best, limit), _ranked({k: v for k, v in near.items() if k not in best}, limit)


def _ranked(found: dict[int, tuple[int, float, str, str]], limit: int) -> list[PlaceMatch]:
    # Rounded before sorting, so equal shown scores always fall back to the tier, then the key.
    rows = [(round(tier + strength, 6), tier, key, how, ev) for key, (tier, strength, how, ev) in found.items()]
    ranked = sorted(rows, key=lambda m: (-m[0], -m[1], m[2]))
    return [PlaceMatch(key, score, how, ev, tier >= 2) for score, tier, key, how, ev in ranked[:limit]]


def _embedding_matches(query: str, q: Sequence[str], per_kf: Sequence[list[_Source]], skip: Iterable[int],
                       embedder: Embedder, min_cosine: float) -> dict[int, tuple[int, float, str, str]]:
    skip = set(skip)
    # Each line alone: the joined lines would double the strings to embed (measured: ~8 ms each on one core).
    # A text without the query's numbers is another place however close its embedding ("Room 370").
    todo = [(key, src) for key, srcs in enumerate(per_kf) if key not in skip for src in srcs
            if src.kind != "lines" and _has_numbers(q, src)]
    if not todo:
        return {}
    strings = list(dict.fromkeys(src.text for _, src in todo))
    vecs = embedder.embed([query, *strings])
    cos = dict(zip(strings, (vecs[1:] @ vecs[0]).tolist()))
    out: dict[int, tuple[int, float, str, str]] = {}
    for key, src in todo:
        c = float(cos[src.text])
        if c < min_cosine:
            continue
        strength = max(0.0, min(1.0, c)) * src.confidence
        if key not in out or strength > out[key][1]:
            out[key] = (0, strength, "embedding", _evidence(src, cosine=c))
    return out
