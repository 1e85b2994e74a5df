"""Issue 18 (a node that says when its input is missing) and issue 20 (a missing --params-file).

DDS scenarios run in input_scenarios.py: wrong topic, compressed topic without image.compressed,
the image_compressed launch argument, a QoS mismatch, frames lost between stamps, loop log lines.
The counting itself (nodes/input_health.py) is tested without ROS.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vpr_ros.nodes.input_health import LoopReport, StampGaps, no_input_hint, params_file_problem

from conftest import ros_env, scenario_runner

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
WARN, OK = 1, 0


@pytest.fixture
def run_input(netns_ok: None, tmp_path: Path):
    return scenario_runner(HERE / "input_scenarios.py", tmp_path)


# -- ROS-free ------------------------------------------------------------------------------------
def _gaps(ticks: list[int], period_ns: int = 33_333_333) -> StampGaps:
    gaps = StampGaps()
    for t in ticks:
        gaps.add(1_000_000_000 + t * period_ns)
    return gaps


def test_stamp_gaps_count_lost_frames_even_when_most_gaps_hold_some():
    assert _gaps(list(range(50))).lost == 0
    assert _gaps([*range(10), *range(13, 93, 4)]).lost == 60
    # The case: 10 of 84 frames arrive (30 Hz, best effort); a few arrive back to back.
    kept = [0, 1, 9, 10, 19, 27, 28, 45, 60, 83]
    gaps = _gaps(kept)
    assert gaps.lost == 84 - len(kept) and gaps.recent() == (74, 9)
    assert gaps.period_ns() == pytest.approx(33_333_333, rel=1e-6)


def test_stamp_gaps_ignore_jitter_pauses_and_restarts():
    jitter = StampGaps()
    for i in range(40):
        jitter.add(10**9 + i * 100_000_000 + (3_000_000 if i % 2 else -3_000_000))
    assert jitter.lost == 0
    paused = _gaps([*range(20), *range(2000, 2020)], period_ns=100_000_000)  # 198 s pause: not losses
    assert paused.lost == 0
    restart = _gaps([*range(20), *range(5, 15)])  # a bag loops: stamps go back, the chain restarts
    assert restart.lost == 0 and restart.received == 30
    few = _gaps([0, 5, 10])  # too few gaps to know the period: nothing judged yet
    assert few.lost == 0 and few.period_ns() is None and few.recent() == (0, 2)


def test_loop_report_summarises_every_loop_at_most_once_per_interval():
    report = LoopReport(1.0)
    assert report.due(0.0) is None
    report.add(2, "keyframe 7 -> 1")
    first = report.due(10.0)
    assert first is not None and first.startswith("published 2 loop closures since start (2 in total)")
    report.add(1, "keyframe 8 -> 2")
    assert report.due(10.5) is None  # throttled, kept for the next line
    report.add(3, "keyframe 9 -> 3")
    assert report.due(11.0) == ("published 4 loop closures in the last 1.0 s (6 in total); "
                                "latest: keyframe 9 -> 3")
    assert report.due(20.0) is None


def test_no_input_hint_names_the_likely_fix():
    img, cmp = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
    assert "image.compressed: true" in no_input_hint(img, [cmp], {"/c": [cmp]}, "/c")
    assert "image.compressed: false" in no_input_hint(cmp, [img], {"/c": [img]}, "/c")
    assert "/c/compressed" in no_input_hint(img, [], {"/c/compressed": [cmp]}, "/c")
    assert "e.g. /cam/image_raw" in no_input_hint(img, [], {"/cam/image_raw": [img]}, "/wrong")
    assert "camera driver" in no_input_hint(img, [], {}, "/wrong")
    assert "has it stopped" in no_input_hint(img, [img], {"/c": [img]}, "/c")


def test_params_file_problem_names_the_file(tmp_path):
    (tmp_path / "p.yaml").write_text("/**: {ros__parameters: {}}\n")
    assert params_file_problem(["n", "--ros-args", "--params-file", "p.yaml"], cwd=str(tmp_path)) is None
    missing = params_file_problem(["n", "--ros-args", "-p", "a:=1", "--params-file", "config/x.yaml"],
                                  cwd=str(tmp_path))
    assert missing is not None and "'config/x.yaml' not found" in missing and str(tmp_path) in missing
    assert "share/vpr_ros/config/loop_closure.yaml" in missing
    assert params_file_problem(["n", "--params-file", "nope.yaml"]) is None  # not a ROS argument


# -- issue 20: processes ---------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["loop_closure_node", "central_node"])
def test_missing_params_file_is_one_line_and_exit_code_2(module, tmp_path):
    proc = subprocess.run([sys.executable, "-m", f"vpr_ros.nodes.{module}", "--ros-args", "--params-file",
                           "config/loop_closure.yaml"], cwd=tmp_path, env=ros_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "RCLError" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and f"{module}: startup failed: parameter file 'config/loop_closure.yaml' not " \
                                   f"found (relative to {tmp_path})" in lines[0], proc.stderr


def test_docs_params_file_examples_name_the_installed_file():
    """The docs' `ros2 run ... --params-file` examples must work from where they say to run them
    (after `source install/setup.bash`, anywhere): the installed share directory, not a relative path."""
    found = 0
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for path in re.findall(r"--params-file\s+(\$\([^)]*\)\S*|\S+)", doc.read_text()):
            found += 1
            prefix = "$(ros2 pkg prefix vpr_ros)/share/vpr_ros/"
            assert path.startswith(prefix), f"{doc.name}: --params-file {path}"
            assert (REPO / "vpr_ros" / path[len(prefix):]).is_file(), f"{doc.name}: {path} is not installed"
    assert found >= 1
    setup = (REPO / "vpr_ros" / "setup.py").read_text()
    assert "share/" in setup and "config" in setup  # config/ is installed into the share directory


# -- issue 18: DDS -------------------------------------------------------------------------------
def test_missing_input_warns_naming_topic_type_and_the_image_topics(run_input):
    r = run_input("missing_input", timeout=60)
    logs, status, diag = r["_logs"], r["status"], r["diag"]
    img, cmp = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
    listed = f"/cam/image_raw ({img}), /cam/image_raw/compressed ({cmp})"
    # Wrong topic: WARN naming the resolved topic, its type and the image topics that have publishers.
    level, message = status["wt"]
    assert level == WARN and f"no image on /cam/wrong ({img})" in message and listed in message, status
    assert diag["wt"]["input.topic"] == "/cam/wrong" and diag["wt"]["input.type"] == img
    assert diag["wt"]["input.image_topics"] == listed and diag["wt"]["frames_received"] == "0"
    assert f"no image on /cam/wrong ({img})" in r["logs"]["wt"] and "remap image" in r["logs"]["wt"], logs
    # A compressed topic without image.compressed: the hint says what to set.
    level, message = status["cz"]
    assert level == WARN and f"no image on /cam/image_raw/compressed ({img})" in message, status
    assert "set image.compressed: true (launch argument image_compressed:=true)" in r["logs"]["cz"], logs
    # The launch argument image_compressed:=true: frames arrive, level OK while they do.
    streaming = r["while_streaming"]
    assert streaming["lc_received"] >= 10 and streaming["lc"][0] == OK, (streaming, logs)
    assert diag["lc"]["input.type"] == cmp and diag["lc"]["input.topic"] == "/cam/image_raw/compressed"
    # ... and when they stop for input.timeout_sec, a WARN and one log line.
    assert status["lc"][0] == WARN and "since the last one" in status["lc"][1], status
    stalls = [line for line in r["logs"]["lc"].splitlines() if "since the last one" in line]
    assert len(stalls) == 1 and "no image on /cam/image_raw/compressed" in stalls[0], logs
    assert r["rc"] == {"wt": 0, "cz": 0, "lc": 0}, logs


def test_incompatible_qos_publisher_is_counted_and_warns_naming_the_policy(run_input):
    r = run_input("qos_mismatch", timeout=45)
    logs, (level, message), d = r["_logs"], r["status"]["qm"], r["diag"]["qm"]
    assert level == WARN and "incompatible QoS (RELIABILITY)" in message, (message, logs)
    assert int(d["input.incompatible_qos"]) >= 1 and d["input.incompatible_qos_policy"] == "RELIABILITY"
    assert d["frames_received"] == "0"
    assert "offers QoS incompatible with this subscription (RELIABILITY; qos.reliability is reliable)" \
        in r["logs"]["qm"], logs


def test_frames_lost_between_stamps_are_counted_and_warn(run_input):
    r = run_input("stamp_gaps", timeout=45)
    logs, (level, message), d = r["_logs"], r["status"]["sg"], r["diag"]["sg"]
    assert r["settled"] and d["frames_received"] == "30", logs
    assert d["input.frames_lost"] == "60" and float(d["input.loss_ratio"]) == pytest.approx(60 / 89, abs=1e-3)
    assert float(d["input.stamp_period_ms"]) == pytest.approx(100.0)
    assert level == WARN and "about 60 of the last 89 frames on /sg/image were lost" in message, (message, logs)
    assert "were lost before reaching the node" in r["logs"]["sg"], logs


def test_every_published_loop_is_logged_and_regular_stamps_stay_ok(run_input):
    r = run_input("loops_logged", "--frames", "20", timeout=60)
    logs, d = r["_logs"], r["diag"]["ll"]
    assert r["settled"] and r["loops"] >= 5, logs
    counts = [int(n) for n in re.findall(r"published (\d+) loop closures? ", r["logs"]["ll"])]
    assert sum(counts) == r["loops"] == int(d["loop_closures"]), (counts, logs)
    times = [float(t) for t in re.findall(r"\[INFO\] \[(\d+\.\d+)\] \[ll\.loop_closure_node\]: published",
                                          r["logs"]["ll"])]
    assert len(times) == len(counts) and all(b - a >= 0.99 for a, b in zip(times, times[1:])), times
    assert d["input.frames_lost"] == "0" and r["status"]["ll"][0] == OK, (r["status"], logs)
