"""SelaVPR++ (Lu et al., T-PAMI 2025): a frozen DINOv2 with MultiConv side streams, GeM heads, a 512-bit hash.

Written from the description in ``shared/reference/MODELS_3.md`` §1 (no official code copied). State-dict
names equal the released ``SelaVPRplusplus_{base,large}[_rerank].pth`` (without ``module.``), so the
files load with ``strict=True``.

Forward (eval, BatchNorm on running statistics):

* The ViT blocks run unchanged on the tokens x. A side stream y rides beside them: y starts as the input of
  block ``depth - num_adapters`` (the embedded tokens for ViT-B, 12 adapters; block 7's output for ViT-L,
  16 adapters) and after each later block i, y <- y + A_k(y + x_{i+1}), with A_k a MultiConv adapter
  (CricaVPR's, BatchNorm eps 1e-3: the CLS row comes out as twice its bottleneck). The ViT's final
  LayerNorm is applied to y; the ViT's own last x is discarded.
* Float head on the patch tokens of N(y): ``linear1`` per token, L2 per location, GeM with the learned p
  (clamp 1e-6), ``linear2`` (D -> 2048 for ViT-B, 4096 for ViT-L), L2.
* ``-rerank`` files add a second side stream z (``adapters_hashing``, same start) and the same kind of
  head (``linear3``, GeM with its own p, ``linear4`` -> 512, L2): the hash is the sign of that vector
  (``hash_code``). The frozen blocks run once for both streams.

The adapters and heads reshape the patches to a square grid, so only square inputs are accepted (the
official code scrambles a non-square grid silently or fails); 322x322 is the released setting.

Local features for MNN verification (``local_tokens``): by default the frozen ViT's patch tokens after
block ``round(2 * depth / 3) - 1`` (block 7 of ViT-B, 15 of ViT-L: plain DINOv2 mid-depth features, which
re-ranked far better than final-layer tokens on real DINOv2 weights), 23x23xD at 322x322, L2-normalised
per location; "side" takes the float side stream's final patch tokens instead (docs/models.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.models.cricavpr import MulConvAdapter
from vpr_ros.models.dinov2 import DinoVisionTransformer, VitConfig
from vpr_ros.models.hash_code import pack_bits
from vpr_ros.models.official import build_official, load_official
from vpr_ros.models.salad import local_features
from vpr_ros.models.selavpr import make_aggregation
from vpr_ros.models.vit_tokens import embed_tokens

__all__ = ["SelaPPConfig", "SideStreamViT", "SelaVPRpp", "gem_head", "local_block", "LOCAL_TOKENS",
           "build_selavprpp", "build_selavprpp_rerank", "build_selavprpp_base", "build_selavprpp_base_rerank",
           "load_weights"]

_NAME = "SelaVPR++"
#: Where the local features come from: the frozen ViT at two thirds of its depth, or the float side stream.
LOCAL_TOKENS = ("frozen", "side")


def local_block(depth: int) -> int:
    """Index of the block whose output gives the "frozen" local features: two thirds of the depth
    (7 of 12, 15 of 24), the depth that re-ranked best on real DINOv2-S weights (docs/models.md)."""
    return max(0, round(2 * depth / 3) - 1)


@dataclasses.dataclass(frozen=True)
class SelaPPConfig:
    """SelaVPR++ ViT-L/14 as released; ``VIT_B`` below holds the ViT-B/14 values. Small values are for
    random-init tests (the structure stays the same)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    pos_grid: int = 37
    #: Side-stream adapters, one after each of the last ``num_adapters`` blocks.
    num_adapters: int = 16
    #: Adapter bottleneck C; the conv branches are C/2 | C/16 -> C/4 | C/16 -> C/4 (official widths).
    adapter_hidden: int = 512
    #: Float descriptor dimension (``linear2``'s output).
    output_dim: int = 4096
    #: The second (hash) side stream and head of the ``-rerank`` files.
    hashing: bool = False
    hash_dim: int = 512
    #: Local features for MNN: "frozen" (the ViT's patch tokens after block ``local_block(depth)``) or
    #: "side" (the float side stream's final-LayerNorm patch tokens).
    local_tokens: str = "frozen"


