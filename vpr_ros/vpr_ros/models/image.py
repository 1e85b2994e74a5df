"""ImAge (Lu et al., NeurIPS 2025): eight learned tokens inserted into a DINOv2 ViT-B/14 with 4 registers.

Written from ``shared/reference/MODELS_3.md`` §2 (no official code copied). State-dict names equal the
released ``ImAge_Merged.pth`` / ``ImAge_GSV.pth`` (without ``module.``): ``learnable_aggregation_tokens``
first, then ``backbone.*``; the files load with ``strict=True``.

Forward: the prepared tokens [CLS, R1..R4, patches] (position-embedding interpolation offset 0.1, no
antialias: the vendored setting the blocks were fine-tuned with, not the hub register models' one) run
through blocks 0..7; the 8 learned tokens are then prepended (the same for every image) and blocks 8..11
run on the whole sequence; the final LayerNorm is applied; the first 8 tokens are flattened token-major
(position t*768 + c) and L2-normalised: a 6144-d descriptor. No aggregator, no per-token norm. Any H and W
that are multiples of 14 work.

Local features for MNN verification (``local_tokens``): by default the patch tokens that enter block 8,
before the learned tokens join (23x23x768 at 322x322, L2-normalised per location): blocks 0-7 are frozen,
so these are plain DINOv2 mid-depth features, which re-ranked far better than final-layer tokens on real
DINOv2 weights (docs/models.md); "final" takes the patch tokens after the final LayerNorm instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.core.errors import ConfigError
from vpr_ros.models.dinov2 import DinoVisionTransformer, VitConfig
from vpr_ros.models.official import build_official, load_official
from vpr_ros.models.salad import local_features
from vpr_ros.models.vit_tokens import embed_tokens

__all__ = ["ImAgeConfig", "ImAge", "build_image", "build_image_gsv", "load_weights"]


@dataclasses.dataclass(frozen=True)
class ImAgeConfig:
    """ImAge as released (ViT-B/14 + 4 registers, 8 tokens before block 8); small values are for tests."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    pos_grid: int = 37
    num_register_tokens: int = 4
    #: Learned aggregation tokens (the descriptor is num_tokens * embed_dim).
    num_tokens: int = 8
    #: Index of the first block that sees the learned tokens.
    insert_before: int = 8
    #: Local features for MNN: "frozen" (patch tokens entering block ``insert_before``) or "final".
    local_tokens: str = "frozen"


class ImAge(nn.Module):
    """``forward(x)``: (N, 3, H, W), sides multiples of 14 -> (global (N, 8*D) unit L2, local (N, H/14, W/14, D))."""

    def __init__(self, cfg: ImAgeConfig = ImAgeConfig()) -> None:
        super().__init__()
        if not 0 <= cfg.insert_before <= cfg.depth:
            raise ValueError(f"insert_before must be in 0..depth={cfg.depth}, got {cfg.insert_before}")
        if cfg.local_tokens not in ("frozen", "final"):
            raise ConfigError(f"local_tokens={cfg.local_tokens!r}; choose one of frozen, final")
        self.cfg = cfg
        # Registered first: the released files list it before the backbone.
        self.learnable_aggregation_tokens = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.embed_dim))
        self.backbone = DinoVisionTransformer(VitConfig(
            embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
            pos_grid=cfg.pos_grid, num_register_tokens=cfg.num_register_tokens, interpolate_offset=0.1,
            interpolate_antialias=False))
        if not self.learnable_aggregation_tokens.is_meta:
            nn.init.normal_(self.learnable_aggregation_tokens, std=0.02)

    @property
    def global_dim(self) -> int:
        """D of the global descriptor: 8 x 768 = 6144 at full size."""
        return self.cfg.num_tokens * self.cfg.embed_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vit = self.backbone
        tokens, hw, in_dtype = embed_tokens(vit, x, "ImAge")
        n_tok, first_patch = self.cfg.num_tokens, 1 + self.cfg.num_register_tokens
        frozen = None
        for i, block in enumerate(vit.blocks):
            if i == self.cfg.insert_before:
                frozen = tokens[:, first_patch:]
                tokens = self._with_learned(tokens)
            tokens = block(tokens)
        if self.cfg.insert_before == len(vit.blocks):
            frozen = tokens[:, first_patch:]
            tokens = self._with_learned(tokens)
        tokens = vit.norm(tokens).to(in_dtype)
        # (N, 8, D).flatten(1): token-major, position t*D + c, as the released descriptors.
        global_ = F.normalize(tokens[:, :n_tok].flatten(1), p=2.0, dim=-1)
        if self.cfg.local_tokens == "frozen" and frozen is not None:
            return global_, local_features(frozen.to(in_dtype), hw)
        return global_, local_features(tokens[:, n_tok + first_patch:], hw)

    def _with_learned(self, tokens: torch.Tensor) -> torch.Tensor:
        learned = self.learnable_aggregation_tokens.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        return torch.cat([learned, tokens], dim=1)


def build_image(pretrained: bool = False, **overrides: object) -> ImAge:
    """ImAge trained on the unified dataset (``ImAge_Merged.pth``, the hub default).

    Overrides (small random-init test models): the fields of :class:`ImAgeConfig`.
    """
    return build_official("ImAge", ImAge, ImAgeConfig, "image", pretrained, overrides)


def build_image_gsv(pretrained: bool = False, **overrides: object) -> ImAge:
    """ImAge trained on GSV-Cities (``ImAge_GSV.pth``)."""
    return build_official("ImAge", ImAge, ImAgeConfig, "image-gsv", pretrained, overrides)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a released ImAge file (``module.`` keys, possibly a training checkpoint) strictly."""
    load_official(module, ImAge, path)
