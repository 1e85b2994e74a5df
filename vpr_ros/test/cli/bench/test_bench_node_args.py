"""``vpr-ros bench node`` plumbing for the sequential/pipelined comparison (the benchmark itself runs
real node processes and is not a test): the mode reaches the node, the queue holds every frame, the
re-run under a network namespace keeps the flags, and the throughput counts every finished frame."""

from __future__ import annotations

import argparse

from vpr_ros.cli.bench.node import _accounted, _argv, _ros_args, add_arguments


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_mode_and_a_queue_for_every_frame_reach_the_node():
    args = _args("--frames", "111")
    for pipeline, value in ((True, "pipeline:=true"), (False, "pipeline:=false")):
        ros = _ros_args(args, pipeline)
        assert value in ros and ros[ros.index(value) - 1] == "-p"
        # Both traversals fit the queue and the reliable subscription's history: nothing is dropped or
        # overwritten however fast --rate is (a 200 Hz run lost 5 of 222 frames with depth 100).
        assert "queue.size:=222" in ros and "qos.depth:=222" in ros


def test_the_netns_rerun_keeps_the_comparison_flags():
    args = _args("--no-pipeline", "--compare-pipeline")
    again = _args(*_argv(args))
    assert (again.pipeline, again.compare_pipeline) == (False, True)
    assert _args(*_argv(_args())).pipeline is True


def test_accounted_counts_processed_dropped_failed_and_bad_frames_but_not_odometry():
    diag = {"frames_processed": "5", "frames_dropped": "1", "frames_failed": "2", "frames_received": "99",
            "bad_input.time_backwards": "3", "bad_input.nan_odometry": "7", "keyframes": "5"}
    assert _accounted(diag) == 11
