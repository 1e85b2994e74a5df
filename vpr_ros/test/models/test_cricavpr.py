"""CricaVPR: official key layout, MulConv adapter quirk, regions, cross-image encoder policy, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _reference import assert_onnx_matches_torch, backends_agree, manifest, random_frames, state_manifest

from vpr_ros.core.errors import ConfigError
from vpr_ros.models.cricavpr import MulConvAdapter, _region_bounds, build_cricavpr
from vpr_ros.models.registry import get_preset

SMALL = dict(depth=2, embed_dim=64, num_heads=2, adapter_hidden=32, encoder_heads=4, encoder_ff=32)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_cricavpr(**SMALL)
    with torch.no_grad():  # non-trivial BatchNorm statistics and GeM p, as in a trained checkpoint
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        m.aggregation[1].p.fill_(3.2)
    return m


def test_full_model_state_dict_equals_official_manifest() -> None:
    with torch.device("meta"):
        m = build_cricavpr()
    assert state_manifest(m) == manifest("cricavpr")
    floats = sum(v.numel() for v in m.state_dict().values() if v.dtype == torch.float32)
    assert floats == 106_772_033  # MODELS.md §2.8


def test_default_preset_matches_registry_shapes() -> None:
    spec = get_preset("cricavpr")
    with torch.device("meta"):
        m = build_cricavpr()
        g, loc = m(torch.empty(2, 3, *spec.input_size))
    assert g.shape == (2, spec.global_dim) == (2, 14 * 768)
    assert loc.shape == (2, *spec.local_shape) == (2, 16, 16, 768)


def test_region_split_points_are_official() -> None:
    assert _region_bounds(16, 2) == [(0, 8), (8, 16)]
    assert _region_bounds(16, 3) == [(0, 5), (5, 11), (11, 16)]


def test_mulconv_adapter_doubles_cls_and_adds_input_to_patches() -> None:
    torch.manual_seed(0)
    ad = MulConvAdapter(32, 16, 8, 2, 4, 2, 4).eval()
    x = torch.randn(2, 1 + 16 * 16, 32)
    with torch.no_grad():
        out = ad(x)
        x0 = F.relu(ad.D_fc1(x))
        torch.testing.assert_close(out[:, 0], ad.D_fc2(2 * x0[:, 0]))
        grid = x0[:, 1:].reshape(2, 16, 16, 16).permute(0, 3, 1, 2)
        conv = torch.cat([ad.branch1(grid), ad.branch2(grid), ad.branch3(grid)], 1).flatten(2).transpose(1, 2)
        torch.testing.assert_close(out[:, 1:], ad.D_fc2(conv + x0[:, 1:]))
    assert ad.branch1.bn.eps == 1e-3


def test_encoder_equals_torch_transformer_encoder_over_the_batch(model: torch.nn.Module) -> None:
    # The official head: nn.TransformerEncoder(batch_first=False) fed (B, 14, D): attention across images.
    layer = torch.nn.TransformerEncoderLayer(64, 4, 32, dropout=0.1, activation="gelu")
    official = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    official.load_state_dict({k[len("encoder."):]: v for k, v in model.state_dict().items()
                              if k.startswith("encoder.")})
    tokens = torch.randn(5, 14, 64)
    with torch.no_grad():
        expected = F.normalize(official(tokens).flatten(1), dim=-1)
        torch.testing.assert_close(model.encode_batch(tokens), expected, atol=1e-5, rtol=1e-5)
        single = F.normalize(official(tokens[2:3]).flatten(1), dim=-1)
        torch.testing.assert_close(model.encode_alone(tokens)[2:3], single, atol=1e-5, rtol=1e-5)


def test_default_policy_encodes_each_image_alone(model: torch.nn.Module) -> None:
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        batch, loc = model(x)
        one_by_one = torch.cat([model(x[i:i + 1])[0] for i in range(4)])
        official = model.forward_batch(x)[0]
        permuted = model.forward_batch(x[[2, 0, 3, 1]])[0]
    torch.testing.assert_close(batch, one_by_one, atol=1e-5, rtol=1e-5)  # batching does not matter
    assert (official - batch).abs().max() > 1e-4  # the official batch context does
    torch.testing.assert_close(permuted, official[[2, 0, 3, 1]], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch.numpy(), axis=1), 1.0, atol=1e-5)
    _, patches, _ = model.backbone.forward_tokens(x)
    torch.testing.assert_close(loc, F.normalize(patches.detach().reshape(4, 16, 16, 64), dim=-1))


def test_context_policy_equals_official_batch_of_the_window() -> None:
    torch.manual_seed(0)
    m = build_cricavpr(**SMALL, cross_image_context=2)
    x = torch.randn(5, 3, 224, 224)
    with torch.no_grad():
        first = m(x[:3])[0]
        second = m(x[3:])[0]  # the window carries over between calls
        for i, got in enumerate(torch.cat([first, second])):
            lo = max(0, i - 2)
            expected = m.forward_batch(x[lo:i + 1])[0][-1]
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        m.reset_context()
        torch.testing.assert_close(m(x[3:4])[0], m.forward_batch(x[3:4])[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError):
        build_cricavpr(**SMALL, cross_image_context=-1)


def test_onnx_export_matches_torch_with_dynamic_batch(model: torch.nn.Module) -> None:
    assert_onnx_matches_torch(model)


def test_load_model_torch_and_onnxruntime_agree(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))  # exported graphs go to the test's directory
    images = random_frames()
    out = backends_agree("cricavpr", SMALL, images)
    assert out["torch"].global_.shape == (3, 14 * 64) and out["torch"].local.shape == (3, 16, 16, 64)
    # the default policy: a frame's descriptor does not depend on its batch-mates
    from vpr_ros.models import load_model

    torch.manual_seed(0)
    alone = load_model("cricavpr", pretrained=False, backend="torch", **SMALL).extract(images[1:2])
    np.testing.assert_allclose(alone.global_[0], out["torch"].global_[1], atol=1e-5)
