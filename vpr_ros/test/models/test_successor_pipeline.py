"""SelaVPR++ and ImAge (small random-init configs) through load_model's backends, replay and a map.

Random weights say nothing about accuracy: this checks that the descriptors, the 23x23 local maps and
the hash (``Descriptors.hash``) come out of every backend alike and fit the detector end to end.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from _reference import random_frames

from conftest import corridor_image
from vpr_ros.cli.session import replay_bag
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_image_bag
from vpr_ros.models import load_model

NS = 1_000_000_000
SMALL = {
    "selavprpp-rerank": dict(depth=3, embed_dim=32, num_heads=2, num_adapters=2, adapter_hidden=32, output_dim=48),
    "image": dict(depth=3, embed_dim=32, num_heads=2, insert_before=2),
}


def _load(preset: str, **kw: object):
    torch.manual_seed(0)  # the same random init for every backend
    return load_model(preset, pretrained=False, **SMALL[preset], **kw)


@pytest.mark.parametrize("preset", sorted(SMALL))
def test_torch_onnxruntime_and_bf16_agree_and_only_rerank_models_hash(preset, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))
    frames = random_frames(3)
    out = {name: _load(preset, input_size=(98, 98), **kw).extract(frames) for name, kw in
           (("torch", {}), ("onnxruntime", dict(backend="onnxruntime")), ("bf16", dict(precision="bf16")))}
    ref = out["torch"]
    np.testing.assert_allclose(out["onnxruntime"].global_, ref.global_, atol=1e-5)
    np.testing.assert_allclose(out["onnxruntime"].local, ref.local, atol=1e-5)
    assert ref.local.shape == (3, 7, 7, 32)
    assert (out["bf16"].global_ * ref.global_).sum(-1).min() > 0.99
    if preset == "image":
        assert all(d.hash is None for d in out.values())
        return
    assert ref.hash.shape == (3, 64) and ref.hash.dtype == np.uint8
    # ONNX Runtime's graph has no hash output: the torch module hashes beside it, with the same bits.
    np.testing.assert_array_equal(out["onnxruntime"].hash, ref.hash)
    model = _load(preset, input_size=(98, 98))
    with torch.no_grad():
        z, packed = model.module.hash(model.preprocess(frames))
    np.testing.assert_array_equal(packed.numpy(), ref.hash)
    np.testing.assert_array_equal(np.packbits(z.numpy() >= 0, axis=1), ref.hash)
    # bf16 may flip bits whose value is near zero, nothing else.
    flipped = np.unpackbits(out["bf16"].hash ^ ref.hash, axis=1).astype(bool)
    assert not (flipped & (np.abs(z.numpy()) > 0.02)).any()


@pytest.fixture(scope="module")
def revisit_bag(tmp_path_factory):
    frames = [Frame(i * NS, corridor_image("ref", 10 * i)) for i in range(4)]
    frames += [Frame((60 + i) * NS, corridor_image("query", 10 * i)) for i in range(4)]
    return write_image_bag(tmp_path_factory.mktemp("bag") / "revisit", frames, "/cam", encoding="rgb8")


@pytest.mark.parametrize("preset", sorted(SMALL))
def test_replay_and_map_roundtrip_at_the_released_input_size(preset, revisit_bag, tmp_path) -> None:
    model = _load(preset)  # 322x322: a 23x23 grid
    cfg = config_from_flat({"detector.min_loop_gap_sec": 30.0, "verify.min_matches": 0,
                            "verify.temporal_consistency": 1})
    det = LoopClosureDetector(cfg, model)
    result = replay_bag(det, revisit_bag, "/cam")
    assert result.num_frames == 8 and len(result.loop_closures) == 4
    for lc in result.loop_closures:
        assert lc.descriptor_model == f"{preset}@random" and lc.descriptor_dim == model.global_dim
        assert lc.local_features == 23 * 23 and lc.match_id < 4
    det.save_map(tmp_path / "map")
    again = LoopClosureDetector(config_from_flat({"detector.session_id": "s2"}), model)
    assert again.load_map(tmp_path / "map") == 8
    assert again.keyframe(0).local.shape == (23, 23, 32)
    np.testing.assert_allclose(again.keyframe(5).global_, det.keyframe(5).global_, atol=1e-3)


def test_bench_models_reports_sizes_and_the_hash_pass(capsys) -> None:
    from vpr_ros.cli.main import main

    assert main(["bench", "models", "--preset", "selavprpp-base-rerank", "--small", "--variants", "bf16",
                 "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "global descriptor 48-d = 192 B float32 / 96 B float16 per keyframe + hash 512 bit = 64 B" in out
    rows = dict(re.findall(r"^\| (\w+) \| \d+ \| \d+ \| [\d.]+ \| ([\d.]+) \|", out, re.M))
    assert set(rows) == {"eager", "eager_hash", "bf16"} and float(rows["eager_hash"]) > 0.99999
