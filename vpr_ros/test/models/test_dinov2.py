"""DINOv2 backbone: position-embedding interpolation, caching, registers, block maths, sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vpr_ros.models.dinov2 import VIT_SIZES, Block, DinoVisionTransformer, VitConfig, interpolate_pos_embed

SMALL = VitConfig(embed_dim=32, depth=2, num_heads=2)


def _cubic(t: float, a: float = -0.75) -> float:
    t = abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def _bicubic_reference(grid: np.ndarray, out: int, scale: float) -> np.ndarray:
    """Independent bicubic resize (A=-0.75, half-pixel, edge clamp) of a (G, G, D) grid, 1/scale sampling."""
    g = grid.shape[0]
    weights = np.zeros((out, g))
    for dst in range(out):
        src = (dst + 0.5) / scale - 0.5
        base = math.floor(src)
        for tap in range(base - 1, base + 3):
            weights[dst, min(max(tap, 0), g - 1)] += _cubic(src - tap)
    return np.einsum("ag,bh,ghd->abd", weights, weights, grid)


def test_pos_embed_interpolation_matches_scale_factor_semantics() -> None:
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((37, 37, 8))
    patch = torch.from_numpy(grid.reshape(1, 37 * 37, 8)).float()
    ours = interpolate_pos_embed(patch, (16, 16), offset=0.1, antialias=False).reshape(16, 16, 8).numpy()
    ref = _bicubic_reference(grid, 16, 16.1 / 37)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    # size=(16, 16) samples with 37/16 instead of 37/16.1: visibly different, so the offset matters.
    naive = interpolate_pos_embed(patch, (16, 16), offset=0.0, antialias=False).reshape(16, 16, 8).numpy()
    assert np.abs(naive - ours).max() > 1e-2


def test_native_grid_returns_stored_pos_embed_and_cache_tracks_weights() -> None:
    torch.manual_seed(0)
    vit = DinoVisionTransformer(SMALL).eval()
    assert vit.pos_embed_for((37, 37)) is vit.pos_embed
    with torch.no_grad():
        first = vit.pos_embed_for((16, 16))
        assert vit.pos_embed_for((16, 16)) is first  # cached
        assert first.shape == (1, 257, 32)
        state = vit.state_dict()
        state["pos_embed"] = torch.randn_like(state["pos_embed"])
        vit.load_state_dict(state)
        second = vit.pos_embed_for((16, 16))
    assert not torch.equal(first, second)  # new weights invalidate the cache
    expected = torch.cat([state["pos_embed"][:, :1],
                          interpolate_pos_embed(state["pos_embed"][:, 1:], (16, 16), 0.1, False)], dim=1)
    torch.testing.assert_close(second, expected)


def test_registers_take_part_in_attention_but_are_not_returned() -> None:
    torch.manual_seed(0)
    vit = DinoVisionTransformer(VitConfig(embed_dim=32, depth=2, num_heads=2, num_register_tokens=4)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        cls, patches, hw = vit.forward_tokens(x)
        assert cls.shape == (2, 32) and patches.shape == (2, 256, 32) and hw == (16, 16)
        vit.register_tokens.add_(1.0)
        _, patches2, _ = vit.forward_tokens(x)
    assert not torch.allclose(patches, patches2)


def test_non_multiple_of_patch_is_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of 14"):
        DinoVisionTransformer(SMALL).forward_tokens(torch.zeros(1, 3, 220, 224))


def test_block_is_prenorm_layerscale_attention_and_mlp() -> None:
    torch.manual_seed(0)
    block = Block(32, 2, 4.0).eval()
    for p in (block.ls1.gamma, block.ls2.gamma):
        p.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y = block.norm1(x)
        q, k, v = F.linear(y, block.attn.qkv.weight, block.attn.qkv.bias).reshape(2, 5, 3, 2, 16).unbind(2)
        att = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / 4.0, dim=-1)
        a = block.attn.proj(torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(2, 5, 32))
        x1 = x + block.ls1.gamma * a
        m = block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x1))))
        expected = x1 + block.ls2.gamma * m
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size, params", [("vits14", 22_056_576), ("vitb14", 86_580_480), ("vitl14", 304_368_640)])
def test_vit_sizes_have_the_official_parameter_counts(size: str, params: int) -> None:
    with torch.device("meta"):
        vit = DinoVisionTransformer(VIT_SIZES[size])
    assert sum(p.numel() for p in vit.parameters()) == params
