"""BoQ (Ali-bey et al., CVPR 2024), DINOv2 variant: ViT-B/14 patch tokens + Bag-of-Queries aggregation.

Written from ``MODELS_2.md`` §3; state-dict names equal the released ``dinov2_12288.pth``
(``backbone.dino.*``, ``aggregator.*``), so it loads with ``strict=True``.

Forward at 322x322: the ViT runs all 12 blocks but **not** its final LayerNorm (the file stores it; the
official forward never applies it) and CLS is dropped. A 3x3 conv (768 -> 384, zero padding) mixes
neighbouring patches, then LayerNorm. Two blocks follow in sequence; each runs a post-norm ReLU
transformer encoder layer on the tokens, lets its 64 learned queries attend to themselves (residual,
LayerNorm) and then cross-attend to the encoded tokens (no residual, LayerNorm). The next block gets the
encoded tokens, not the query outputs. The two (64, 384) outputs are stacked (128, 384), a linear layer
maps the 128 rows to 32 per channel, and the (384, 32) result is flattened channel-major (c*32 + r) and
L2-normalised: 12288-d. All attention uses 6 heads (the current official code; the count is invisible in
the checkpoint, and 8 heads would change outputs by ~5e-3).

Local features (BoQ has no local head): the ViT's patch tokens after the stored final LayerNorm
(the standard DINOv2 output features), (N, 23, 23, 768) at 322x322, L2-normalised per location.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.core.errors import ConfigError
from vpr_ros.models.dinov2 import DinoVisionTransformer
from vpr_ros.models.official import build_official, load_official
from vpr_ros.models.salad import local_features, patch_map, vit_config

__all__ = ["BoQ", "BoQConfig", "BoQAggregator", "PackedAttention", "build_boq", "load_weights"]


class PackedAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter names and function (batch first)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        if not self.in_proj_weight.is_meta:
            nn.init.xavier_uniform_(self.in_proj_weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
        """query (B, Lq, D), key_value (B, Lk, D) -> (B, Lq, D)."""
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._heads(F.linear(query, w_q, b_q))
        k = self._heads(F.linear(key_value, w_k, b_k))
        v = self._heads(F.linear(key_value, w_v, b_v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.out_proj(out.reshape(query.shape[0], query.shape[1], -1))


class EncoderLayer(nn.Module):
    """Equal to ``nn.TransformerEncoderLayer(d, heads, ff, dropout=0, batch_first=True)`` in eval:
    post-norm, ReLU, LayerNorm eps 1e-5."""

    def __init__(self, dim: int, num_heads: int, ff: int) -> None:
        super().__init__()
        self.self_attn = PackedAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ff)
        self.linear2 = nn.Linear(ff, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, x))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class BoQBlock(nn.Module):
    """``forward(x)`` -> (encoded x (B, n, D), query output (B, Q, D))."""

    def __init__(self, dim: int, num_queries: int, num_heads: int, ff: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.encoder = EncoderLayer(dim, num_heads, ff)
        self.self_attn = PackedAttention(dim, num_heads)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = PackedAttention(dim, num_heads)
        self.norm_out = nn.LayerNorm(dim)
        if not self.queries.is_meta:
            nn.init.normal_(self.queries, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(x)
        # The queries do not depend on the image; they are recomputed to keep one code path. A copy, not
        # an expand view: a view of a parameter made under inference_mode breaks torch's FLOP counter.
        q = self.queries.repeat(x.shape[0], 1, 1)
        q = self.norm_q(q + self.self_attn(q, q))
        return x, self.norm_out(self.cross_attn(q, x))


class BoQAggregator(nn.Module):
    """``forward(fmap)``: (B, C, h, w) -> (B, proj_channels * row_dim), unit L2, channel-major."""

    def __init__(self, in_channels: int, proj_channels: int, num_queries: int, num_layers: int,
                 row_dim: int, num_heads: int, ff: int) -> None:
        super().__init__()
        self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        self.boqs = nn.ModuleList(BoQBlock(proj_channels, num_queries, num_heads, ff) for _ in range(num_layers))
        self.fc = nn.Linear(num_layers * num_queries, row_dim)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = self.norm_input(self.proj_c(fmap).flatten(2).transpose(1, 2))
        outs = []
        for block in self.boqs:
            x, out = block(x)
            outs.append(out)
        rows = self.fc(torch.cat(outs, dim=1).transpose(1, 2))  # (B, proj_channels, row_dim)
        return F.normalize(rows.flatten(1), p=2.0, dim=-1)


@dataclasses.dataclass(frozen=True)
class BoQConfig:
    """BoQ-DINOv2 as released (12288-d); small values are for random-init tests."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    pos_grid: int = 37
    proj_channels: int = 384
    num_queries: int = 64
    num_layers: int = 2
    row_dim: int = 32
    #: Heads of every BoQ attention: proj_channels / 64 officially.
    boq_heads: int = 6


class _StoredLayerNorm(nn.LayerNorm):
    """The ViT's final LayerNorm as BoQ keeps it: in the checkpoint, never applied in ``forward``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def apply_norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class _HubBackbone(nn.Module):
    """Holds the ViT as ``dino``, the name BoQ's backbone wrapper gives the torch.hub model."""

    def __init__(self, vit: DinoVisionTransformer) -> None:
        super().__init__()
        self.dino = vit


class BoQ(nn.Module):
    """``forward(x)``: (N, 3, H, W), sides multiples of 14 -> (global (N, 12288), local (N, H/14, W/14, 768))."""

    def __init__(self, cfg: BoQConfig = BoQConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        vit = DinoVisionTransformer(vit_config(cfg))
        vit.norm = _StoredLayerNorm(cfg.embed_dim, eps=1e-6)  # same slot, so state_dict order is kept
        self.backbone = _HubBackbone(vit)
        self.aggregator = BoQAggregator(cfg.embed_dim, cfg.proj_channels, cfg.num_queries, cfg.num_layers,
                                        cfg.row_dim, cfg.boq_heads, 4 * cfg.proj_channels)

    @property
    def global_dim(self) -> int:
        """D of the global descriptor: 384 * 32 = 12288 at full size."""
        return self.cfg.proj_channels * self.cfg.row_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vit = self.backbone.dino
        _, patches, hw = vit.forward_tokens(x)  # CLS dropped, no final norm
        local = local_features(vit.norm.apply_norm(patches), hw)
        return self.aggregator(patch_map(patches, hw)), local


def build_boq(pretrained: bool = False, **overrides: object) -> BoQ:
    """BoQ-DINOv2 (12288-d). ``pretrained=True`` loads the cached official ``dinov2_12288.pth``.

    Overrides (small random-init test models): embed_dim, depth, num_heads, mlp_ratio, pos_grid,
    proj_channels, num_queries, num_layers, row_dim, boq_heads.
    """
    return build_official("BoQ", BoQ, BoQConfig, "boq-dinov2", pretrained, overrides)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load the official BoQ-DINOv2 checkpoint strictly (raises ModelLoadError naming the preset a wrong file fits)."""
    load_official(module, BoQ, path)
