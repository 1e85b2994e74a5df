"""SelaVPR++ with its hash branch (small random-init config) inside the real node: frames in, LoopClosure out.

One node start: the two-branch model (float descriptor, 23x23 local map and the 512-bit hash per frame)
goes through the node's queue, detector, MNN and publisher, and the node shuts down cleanly. ImAge and
the single-branch presets share this forward path (tested through replay in test/models/).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

CONFIG_YAML = Path(__file__).resolve().parents[2] / "config" / "loop_closure.yaml"
FRAMES = 3  # per traversal


def test_selavprpp_rerank_runs_in_the_node(run_scenario, tmp_path):
    doc = yaml.safe_load(CONFIG_YAML.read_text())
    params = doc["/**"]["ros__parameters"]
    params["verify"].update(min_matches=0, temporal_consistency=1)
    params.update(extractor_factory="small_successors:selavprpp_base_rerank",
                  qos={"reliability": "reliable", "depth": 100}, queue={"size": 100}, diagnostics={"period_sec": 0.2})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    launch_args = {"config": str(path), "namespace": "robot1", "image_topic": "/cam/image_raw", "odom_topic": ""}
    result = run_scenario("revisit", "--launch-args", json.dumps(launch_args), "--frames", str(FRAMES),
                          "--rate", "10", timeout=120)
    logs = result["_logs"] + result["log"]
    assert result["settled"], logs
    assert result["diag"]["frames_processed"] == str(2 * FRAMES), logs
    assert len(result["loops"]) == FRAMES, logs
    for m in result["loops"]:
        assert m["descriptor_model"] == "selavprpp-base-rerank@random" and m["descriptor_dim"] == 40
        assert m["local_features"] == 23 * 23 and m["match_id"] < FRAMES
    assert result["rc"] == 0, logs
