"""BoQ: official key layout, the aggregator against torch's own transformer modules, unused final norm, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _reference import (assert_batch_equals_each_alone, assert_onnx_matches_torch, backends_agree, manifest,
                        random_frames, state_manifest)
from torch import nn

from vpr_ros.core.errors import ModelLoadError
from vpr_ros.models import load_model
from vpr_ros.models.boq import build_boq
from vpr_ros.models.preprocess import preprocess_images
from vpr_ros.models.registry import get_preset

SMALL = dict(depth=2, embed_dim=64, num_heads=2, proj_channels=32, num_queries=8, row_dim=4, boq_heads=2)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_boq(**SMALL)
    with torch.no_grad():  # LayerNorm affines that are not the identity, as in a trained file
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return m


class _OfficialBlock(nn.Module):
    """MODELS_2.md §3.3 with torch's own modules (what the official code builds)."""

    def __init__(self, dim: int, queries: int, heads: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(1, queries, dim))
        self.encoder = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.encoder(x)
        q = self.queries.repeat(x.size(0), 1, 1)
        q = self.norm_q(q + self.self_attn(q, q, q)[0])
        out, attn = self.cross_attn(q, x, x)
        return x, self.norm_out(out), attn


class _OfficialAggregator(nn.Module):
    def __init__(self, cin: int, dim: int, queries: int, layers: int, rows: int, heads: int) -> None:
        super().__init__()
        self.proj_c = nn.Conv2d(cin, dim, 3, padding=1)
        self.norm_input = nn.LayerNorm(dim)
        self.boqs = nn.ModuleList(_OfficialBlock(dim, queries, heads) for _ in range(layers))
        self.fc = nn.Linear(layers * queries, rows)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.norm_input(self.proj_c(fmap).flatten(2).permute(0, 2, 1))
        outs, attns = [], []
        for block in self.boqs:
            x, out, attn = block(x)
            outs.append(out)
            attns.append(attn)
        out = self.fc(torch.cat(outs, dim=1).permute(0, 2, 1))
        return F.normalize(out.flatten(1), p=2, dim=-1), attns


def test_full_model_state_dict_equals_official_manifest() -> None:
    with torch.device("meta"):
        m = build_boq()
    assert state_manifest(m) == manifest("boq", prefix="")
    assert sum(v.numel() for v in m.state_dict().values()) == 95_206_560  # MODELS_2.md §3.8
    assert sum(v.numel() for v in m.aggregator.parameters()) == 8_626_080


def test_default_preset_matches_registry_shapes() -> None:
    spec = get_preset("boq")
    with torch.device("meta"):
        g, loc = build_boq()(torch.empty(2, 3, *spec.input_size))
    assert g.shape == (2, spec.global_dim) == (2, 12288) and loc.shape == (2, *spec.local_shape)


def test_aggregator_equals_torch_transformer_modules(model: torch.nn.Module) -> None:
    official = _OfficialAggregator(64, 32, 8, 2, 4, 2).eval()
    official.load_state_dict(model.aggregator.state_dict(), strict=True)
    x = torch.randn(2, 3, 70, 84)
    with torch.no_grad():
        _, patches, (h, w) = model.backbone.dino.forward_tokens(x)
        fmap = patches.permute(0, 2, 1).reshape(2, 64, h, w)  # CLS dropped, no final norm
        expected, attns = official(fmap)
        got, _ = model(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert got.shape == (2, 32 * 4)
    assert [a.shape for a in attns] == [(2, 8, h * w)] * 2
    # With other head counts (the 8-head history) the same weights give another function.
    other = _OfficialAggregator(64, 32, 8, 2, 4, 4).eval()
    other.load_state_dict(model.aggregator.state_dict(), strict=True)
    with torch.no_grad():
        assert (other(fmap)[0] - got).abs().max() > 1e-4


def test_final_norm_is_stored_but_only_feeds_the_local_features(model: torch.nn.Module) -> None:
    x = torch.randn(1, 3, 56, 56)
    norm = model.backbone.dino.norm
    with torch.no_grad():
        g0, loc0 = model(x)
        norm.weight.mul_(3.0)
        norm.bias.add_(0.5)
        g1, loc1 = model(x)
        norm.weight.div_(3.0)
        norm.bias.sub_(0.5)
        _, patches, _ = model.backbone.dino.forward_tokens(x)
        normed = F.layer_norm(patches, (64,), norm.weight, norm.bias, 1e-6)
    torch.testing.assert_close(g1, g0, atol=0, rtol=0)
    assert (loc1 - loc0).abs().max() > 1e-3
    torch.testing.assert_close(loc0, F.normalize(normed.reshape(1, 4, 4, 64), dim=-1))


def test_batch_of_two_equals_each_alone(model: torch.nn.Module) -> None:
    assert_batch_equals_each_alone(model, hw=(56, 70))


def test_onnx_export_matches_torch(model: torch.nn.Module) -> None:
    assert_onnx_matches_torch(model, hw=(70, 84))


def test_load_model_torch_and_onnxruntime_agree(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))
    out = backends_agree("boq", dict(SMALL, input_size=(98, 126)), random_frames())
    assert out["torch"].global_.shape == (3, 128) and out["torch"].local.shape == (3, 7, 9, 64)


def test_preprocessing_resizes_bicubic_antialiased_before_normalising() -> None:
    frame = random_frames(1)[0]
    got = preprocess_images([frame], "bicubic-antialias", (98, 126))[0]
    x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)
    x = F.interpolate(x[None], size=(98, 126), mode="bicubic", align_corners=False, antialias=True)[0]
    ref = (x - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_official_file_loads_strictly_and_a_shrunk_model_is_refused(model, tmp_path) -> None:
    path = tmp_path / "dinov2_12288.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model("boq", str(path), **SMALL, input_size=(56, 56))
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x)[0], model(x)[0], atol=0, rtol=0)
    with pytest.raises(ModelLoadError, match=r"mis-shaped.*looks like preset: boq"):
        load_model("boq", str(path), **dict(SMALL, row_dim=8))
