"""``vpr-ros replay --map-load`` relocalises: a SIMULATED (RENDERED from real photographs) room is
mapped (exact odometry, RGB-D, the camera mounted on a base frame), then kidnapped sessions whose
odometry starts at identity are replayed against the saved map. The fixes come out on the
``/global_pose`` topic (read back from the bag) and in global_poses.csv, evaluated against the truth."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vpr_ros.cli.bench.relocalization import replay_start
from vpr_ros.cli.kidnapped_bags import (DEPTH_TOPIC, IMAGE_TOPIC, NS, ODOM_TOPIC, write_camera_yaml,
                                        write_session_bag, write_tum)
from vpr_ros.cli.kidnapped_scenes import BASE_FROM_CAMERA, kidnapped_sessions, mapping_session, simulated_places
from vpr_ros.cli.main import main
from vpr_ros.cli.rendered_scenes import simulated_camera
from vpr_ros.cli.replay_fixes import CSV_COLUMNS, FIX_TOPIC, read_global_poses
from vpr_ros.core.localization.relocalizer import REFUSAL_REASONS
from vpr_ros.core.map.map_poses import map_poses
from vpr_ros.core.map.snapshot import load_keyframes
from vpr_ros.io.bags import bag_topics
from vpr_ros.io.poses import matrix_to_pose

T0 = 1_700_000_000 * NS
BASE = " ".join(f"{v:.12g}" for v in (*matrix_to_pose(BASE_FROM_CAMERA)[0], *matrix_to_pose(BASE_FROM_CAMERA)[1]))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """One mapped room (16 keyframes), two kidnapped starts and one look-alike start of 4 frames each."""
    work = tmp_path_factory.mktemp("kidnapped")
    cam = simulated_camera(256, 192)
    mapped, looks = simulated_places(1, 0, 1, seed=7)
    write_session_bag(work / "mapping", mapping_session(mapped), cam, T0, 1, exact_odometry_frame=True)
    inputs = ["--image-topic", IMAGE_TOPIC, "--camera-info", str(write_camera_yaml(work / "camera.yaml", cam)),
              "--depth-topic", DEPTH_TOPIC, "--odom-topic", ODOM_TOPIC, "--set", f"frames.base_from_camera='{BASE}'"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdout", open(work / "stdout.txt", "w"))
        assert main(["replay", str(work / "mapping"), *inputs, "--no-progress", "--map-save", str(work / "map"),
                     "--out", str(work / "mapping_out")]) == 0
    starts = kidnapped_sessions(mapped, looks, 2, 1, frames=4, seed=3)
    results = {}
    for k, s in enumerate(starts):
        stamps, truth = write_session_bag(work / s.name, s, cam, T0 + (10_000 + 100 * k) * NS, 10 + k)
        write_tum(work / f"{s.name}.tum", stamps, truth, "SIMULATED truth")
        results[s.name] = (s, stamps, replay_start(work / s.name, work / "map", work / f"{s.name}.tum",
                                                   work / f"{s.name}_out", inputs, s.name))
    return work, results


def _first_mapped(results):
    return next((s, stamps, section) for s, stamps, section in results.values() if s.mapped)


def test_fixes_are_written_to_the_global_pose_topic_and_the_csv(scenario):
    work, results = scenario
    s, stamps, section = _first_mapped(results)
    out = work / f"{s.name}_out"
    assert bag_topics(out / "global_pose") == {FIX_TOPIC: "geometry_msgs/msg/PoseWithCovarianceStamped"}
    msgs = read_global_poses(out / "global_pose")
    rows = list(csv.DictReader(open(out / "global_poses.csv")))
    assert list(rows[0]) == CSV_COLUMNS and len(msgs) == len(rows) == section["fixes"] >= 1
    for m, r in zip(msgs, rows):
        assert m["frame_id"] == "map" and r["frame_id"] == "map" and r["child_frame_id"] == "base_link"
        assert m["stamp_ns"] in stamps and m["stamp_ns"] == int(r["stamp_ns"]) == m["recorded_ns"]  # the image's
        np.testing.assert_allclose(m["T"][:3, 3], [float(r[k]) for k in "xyz"], atol=1e-6)
        np.testing.assert_allclose(m["covariance"].ravel(), [float(r[f"cov_{i}"]) for i in range(36)], rtol=1e-6)
        assert r["matched_keyframes"].startswith("robot/session/")
    metrics = json.loads((out / "metrics.json").read_text())["relocalization"]
    assert metrics["mode"] == "continuous" and set(metrics["refusals"]) == set(REFUSAL_REASONS)
    assert metrics["map_poses"] == {"keyframes": 16, "sources": {"odometry": 16}}
    assert (out / "relocalization.png").stat().st_size > 0
    refusals = list(csv.DictReader(open(out / "relocalization_refusals.csv")))
    assert len(refusals) == sum(metrics["refusals"].values()) and all(r["reason"] in REFUSAL_REASONS for r in refusals)


def test_the_covariance_is_row_major_ros_order_in_the_map_frame(scenario):
    """By default (relocalization.map_pose_covariance: local) a fix's covariance is relative to the
    matched keyframe's stored map pose: far below that pose's drift covariance, symmetric positive
    definite, and the CSV holds the same row-major values (cov_0 = x, cov_35 = yaw)."""
    work, results = scenario
    s, _, _ = _first_mapped(results)
    poses = map_poses(load_keyframes(work / "map", load_local=False)[1], {})
    checked = 0
    for m, r in zip(read_global_poses(work / f"{s.name}_out" / "global_pose"),
                    csv.DictReader(open(work / f"{s.name}_out" / "global_poses.csv"))):
        robot, session, kf = r["matched_keyframes"].split()[0].split("/")
        mp = poses[(robot, session, int(kf))]
        cov = m["covariance"]
        assert np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
        np.testing.assert_allclose([cov[0, 0], cov[5, 5]], [float(r["cov_0"]), float(r["cov_35"])], rtol=1e-6)
        if np.trace(mp.covariance[:3, :3]) > 1e-4:  # a keyframe far from the map's first one
            assert np.trace(cov[:3, :3]) < 0.1 * np.trace(mp.covariance[:3, :3])
        checked += 1
    assert checked >= 1


def test_kidnapped_starts_relocalise_within_three_keyframes_without_a_wrong_fix(scenario):
    _, results = scenario
    mapped = [section for s, _, section in results.values() if s.mapped]
    assert len(mapped) == 2
    for section in mapped:
        ev = section["evaluation"]
        assert ev["keyframes_seeing_map"] == 4  # every frame is a keyframe near a mapped pose
        assert ev["keyframes_to_first_fix"] is not None and ev["keyframes_to_first_fix"] <= 3
        assert ev["wrong_fixes"] == 0
        assert ev["position_error_m"]["max"] < 0.05 and ev["rotation_error_deg"]["max"] < 1.0
        assert all(r["wrong"] == "0" for r in section["rows"])


def test_a_start_in_a_look_alike_place_gives_no_fix(scenario):
    """The same photographs, each scrolled in its frame: no rigid motion explains a view, so any fix
    is wrong (docs/benchmarks.md, "Relocalisation: kidnapped starts", has the look-alikes that still
    give one)."""
    _, results = scenario
    looks = [section for s, _, section in results.values() if not s.mapped]
    assert len(looks) == 1 and looks[0]["evaluation"]["keyframes_seeing_map"] == 0
    assert looks[0]["fixes"] == 0 and looks[0]["rows"] == []
