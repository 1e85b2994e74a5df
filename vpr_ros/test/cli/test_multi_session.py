"""Multi-session: several maps loaded side by side, loops across sessions, continuing a session.

Real corridor frames in real bags, the real detector and store; only the model is the tiny extractor.
"""

import csv

import pytest

import vpr_ros.cli.replay as replay
from conftest import TinyExtractor, corridor_image
from vpr_ros.cli.main import main
from vpr_ros.core.config import MapConfig
from vpr_ros.core.map.snapshot import load_keyframes
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_image_bag

NS = 1_000_000_000
HALF = 15  # session "mon" mapped corridor frames 0..14, session "tue" frames 15..29
# The sessions see the query traversal's own images, as the tiny extractor is a weak recogniser
# across traversals: this tests which session a loop lands in, not recognition.


@pytest.fixture(scope="module")
def tiny_model():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replay, "load_extractor", lambda config: TinyExtractor())
        yield


@pytest.fixture(scope="module")
def sessions(tmp_path_factory, tiny_model):
    tmp_path = tmp_path_factory.mktemp("sessions")
    write_image_bag(tmp_path / "mon", [Frame(i * NS // 10, corridor_image("query", i)) for i in range(HALF)], "/cam")
    write_image_bag(tmp_path / "tue", [Frame(600 * NS + i * NS // 10, corridor_image("query", HALF + i))
                                       for i in range(HALF)], "/cam")
    write_image_bag(tmp_path / "query", [Frame(3600 * NS + j * NS // 10, corridor_image("query", j))
                                         for j in range(2 * HALF)], "/cam")
    for name in ("mon", "tue"):
        assert main(["replay", str(tmp_path / name), *_common(), "--set", f"detector.session_id={name}",
                     "--map-save", str(tmp_path / f"map_{name}"), "--out", str(tmp_path / f"out_{name}")]) == 0
    return tmp_path


def _common():
    return ["--image-topic", "/cam", "--set", "verify.min_matches=30", "--no-progress"]


def test_two_maps_load_and_loops_carry_both_session_ids(sessions, capsys):
    assert main(["replay", str(sessions / "query"), *_common(), "--set", "detector.session_id=wed",
                 "--map-load", str(sessions / "map_mon"), "--map-load", str(sessions / "map_tue"),
                 "--out", str(sessions / "out_wed")]) == 0
    assert f"(+{2 * HALF} from the loaded map)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(sessions / "out_wed" / "loop_closures.csv")))
    assert {r["query_session"] for r in rows} == {"wed"}
    # The query walks the whole corridor: its first half revisits Monday's map, its second Tuesday's.
    by_session = {s: [r for r in rows if r["match_session"] == s] for s in ("mon", "tue")}
    assert by_session["mon"] and by_session["tue"], rows
    # Keyframe ids restart at 0 in every session: each loop must name the right session to be placed.
    near = [abs(int(r["query_frame"]) - int(r["match_frame"]) - (HALF if s == "tue" else 0)) <= 2
            for s, loops in by_session.items() for r in loops]
    assert sum(near) >= 0.8 * len(near), rows


def test_continuing_a_session_appends_after_its_saved_ids(sessions):
    assert main(["replay", str(sessions / "query"), *_common(), "--set", "detector.session_id=mon",
                 "--map-load", str(sessions / "map_mon"), "--map-load", str(sessions / "map_tue"),
                 "--map-save", str(sessions / "map_all"), "--out", str(sessions / "out_cont")]) == 0
    _, keyframes = load_keyframes(sessions / "map_all", "tiny@test", load_local=False)
    mon = sorted(kf.id for kf in keyframes if kf.session_id == "mon")
    tue = sorted(kf.id for kf in keyframes if kf.session_id == "tue")
    assert mon == list(range(HALF + 2 * HALF)), "the continued session must append, not reuse ids"
    assert tue == list(range(HALF))
    # Loading the merged map together with one of its parts adds nothing twice.
    assert main(["replay", str(sessions / "mon"), *_common(), "--set", "detector.session_id=thu",
                 "--map-load", str(sessions / "map_all"), "--map-load", str(sessions / "map_mon"),
                 "--out", str(sessions / "out_twice")]) == 0
    rows = list(csv.DictReader(open(sessions / "out_twice" / "loop_closures.csv")))
    assert rows and {r["match_session"] for r in rows} <= {"mon", "tue"}


def test_a_missing_second_map_fails_before_the_replay(sessions, capsys):
    assert main(["replay", str(sessions / "query"), *_common(), "--map-load", str(sessions / "map_mon"),
                 "--map-load", str(sessions / "nothing"), "--out", str(sessions / "out_bad")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (sessions / "out_bad" / "loop_closures.csv").exists()


@pytest.mark.parametrize("value,paths", [("", ()), ("maps/a", ("maps/a",)),
                                         ("maps/a, maps/b,", ("maps/a", "maps/b"))])
def test_map_load_path_names_several_maps_separated_by_commas(value, paths):
    assert MapConfig(load_path=value).load_paths == paths
