"""Ranking of text queries over keyframes (core/text/query.py), with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.core.errors import InputError
from vpr_ros.core.text.place_text import PlaceLabel, TextReading
from vpr_ros.core.text.query import find_places, similar_places
from vpr_ros.core.types import Keyframe


def kf(i: int, texts=None, labels=()) -> Keyframe:
    text = None if texts is None else tuple(TextReading(t, c) for t, c in texts)
    return Keyframe(id=i, stamp_ns=i, robot_id="r", session_id="s", global_=np.ones(4, np.float32) / 2,
                    text=text, labels=tuple(PlaceLabel(lb) for lb in labels))


@pytest.fixture(scope="module")
def embedder():
    from vpr_ros.models.text_embedding import TextEmbedder
    return TextEmbedder()


def corridor() -> list[Keyframe]:
    return [
        kf(0, [("ROOM 216", 0.99)]),
        kf(1, [("Room 214", 0.95)]),
        kf(2, [("ROOM 2-14", 0.97)]),
        kf(3, labels=["Room 214"]),
        kf(4, [("Next meeting in room 214 at noon", 0.99)]),
        kf(5, [("ROOM", 0.9), ("214", 0.8)]),
        kf(6, [("Room 214", 0.4)]),
        kf(7, None),
        kf(8, []),
        kf(9, [("Office 214", 0.99)]),
    ]


def test_label_then_full_then_loose_then_partial():
    got = find_places(corridor(), "room 214", limit=20)
    keys = [m.key for m in got]
    assert got[0].key == 3 and got[0].how == "label" and got[0].score == 4.0
    full = {1, 4, 5, 6, 2}
    assert set(keys[1:6]) == full and all(m.score >= 2.0 for m in got[1:6])
    # exact plate before the poster that mentions it among other words; confident before unconfident
    assert keys.index(1) < keys.index(4) and keys.index(1) < keys.index(6)
    # separators dropped counts half: "ROOM 2-14" below the exact plate read with less confidence
    assert keys.index(1) < keys.index(2)
    assert "without separators" in got[keys.index(2)].evidence
    # partial: "Office 214" holds the number but not "room"; "ROOM 216" is another room, never a match
    assert keys[-1] == 9 and got[-1].score < 2.0 and not got[-1].exact
    assert all(m.exact for m in got[:-1])
    assert 0 not in keys and 7 not in keys and 8 not in keys


def test_lines_of_one_sign_are_joined():
    got = {m.key: m for m in find_places(corridor(), "room 214", limit=20)}
    assert got[5].score >= 2.0 and "ROOM / 214" in got[5].evidence


def test_query_with_separator_finds_plain_number():
    got = find_places([kf(0, [("Room 214", 0.99)]), kf(1, [("Room 216", 0.99)])], "Room 2-14")
    assert [m.key for m in got][0] == 0 and got[0].score >= 2.0


def test_min_confidence_ignores_unsure_readings():
    keys = [m.key for m in find_places(corridor(), "room 214", limit=20, min_confidence=0.5)]
    assert 6 not in keys and 1 in keys


def test_normalisation_and_accents():
    kfs = [kf(0, labels=["Café Müller"]), kf(1, [("CAFE MULLER", 0.9)])]
    got = find_places(kfs, "cafe  müller!")
    assert [(m.key, m.how) for m in got] == [(0, "label"), (1, "token")]


def test_ties_break_by_key_and_limit():
    kfs = [kf(i, [("Aisle 7", 0.9)]) for i in (0, 1, 2, 3)]
    got = find_places(kfs, "aisle 7", limit=3)
    assert [m.key for m in got] == [0, 1, 2] and len({m.score for m in got}) == 1


def test_bad_queries():
    with pytest.raises(InputError, match="no letters or digits"):
        find_places(corridor(), " -- ")
    with pytest.raises(InputError, match="limit"):
        find_places(corridor(), "room", limit=0)
    # A huge query is refused at once (a megabyte of text took minutes over a 20k-keyframe map).
    with pytest.raises(InputError, match="keep it to 256"):
        find_places(corridor(), "214 " * 100_000)
    assert find_places(corridor(), ("room 214 " * 40)[:256])  # the longest accepted one still answers


def test_embedding_finds_related_words_after_tokens(embedder):
    kfs = [kf(0, [("Cafeteria", 0.95)]), kf(1, [("Toilets", 0.95)]), kf(2, labels=["Kitchen"]),
           kf(3, [("Emergency exit", 0.9)]), kf(4, [("Kitchen 2nd floor", 0.6)])]
    got = find_places(kfs, "kitchen", embedder=embedder)
    assert [(m.key, m.how) for m in got[:3]] == [(2, "label"), (4, "token"), (0, "embedding")]
    assert all(m.key not in (1, 3) for m in got)  # unrelated signs stay below min_cosine
    assert "cosine" in got[2].evidence and 0.0 < got[2].score < 1.0
    assert [m.key for m in find_places(kfs, "kitchen")] == [2, 4]  # no embedder: tokens only


def test_embedding_ranks_by_cosine_times_confidence(embedder):
    kfs = [kf(0, [("Toilets", 0.9)]), kf(1, [("No smoking", 0.99)]), kf(2, [("Toilets", 0.5)])]
    got = find_places(kfs, "restroom", embedder=embedder)  # no shared token: embedding only
    assert [m.key for m in got] == [0, 2] and got[0].how == "embedding" and got[0].score > got[1].score


def test_embedding_skipped_when_tokens_fill_the_limit():
    class Refuses:
        def embed(self, texts):
            raise AssertionError("must not embed: the token matches already fill the limit")

    got = find_places(corridor(), "room 214", limit=2, embedder=Refuses())
    assert len(got) == 2


def test_embedding_sees_each_line_once_not_the_joined_lines(embedder):
    seen: list[str] = []

    class Recorder:
        def embed(self, texts):
            seen.extend(texts)
            return embedder.embed(texts)

    kfs = [kf(0, [("EXIT", 0.9), ("Level 2", 0.9)]), kf(1, [("EXIT", 0.8)])]
    got = find_places(kfs, "way out of the building", embedder=Recorder())
    assert sorted(seen) == sorted(["way out of the building", "EXIT", "Level 2"])  # deduplicated, no "EXIT / Level 2"
    assert all(m.how == "embedding" for m in got)


def plates_370() -> list[Keyframe]:
    """Issue 19: a map of seven "370" plates (and one other sign), no room 214."""
    return [*(kf(i, [("ROOM 370", 0.95)]) for i in range(7)), kf(7, [("EXIT", 0.9)])]


def test_a_number_not_on_the_map_matches_nothing():
    assert find_places(plates_370(), "room 214", limit=10) == []
    assert find_places(plates_370(), "214") == []
    # ... but the look-alikes are there for a caller that says they are not the same number.
    similar = similar_places(plates_370(), "room 214", limit=3)
    assert [m.key for m in similar] == [0, 1, 2] and not any(m.exact for m in similar)
    assert all("370" in m.evidence for m in similar)
    assert similar_places(plates_370(), "exit") == []  # no digits in the query: nothing to tell apart
    # The number itself still finds its plates, with separators too.
    assert [m.key for m in find_places(plates_370(), "room 3-70")] == list(range(7))


def test_embedding_never_returns_another_number(embedder):
    got = find_places(plates_370(), "room 214", embedder=embedder)
    assert got == []  # "Room 370" is close in embedding space, but another room
    kfs = [kf(0, [("Room 370", 0.95)]), kf(1, [("Lecture hall 214", 0.9)])]
    assert [m.key for m in find_places(kfs, "room 214", embedder=embedder)] == [1]
