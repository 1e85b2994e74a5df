"""MegaLoc (Berton & Masone, 2025): DINOv2 ViT-B/14 + SALAD (256-d clusters) + a 16640 -> 8448 linear layer.

Written from ``MODELS_2.md`` §2. State-dict names equal the current Hugging Face ``model.safetensors``
(``backbone.*`` without ``mask_token``, ``aggregator.agg.*``, ``aggregator.linear.*``). The older GitHub
release ``megaloc.torch`` (``backbone.model.*`` plus ``mask_token``) is mapped to these names when it is
read (``checkpoint.normalise_keys``), so both load.

Forward: sides that are not multiples of 14 are first resized to round(side / 14) * 14 (Python
rounding, halves to even) with antialiased bilinear on the normalised image, as the official model
does; then the ViT, SALAD (a unit 16640-vector), the linear layer and a final L2 normalisation.

Local features: the backbone's final-LayerNorm patch tokens, L2-normalised per location (as SALAD).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.models.dinov2 import DinoVisionTransformer
from vpr_ros.models.official import build_official, load_official
from vpr_ros.models.salad import SaladAggregator, local_features, patch_map, vit_config

__all__ = ["MegaLoc", "MegaLocConfig", "build_megaloc", "load_weights", "multiple_of_14"]


@dataclasses.dataclass(frozen=True)
class MegaLocConfig:
    """MegaLoc as released; small values are for random-init tests."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    pos_grid: int = 37
    num_clusters: int = 64
    cluster_dim: int = 256
    token_dim: int = 256
    mlp_dim: int = 512
    output_dim: int = 8448


def multiple_of_14(side: int) -> int:
    """The side MegaLoc resizes to: Python's round (halves to even), e.g. 35 -> 28, 49 -> 56, 480 -> 476."""
    return round(side / 14) * 14


class MegaLocAggregator(nn.Module):
    """``agg`` (SALAD) followed by ``linear``; names as in the checkpoint."""

    def __init__(self, cfg: MegaLocConfig) -> None:
        super().__init__()
        self.agg = SaladAggregator(cfg.embed_dim, cfg.num_clusters, cfg.cluster_dim, cfg.token_dim, cfg.mlp_dim)
        self.linear = nn.Linear(self.agg.output_dim, cfg.output_dim)

    def forward(self, fmap: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        # The linear layer sees the unit-norm SALAD vector; its output is re-normalised.
        return F.normalize(self.linear(self.agg(fmap, token)), p=2.0, dim=-1)


class MegaLoc(nn.Module):
    """``forward(x)``: (N, 3, H, W), any sides -> (global (N, 8448), local (N, H'/14, W'/14, 768)).

    H', W' are H, W rounded to multiples of 14 (see :func:`multiple_of_14`).
    """

    def __init__(self, cfg: MegaLocConfig = MegaLocConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = DinoVisionTransformer(vit_config(cfg))
        # MegaLoc's own ViT has no mask token (the training-only masking embedding), so the file has none.
        del self.backbone.mask_token
        self.aggregator = MegaLocAggregator(cfg)

    @property
    def global_dim(self) -> int:
        """D of the global descriptor (8448 at full size)."""
        return self.cfg.output_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % 14 or w % 14:
            size = (multiple_of_14(h), multiple_of_14(w))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        cls, patches, hw = self.backbone.forward_tokens(x)
        return self.aggregator(patch_map(patches, hw), cls), local_features(patches, hw)


def build_megaloc(pretrained: bool = False, **overrides: object) -> MegaLoc:
    """MegaLoc. ``pretrained=True`` loads the cached official ``model.safetensors``.

    Overrides (small random-init test models): embed_dim, depth, num_heads, mlp_ratio, pos_grid,
    num_clusters, cluster_dim, token_dim, mlp_dim, output_dim.
    """
    return build_official("MegaLoc", MegaLoc, MegaLocConfig, "megaloc", pretrained, overrides)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load an official MegaLoc file (safetensors, or the older torch file) strictly."""
    load_official(module, MegaLoc, path)
