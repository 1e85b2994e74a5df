"""SALAD, MegaLoc and BoQ (small random-init configs) inside the real node: frames in, LoopClosure out.

Random weights say nothing about accuracy; this checks that the presets' descriptors and 23x23 local
maps go through the node's queue, detector, MNN and publisher, and that it shuts down cleanly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from small_presets import SMALL

CONFIG_YAML = Path(__file__).resolve().parents[2] / "config" / "loop_closure.yaml"
FRAMES = 4  # per traversal
DIMS = {"salad": 32 + 16 * 8, "megaloc": 48, "boq": 32 * 4}


@pytest.mark.parametrize("preset", sorted(SMALL))
def test_preset_runs_in_the_node(preset, run_scenario, tmp_path):
    doc = yaml.safe_load(CONFIG_YAML.read_text())
    params = doc["/**"]["ros__parameters"]
    params["verify"].update(min_matches=0, temporal_consistency=1)
    params.update(extractor_factory=f"small_presets:{preset}", qos={"reliability": "reliable", "depth": 100},
                  queue={"size": 100}, diagnostics={"period_sec": 0.2})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    launch_args = {"config": str(path), "namespace": "robot1", "image_topic": "/cam/image_raw", "odom_topic": ""}
    result = run_scenario("revisit", "--launch-args", json.dumps(launch_args), "--frames", str(FRAMES),
                          "--rate", "10", timeout=120)
    logs = result["_logs"] + result["log"]
    assert result["settled"], logs
    assert result["diag"]["frames_processed"] == str(2 * FRAMES), logs
    # Every query frame is 100 s after the reference pass: with min_matches 0 each one closes a loop.
    assert len(result["loops"]) == FRAMES, logs
    for m in result["loops"]:
        assert m["descriptor_model"] == f"{preset}@random" and m["descriptor_dim"] == DIMS[preset]
        assert m["local_features"] == 23 * 23 and m["match_id"] < FRAMES
    assert result["rc"] == 0, logs
