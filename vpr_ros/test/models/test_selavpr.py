"""SelaVPR: official key layout, adapter maths, GeM with learned p, local head, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _reference import assert_onnx_matches_torch, backends_agree, manifest, random_frames, state_manifest

from vpr_ros.core.errors import ConfigError
from vpr_ros.models.registry import get_preset
from vpr_ros.models.selavpr import SelaBlock, build_selavpr, build_selavpr_reg4

SMALL = dict(depth=2, embed_dim=64, num_heads=2, local_hidden=16, local_dim=8)


def test_full_model_state_dict_equals_official_manifest() -> None:
    with torch.device("meta"):
        model = build_selavpr()
    assert state_manifest(model) == manifest("selavpr")
    assert sum(p.numel() for p in model.parameters()) == 357_428_609  # MODELS.md §1.1


def test_reg4_adds_only_the_register_tokens() -> None:
    with torch.device("meta"):
        model = build_selavpr_reg4()
    rows = state_manifest(model)
    assert rows[2] == ("backbone.register_tokens", "1x4x1024", "float32")
    assert rows[:2] + rows[3:] == manifest("selavpr")
    assert model.backbone.cfg.interpolate_offset == 0.1 and not model.backbone.cfg.interpolate_antialias


def test_default_preset_matches_registry_shapes() -> None:
    spec = get_preset("selavpr")
    with torch.device("meta"):
        model = build_selavpr()
        g, loc = model(torch.empty(2, 3, *spec.input_size))
    assert g.shape == (2, spec.global_dim)
    assert loc.shape == (2, *spec.local_shape)


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="allowed"):
        build_selavpr(depth=2, widht=3)


def test_block_adapters_serial_with_skip_and_parallel_scaled() -> None:
    torch.manual_seed(0)
    block = SelaBlock(32, 2, 4.0).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        a = block.attn(block.norm1(x))
        a1 = a + block.adapter1.D_fc2(F.relu(block.adapter1.D_fc1(a)))
        x1 = x + block.ls1.gamma * a1
        y = block.norm2(x1)
        f = block.mlp(y) + 0.2 * block.adapter2.D_fc2(F.relu(block.adapter2.D_fc1(y)))
        torch.testing.assert_close(block(x), x1 + block.ls2.gamma * f)


def test_global_is_l2_gem_with_learned_p_and_local_is_61x61() -> None:
    torch.manual_seed(0)
    model = build_selavpr(**SMALL)
    with torch.no_grad():
        model.aggregation[1].p.fill_(2.5)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        g, loc = model(x)
        _, patches, _ = model.backbone.forward_tokens(x)
    tokens = patches.numpy().astype(np.float64)  # (2, 256, 64), row-major 16x16
    tokens /= np.linalg.norm(tokens, axis=-1, keepdims=True)
    gem = np.mean(np.maximum(tokens, 1e-6) ** 2.5, axis=1) ** (1 / 2.5)
    gem /= np.linalg.norm(gem, axis=-1, keepdims=True)
    np.testing.assert_allclose(g.numpy(), gem, atol=1e-5)
    assert loc.shape == (2, 61, 61, 8)
    np.testing.assert_allclose(np.linalg.norm(loc.numpy(), axis=-1), 1.0, atol=1e-5)


def test_onnx_export_matches_torch_with_dynamic_batch() -> None:
    torch.manual_seed(0)
    model = build_selavpr(**SMALL)
    assert_onnx_matches_torch(model)


def test_load_model_torch_and_onnxruntime_agree(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))  # exported graphs go to the test's directory
    images = random_frames()
    out = backends_agree("selavpr", SMALL, images)
    assert out["torch"].global_.shape == (3, 64) and out["torch"].local.shape == (3, 61, 61, 8)
