"""SelaVPR, CricaVPR, DINOv2-S+GeM, SALAD, MegaLoc and BoQ (small random-init configs) through replay.

Random weights say nothing about accuracy; this checks that the presets' outputs fit the detector
(global retrieval, MNN on their local maps, map save/load, the LoopClosure bag) end to end.
"""

import pytest
import torch
from rosbags.highlevel import AnyReader

from conftest import corridor_image
from vpr_ros.cli.session import replay_bag
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_image_bag, write_loop_closures
from vpr_ros.models import load_model

NS = 1_000_000_000
PRESETS = {
    "selavpr": (dict(depth=2, embed_dim=64, num_heads=2, local_hidden=16, local_dim=8), (61, 61, 8)),
    "cricavpr": (dict(depth=2, embed_dim=64, num_heads=2, adapter_hidden=32, encoder_heads=4,
                      encoder_ff=32), (16, 16, 64)),
    "dinov2s-gem": (dict(depth=2, embed_dim=64, num_heads=2), (16, 16, 64)),
    # 322x322 input (the presets' size) on a 2-block ViT: 23x23 patches, enough for 8 clusters.
    "salad": (dict(depth=2, embed_dim=64, num_heads=2, num_clusters=8, cluster_dim=16, token_dim=32,
                   mlp_dim=32), (23, 23, 64)),
    "megaloc": (dict(depth=2, embed_dim=64, num_heads=2, num_clusters=8, cluster_dim=16, token_dim=32,
                     mlp_dim=32, output_dim=48), (23, 23, 64)),
    "boq": (dict(depth=2, embed_dim=64, num_heads=2, proj_channels=32, num_queries=8, row_dim=4,
                 boq_heads=2), (23, 23, 64)),
}


@pytest.fixture(scope="module")
def revisit_bag(tmp_path_factory):
    frames = [Frame(i * NS, corridor_image("ref", 10 * i)) for i in range(5)]
    frames += [Frame((60 + i) * NS, corridor_image("query", 10 * i)) for i in range(5)]
    return write_image_bag(tmp_path_factory.mktemp("bag") / "revisit", frames, "/cam", encoding="rgb8")


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_preset_runs_through_replay(preset, backend, revisit_bag, tmp_path, monkeypatch):
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path / "cache"))
    overrides, local_shape = PRESETS[preset]
    torch.manual_seed(0)
    model = load_model(preset, pretrained=False, backend=backend, **overrides)
    cfg = config_from_flat({"detector.min_loop_gap_sec": 30.0, "verify.min_matches": 0,
                            "verify.temporal_consistency": 1})
    result = replay_bag(LoopClosureDetector(cfg, model), revisit_bag, "/cam")
    assert result.num_frames == 10 and len(result.records) == 10
    # Every revisit frame is 60 s after the first pass: it has candidates, all from the first pass.
    assert len(result.loop_closures) == 5
    for lc in result.loop_closures:
        assert lc.descriptor_model == f"{preset}@random" and lc.descriptor_dim == model.global_dim
        assert lc.local_features == local_shape[0] * local_shape[1] and lc.match_id < 5
    out = write_loop_closures(tmp_path / "loops", result.loop_closures)
    with AnyReader([out]) as reader:
        assert sum(1 for _ in reader.messages()) == 5


@pytest.mark.parametrize("preset", ["selavpr", "salad", "megaloc", "boq"])
def test_preset_map_roundtrip(preset, revisit_bag, tmp_path, monkeypatch):
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path / "cache"))
    overrides, local_shape = PRESETS[preset]
    torch.manual_seed(0)
    model = load_model(preset, pretrained=False, **overrides)
    det = LoopClosureDetector(config_from_flat({"verify.min_matches": 0}), model)
    replay_bag(det, revisit_bag, "/cam", max_frames=5)
    det.save_map(tmp_path / "map")
    again = LoopClosureDetector(config_from_flat({"detector.session_id": "s2"}), model)
    assert again.load_map(tmp_path / "map") == 5
    assert again.keyframe(0).local.shape == local_shape
