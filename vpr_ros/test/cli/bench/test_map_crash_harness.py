"""SIGKILL a live-map writer at random moments (~20 trials, seconds): the map always opens, holds every
acknowledged keyframe and at most the one being written, reads back exactly, and a snapshot path always
holds a complete old or new copy. The long run is ``vpr-ros bench crash`` (docs/map_store.md)."""

from __future__ import annotations

import pytest

from vpr_ros.cli.bench.map_crash import run_trials


@pytest.mark.parametrize("encoding", ["float16", "int8"])
def test_sigkill_during_appends_and_snapshots_loses_at_most_the_keyframe_being_written(tmp_path, encoding):
    out = run_trials(tmp_path, trials=12, seed=3, shape=(12, 12, 32), encoding=encoding, max_delay_s=0.06,
                     snapshot_every=5, time_budget_s=60.0)
    assert out["problems"] == []
    # The writers made progress across the kills (measured on 2 busy cores: ~25 keyframes, ~15 snapshotted).
    assert out["trials"] == 12 and out["keyframes"] >= 5 and out["snapshots_acknowledged"] >= 1


def test_sigkill_of_the_node_write_path_never_leaves_a_loop_without_its_keyframe(tmp_path):
    """The node's core path (detector + live map) killed mid-stream, with loop closures being stored: every
    map passes map verify (no loop naming a keyframe the map lacks) and holds every acknowledged keyframe.
    ``vpr-ros bench crash --loops`` runs >= 100 trials."""
    from vpr_ros.cli.bench.crash_loops import run_detector_trials
    out = run_detector_trials(tmp_path, trials=6, seed=1, max_delay_s=0.5, time_budget_s=120.0)
    assert out["problems"] == []
    assert out["trials"] == 6 and out["keyframes"] >= 20 and out["loops"] >= 1


def test_sigkill_of_replay_map_save_leaves_a_map_that_verifies(tmp_path):
    """``vpr-ros replay --map-save`` killed around its final save: the map is the old or the new one, and
    verifies (``vpr-ros bench crash --replay`` runs >= 100 trials)."""
    from vpr_ros.cli.bench.crash_loops import run_replay_trials
    out = run_replay_trials(tmp_path, trials=2, seed=2, frames=12, time_budget_s=120.0)
    assert out["problems"] == [] and out["trials"] == 2
