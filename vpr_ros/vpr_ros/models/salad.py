"""SALAD (Izquierdo & Civera, CVPR 2024): DINOv2 ViT-B/14 + optimal-transport aggregation with a dust bin.

Written from the behavioural description in ``MODELS_2.md`` §1 (the official code is GPL-3.0; nothing
is copied). State-dict names equal the official ``dino_salad.ckpt`` (``backbone.model.*`` for the ViT,
``aggregator.*``), so the released file loads with ``strict=True``.

Forward at 322x322: the ViT (all 12 blocks, final LayerNorm) gives the CLS "scene token" t (768) and a
23x23 map of patch tokens. Per patch, 1x1-conv MLPs give features F (128) and cluster scores S (64);
log-domain Sinkhorn (3 iterations, dust bin) turns S into soft assignments P; each cluster sums its
patches' features weighted by P (no centroids, no residuals), is L2-normalised, and the 64x128 block is
flattened channel-major (position c*64 + k). The descriptor is L2([L2(MLP(t)) (256) | block (8192)]).

Local features (for MNN verification; SALAD has no local head): the backbone's final-LayerNorm patch
tokens, (N, 23, 23, 768) at 322x322, L2-normalised per location, as for CricaVPR.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.models.dinov2 import DinoVisionTransformer, VitConfig
from vpr_ros.models.official import build_official, load_official
from vpr_ros.models.sinkhorn import SALAD_ITERATIONS, log_optimal_transport

__all__ = ["SaladAggregator", "SaladConfig", "SALAD", "build_salad", "load_weights"]


def _mlp_1x1(cin: int, hidden: int, cout: int, dropout: float) -> nn.Sequential:
    # Indices 0 and 3 hold the weights, as in the checkpoint; dropout is a no-op in eval.
    return nn.Sequential(nn.Conv2d(cin, hidden, 1), nn.Dropout(dropout), nn.ReLU(), nn.Conv2d(hidden, cout, 1))


class SaladAggregator(nn.Module):
    """``forward(fmap, token)``: (B, C, h, w), (B, C) -> (B, token_dim + cluster_dim * num_clusters), unit L2."""

    def __init__(self, num_channels: int = 768, num_clusters: int = 64, cluster_dim: int = 128,
                 token_dim: int = 256, mlp_dim: int = 512, dropout: float = 0.3) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        self.cluster_dim = cluster_dim
        self.token_dim = token_dim
        self.dust_bin = nn.Parameter(torch.tensor(1.0))
        self.token_features = nn.Sequential(nn.Linear(num_channels, mlp_dim), nn.ReLU(),
                                            nn.Linear(mlp_dim, token_dim))
        self.cluster_features = _mlp_1x1(num_channels, mlp_dim, cluster_dim, dropout)
        self.score = _mlp_1x1(num_channels, mlp_dim, num_clusters, dropout)

    @property
    def output_dim(self) -> int:
        return self.token_dim + self.cluster_dim * self.num_clusters

    def assignments(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, m, n) transport plan of the n = h*w patches to the m clusters (dust-bin row dropped)."""
        scores = self.score(fmap).flatten(2)
        return log_optimal_transport(scores, self.dust_bin, SALAD_ITERATIONS)[:, :-1].exp()

    def forward(self, fmap: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        features = self.cluster_features(fmap).flatten(2)  # (B, l, n), patch index row*w + col
        weights = self.assignments(fmap)  # (B, m, n)
        clusters = F.normalize(torch.einsum("bln,bmn->blm", features, weights), p=2.0, dim=1)
        scene = F.normalize(self.token_features(token), p=2.0, dim=-1)
        # (B, l, m).flatten(1) puts channel c of cluster k at c*m + k: the official channel-major layout.
        return F.normalize(torch.cat([scene, clusters.flatten(1)], dim=-1), p=2.0, dim=-1)


@dataclasses.dataclass(frozen=True)
class SaladConfig:
    """ViT-B/14 + SALAD as released; small values are for random-init tests."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    pos_grid: int = 37
    num_clusters: int = 64
    cluster_dim: int = 128
    token_dim: int = 256
    mlp_dim: int = 512


class ViTShape(Protocol):
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    pos_grid: int


def vit_config(cfg: ViTShape) -> VitConfig:
    """The DINOv2 hub ``dinov2_vitb14`` interpolation (offset 0.1, no antialias) at ``cfg``'s size."""
    return VitConfig(embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                     pos_grid=cfg.pos_grid, interpolate_offset=0.1, interpolate_antialias=False)


def local_features(patches: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, C) patch tokens -> (B, h, w, C), L2-normalised per location."""
    return F.normalize(patches.reshape(patches.shape[0], hw[0], hw[1], patches.shape[-1]), p=2.0, dim=-1)


def patch_map(patches: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, C) row-major patch tokens -> (B, C, h, w)."""
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[-1], hw[0], hw[1])


class _HubBackbone(nn.Module):
    """Holds the ViT as ``model``: SALAD stored the torch.hub DINOv2 under ``backbone.model``."""

    def __init__(self, vit: DinoVisionTransformer) -> None:
        super().__init__()
        self.model = vit


class SALAD(nn.Module):
    """``forward(x)``: (N, 3, H, W), sides multiples of 14 -> (global (N, 8448), local (N, H/14, W/14, 768))."""

    def __init__(self, cfg: SaladConfig = SaladConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = _HubBackbone(DinoVisionTransformer(vit_config(cfg)))
        self.aggregator = SaladAggregator(cfg.embed_dim, cfg.num_clusters, cfg.cluster_dim, cfg.token_dim,
                                          cfg.mlp_dim)

    @property
    def global_dim(self) -> int:
        """D of the global descriptor: 256 + 128 * 64 = 8448 at full size."""
        return self.aggregator.output_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls, patches, hw = self.backbone.model.forward_tokens(x)
        return self.aggregator(patch_map(patches, hw), cls), local_features(patches, hw)


def build_salad(pretrained: bool = False, **overrides: object) -> SALAD:
    """SALAD (DINOv2 ViT-B/14). ``pretrained=True`` loads the cached official ``dino_salad.ckpt``.

    Overrides (small random-init test models): embed_dim, depth, num_heads, mlp_ratio, pos_grid,
    num_clusters, cluster_dim, token_dim, mlp_dim.
    """
    return build_official("SALAD", SALAD, SaladConfig, "salad", pretrained, overrides)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load the official SALAD checkpoint strictly (raises ModelLoadError naming the preset a wrong file fits)."""
    load_official(module, SALAD, path)