VIT_B = dict(embed_dim=768, depth=12, num_heads=12, num_adapters=12, adapter_hidden=384, output_dim=2048)


def _adapter(dim: int, hidden: int) -> MulConvAdapter:
    q = hidden // 16
    return MulConvAdapter(dim, hidden, hidden // 2, q, hidden // 4, q, hidden // 4)


class SideStreamViT(DinoVisionTransformer):
    """DINOv2 ViT (no registers, offset 0.1, no antialias) plus ``adapters`` [and ``adapters_hashing``]."""

    def __init__(self, cfg: SelaPPConfig) -> None:
        if not 1 <= cfg.num_adapters <= cfg.depth:
            raise ValueError(f"num_adapters must be in 1..depth={cfg.depth}, got {cfg.num_adapters}")
        super().__init__(VitConfig(embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                                   mlp_ratio=cfg.mlp_ratio, pos_grid=cfg.pos_grid, interpolate_offset=0.1,
                                   interpolate_antialias=False))
        # Registered after ``norm``: the released files list the adapters last in the backbone.
        self.adapters = nn.ModuleList(_adapter(cfg.embed_dim, cfg.adapter_hidden) for _ in range(cfg.num_adapters))
        self.adapters_hashing = (nn.ModuleList(_adapter(cfg.embed_dim, cfg.adapter_hidden)
                                               for _ in range(cfg.num_adapters)) if cfg.hashing else None)

    def side_streams(self, x: torch.Tensor, hashing: bool,
                     keep: int = -1) -> tuple[list[torch.Tensor], tuple[int, int], torch.Tensor | None]:
        """Final-LayerNorm'd side streams [y] or [y, z], each (N, 1 + s*s, D) in the input dtype, (s, s), and
        the frozen tokens (N, 1 + s*s, D) after block ``keep`` (None when ``keep`` < 0).

        Raises:
            InputError: a non-square input or sides that are not multiples of 14.
        """
        tokens, (h, w), in_dtype = embed_tokens(self, x, _NAME)
        if h != w:
            raise InputError(
                f"{_NAME} takes square inputs only, got {int(x.shape[-2])}x{int(x.shape[-1])} px ({h}x{w} "
                "patches): its adapters and heads reshape the patches to a square grid; set model.input_size "
                "to a square (322x322, the released setting) and model.keep_aspect to false")
        streams = [self.adapters] + ([self.adapters_hashing] if hashing and self.adapters_hashing is not None else [])
        for adapters in streams:
            for adapter in adapters:
                adapter.grid_hw = (h, w)
        first = len(self.blocks) - len(self.adapters)
        ys = [tokens] * len(streams) if first == 0 else []
        kept = None
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i == keep:
                kept = tokens.to(in_dtype)
            if i == first - 1:
                ys = [tokens] * len(streams)
            elif i >= first:
                ys = [y + adapters[i - first](y + tokens) for y, adapters in zip(ys, streams)]
        return [self.norm(y).to(in_dtype) for y in ys], (h, w), kept


def gem_head(patches: torch.Tensor, side: int, proj: nn.Linear, aggregation: nn.Sequential,
             out: nn.Linear) -> torch.Tensor:
    """(N, side*side, D) patch tokens -> (N, out) unit L2: per-token ``proj``, L2 per location, GeM with the
    learned p (clamp 1e-6), ``out``, L2 (MODELS_3.md §1.5; the float and the hash heads alike)."""
    fmap = proj(patches).reshape(patches.shape[0], side, side, -1).permute(0, 3, 1, 2)
    return F.normalize(out(aggregation(fmap)), p=2.0, dim=-1)


class SelaVPRpp(nn.Module):
    """``forward(x)``: (N, 3, s*14, s*14) -> (global (N, output_dim) unit L2, local (N, s, s, D) L2 per location).

    Two-branch modules (``cfg.hashing``) also offer ``hash(x)`` -> (z (N, 512) unit float32 before the sign,
    packed bits (N, 64) uint8, MSB first, 1 where z >= 0) and ``forward_with_hash(x)`` -> (global, local, z).
    """

    def __init__(self, cfg: SelaPPConfig = SelaPPConfig()) -> None:
        super().__init__()
        if cfg.local_tokens not in LOCAL_TOKENS:
            raise ConfigError(f"local_tokens={cfg.local_tokens!r}; choose one of {', '.join(LOCAL_TOKENS)}")
        self.cfg = cfg
        d = cfg.embed_dim
        self._keep = local_block(cfg.depth) if cfg.local_tokens == "frozen" else -1
        self.backbone = SideStreamViT(cfg)
        self.aggregation = make_aggregation()
        self.linear1 = nn.Linear(d, d)
        self.linear2 = nn.Linear(d, cfg.output_dim)
        if cfg.hashing:
            self.aggregation_hashing = make_aggregation()
            self.linear3 = nn.Linear(d, d)
            self.linear4 = nn.Linear(d, cfg.hash_dim)

    @property
    def global_dim(self) -> int:
        """D of the float descriptor (4096 for ViT-L, 2048 for ViT-B)."""
        return self.cfg.output_dim

    @property
    def hash_dim(self) -> int:
        """Bits of the hash (512), 0 for the single-branch models."""
        return self.cfg.hash_dim if self.cfg.hashing else 0

    def _float_head(self, y: torch.Tensor, side: int,
                    kept: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        patches = y[:, 1:]
        g = gem_head(patches, side, self.linear1, self.aggregation, self.linear2)
        return g, local_features(patches if kept is None else kept[:, 1:], (side, side))

    def _hash_head(self, z: torch.Tensor, side: int) -> torch.Tensor:
        return gem_head(z[:, 1:], side, self.linear3, self.aggregation_hashing, self.linear4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (y,), (side, _), kept = self.backbone.side_streams(x, hashing=False, keep=self._keep)
        return self._float_head(y, side, kept)

    def _require_hashing(self) -> None:
        if not self.cfg.hashing:
            raise AttributeError(f"this {_NAME} model has no hash branch; use a -rerank preset "
                                 "(selavprpp-rerank, selavprpp-base-rerank)")

    def forward_with_hash(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(global, local, z) from one pass of the frozen ViT; z (N, hash_dim) unit L2 before the sign."""
        self._require_hashing()
        (y, z), (side, _), kept = self.backbone.side_streams(x, hashing=True, keep=self._keep)
        g, local = self._float_head(y, side, kept)
        return g, local, self._hash_head(z, side)

    def hash(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (N, 512) float32 unit L2, packed (N, 64) uint8: bit k = z[k] >= 0, MSB first)."""
        self._require_hashing()
        (_, z), (side, _), _ = self.backbone.side_streams(x, hashing=True)
        code = self._hash_head(z, side).float()
        return code, pack_bits(code)


def _build(weights: str, pretrained: bool, overrides: dict[str, object], **preset: object) -> SelaVPRpp:
    return build_official(_NAME, SelaVPRpp, SelaPPConfig, weights, pretrained, {**preset, **overrides})


def build_selavprpp(pretrained: bool = False, **overrides: object) -> SelaVPRpp:
    """SelaVPR++ ViT-L/14, 4096-d (``SelaVPRplusplus_large.pth``).

    Overrides (small random-init test models): the fields of :class:`SelaPPConfig`.
    """
    return _build("selavprpp", pretrained, overrides)


def build_selavprpp_rerank(pretrained: bool = False, **overrides: object) -> SelaVPRpp:
    """SelaVPR++ ViT-L/14 with the 512-bit hash branch (``SelaVPRplusplus_large_rerank.pth``)."""
    return _build("selavprpp-rerank", pretrained, overrides, hashing=True)


def build_selavprpp_base(pretrained: bool = False, **overrides: object) -> SelaVPRpp:
    """SelaVPR++ ViT-B/14, 2048-d (``SelaVPRplusplus_base.pth``)."""
    return _build("selavprpp-base", pretrained, overrides, **VIT_B)


def build_selavprpp_base_rerank(pretrained: bool = False, **overrides: object) -> SelaVPRpp:
    """SelaVPR++ ViT-B/14 with the 512-bit hash branch (``SelaVPRplusplus_base_rerank.pth``)."""
    return _build("selavprpp-base-rerank", pretrained, overrides, hashing=True, **VIT_B)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a released SelaVPR++ file (training checkpoint, ``module.`` keys) strictly; ModelLoadError otherwise."""
    load_official(module, SelaVPRpp, path)
