"""SALAD: official key layout, log-domain Sinkhorn against float64, aggregation layout, loading, ONNX."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _reference import (assert_batch_equals_each_alone, assert_onnx_matches_torch, backends_agree, manifest,
                        random_frames, state_manifest)

from vpr_ros.core.errors import InputError, ModelLoadError
from vpr_ros.models import load_model
from vpr_ros.models.boq import build_boq
from vpr_ros.models.preprocess import preprocess_images
from vpr_ros.models.registry import get_preset
from vpr_ros.models.salad import build_salad
from vpr_ros.models.sinkhorn import log_optimal_transport

SMALL = dict(depth=2, embed_dim=64, num_heads=2, num_clusters=8, cluster_dim=16, token_dim=32, mlp_dim=32)
BOQ_SMALL = dict(depth=2, embed_dim=64, num_heads=2, proj_channels=32, num_queries=8, row_dim=4, boq_heads=2)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_salad(**SMALL)
    with torch.no_grad():  # a trained dust bin and non-trivial LayerScale, as in a released file
        m.aggregator.dust_bin.fill_(0.7)
        for block in m.backbone.model.blocks:
            block.ls1.gamma.uniform_(0.5, 1.5)
    return m


def _reference_log_plan(scores: np.ndarray, z: float, iterations: int = 3) -> np.ndarray:
    """MODELS_2.md §1.3 step by step in float64, one image at a time, with explicit loops."""
    m, n = scores.shape
    big = np.vstack([scores, np.full((1, n), z)]).astype(np.float64)
    log_a = np.full(m + 1, -math.log(n + m))
    log_a[m] = math.log(n - m) - math.log(n + m)
    log_b = np.full(n, -math.log(n + m))
    u, v = np.zeros(m + 1), np.zeros(n)

    def lse(x: np.ndarray) -> float:
        top = x.max()
        return top + math.log(np.exp(x - top).sum())

    for _ in range(iterations):
        u = np.array([log_a[i] - lse(big[i] + v) for i in range(m + 1)])
        v = np.array([log_b[j] - lse(big[:, j] + u) for j in range(n)])
    return big + u[:, None] + v[None, :] + math.log(n + m)


def test_full_model_state_dict_equals_official_manifest() -> None:
    with torch.device("meta"):
        m = build_salad()
    assert state_manifest(m) == manifest("salad", prefix="")
    assert sum(v.numel() for v in m.state_dict().values()) == 87_991_489  # MODELS_2.md §1.8


def test_default_preset_matches_registry_shapes() -> None:
    spec = get_preset("salad")
    with torch.device("meta"):
        g, loc = build_salad()(torch.empty(2, 3, *spec.input_size))
    assert g.shape == (2, spec.global_dim) == (2, 256 + 128 * 64)
    assert loc.shape == (2, *spec.local_shape) == (2, 23, 23, 768)


@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_log_sinkhorn_matches_float64_reference(scale: float) -> None:
    # scale 40: exp(scores) overflows float32, the log domain must not.
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 8, 30, generator=gen) * scale
    z = torch.tensor(0.37)
    got = log_optimal_transport(scores, z)
    assert got.shape == (2, 9, 30) and torch.isfinite(got).all()
    for b in range(2):
        ref = _reference_log_plan(scores[b].double().numpy(), 0.37)
        np.testing.assert_allclose(got[b].numpy(), ref, atol=1e-5 * max(1.0, scale), rtol=1e-5)
    # After the last v update every patch's column sums to 1 (dust bin included).
    np.testing.assert_allclose(got.exp().sum(1).numpy(), 1.0, atol=1e-5)


def test_sinkhorn_runs_exactly_three_iterations() -> None:
    scores = torch.randn(1, 4, 12, generator=torch.Generator().manual_seed(1)) * 3
    got = log_optimal_transport(scores, torch.tensor(1.0))[0].numpy()
    np.testing.assert_allclose(got, _reference_log_plan(scores[0].double().numpy(), 1.0, 3), atol=1e-5)
    assert np.abs(got - _reference_log_plan(scores[0].double().numpy(), 1.0, 4)).max() > 1e-4


def test_too_few_patches_for_the_clusters_is_a_clear_error(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model(torch.randn(1, 3, 42, 42))  # 9 patches, 8 clusters: runs
        with pytest.raises(InputError, match="more patches than clusters"):
            model(torch.randn(1, 3, 28, 28))  # 4 patches


def test_aggregation_is_a_plain_weighted_sum_flattened_channel_major(model: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 56, 70)
    agg = model.aggregator
    with torch.no_grad():
        g, loc = model(x)
        cls, patches, (h, w) = model.backbone.model.forward_tokens(x)
        fmap = patches.transpose(1, 2).reshape(2, 64, h, w)
        feats = agg.cluster_features(fmap).flatten(2).double().numpy()  # (B, l, n)
        scores = agg.score(fmap).flatten(2)
        tau = F.normalize(agg.token_features(cls), dim=-1).double().numpy()
    m, c_dim = 8, 16
    for b in range(2):
        plan = np.exp(_reference_log_plan(scores[b].double().numpy(), 0.7))[:m]
        block = np.zeros(c_dim * m)
        for k in range(m):
            col = feats[b] @ plan[k]
            block[np.arange(c_dim) * m + k] = col / np.linalg.norm(col)  # position c*m + k
        ref = np.concatenate([tau[b], block])
        np.testing.assert_allclose(g[b].numpy(), ref / np.linalg.norm(ref), atol=1e-5)
    # Consequence of the layout: token part and every cluster column have norm 1/sqrt(m + 1).
    expected = 1 / math.sqrt(m + 1)
    np.testing.assert_allclose(np.linalg.norm(g[:, :32].numpy(), axis=1), expected, atol=1e-6)
    cols = g[:, 32:].reshape(2, c_dim, m).numpy()
    np.testing.assert_allclose(np.linalg.norm(cols, axis=1), expected, atol=1e-6)
    torch.testing.assert_close(loc, F.normalize(patches.reshape(2, h, w, 64), dim=-1))


def test_score_bias_has_no_effect_and_dropout_is_off(model: torch.nn.Module) -> None:
    # Sinkhorn absorbs a per-cluster constant in its first u update (MODELS_2.md §1.3).
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        before = model(x)[0]
        model.aggregator.score[3].bias.add_(0.1)
        after = model(x)[0]
        model.aggregator.score[3].bias.sub_(0.1)
        again = model(x)[0]
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    torch.testing.assert_close(again, before, atol=0, rtol=0)  # eval: no dropout noise


def test_batch_of_two_equals_each_alone(model: torch.nn.Module) -> None:
    assert_batch_equals_each_alone(model, hw=(56, 56))


def test_onnx_export_matches_torch(model: torch.nn.Module) -> None:
    assert_onnx_matches_torch(model, hw=(70, 84))


def test_load_model_torch_and_onnxruntime_agree(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))
    out = backends_agree("salad", dict(SMALL, input_size=(98, 126)), random_frames())
    assert out["torch"].global_.shape == (3, 32 + 16 * 8) and out["torch"].local.shape == (3, 7, 9, 64)


def test_preprocessing_is_pil_bilinear_on_uint8() -> None:
    from PIL import Image

    frame = random_frames(1)[0]
    got = preprocess_images([frame], "pil-bilinear", (98, 126))[0]
    resized = np.asarray(Image.fromarray(frame).resize((126, 98), Image.Resampling.BILINEAR))
    ref = (torch.from_numpy(resized.astype(np.float32) / 255).permute(2, 0, 1)
           - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    other = preprocess_images([frame], "imagenet-bilinear", (98, 126))[0]
    assert (other - got).abs().max() > 0.05  # the project's default recipe would not match SALAD's


def test_official_file_loads_strictly_and_reproduces_outputs(model, tmp_path) -> None:
    path = tmp_path / "dino_salad.ckpt"
    torch.save(model.state_dict(), path)  # the release is a plain state dict despite .ckpt
    loaded = load_model("salad", str(path), **SMALL, input_size=(98, 98))
    x = torch.randn(1, 3, 98, 98)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x)[0], model(x)[0])
    assert loaded.model_id.startswith("salad@") and not loaded.model_id.endswith("random")


def test_boq_file_given_to_salad_names_boq(tmp_path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "dinov2_12288.pth"
    torch.save(build_boq(**BOQ_SMALL).state_dict(), path)
    with pytest.raises(ModelLoadError, match="looks like preset: boq"):
        load_model("salad", str(path), **SMALL)
