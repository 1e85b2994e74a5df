"""CricaVPR (Lu et al., CVPR 2024): DINOv2 ViT-B/14 + MulConv adapters + multi-level GeM + cross-image encoder.

Written from the paper and MODELS.md §2; state-dict names equal the official checkpoint's (without
``module.``).

Cross-image encoder and streaming. The official encoder attends across the images of one forward
batch, so a descriptor depends on its batch-mates. For a SLAM node that is a policy choice:

* ``cross_image_context=0`` (default): every image is encoded alone (a length-1 "batch"). Deterministic,
  independent of how frames are batched, and database and query descriptors are computed the same way.
* ``cross_image_context=k > 0``: image i is encoded together with the k images that went through this
  module before it (a sliding window kept in the module; ``reset_context()`` clears it). The descriptor
  equals the official batched forward of the window [i-k, ..., i], taken at position i. Each keyframe is
  encoded once, so it is both its own query and database entry (consistent by construction).
* :meth:`CricaVPR.forward_batch` reproduces the official evaluation: the whole given batch is one context.

Local features (for MNN verification; CricaVPR has none of its own): the backbone's final
LayerNorm'd patch tokens, (N, 16, 16, 768) at 224x224, L2-normalised per location.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.core.errors import ConfigError
from vpr_ros.models.dinov2 import Block, DinoVisionTransformer, VitConfig
from vpr_ros.models.official import build_official, load_official
from vpr_ros.models.selavpr import PARALLEL_ADAPTER_SCALE, make_aggregation

__all__ = ["CricaVPR", "CricaConfig", "build_cricavpr", "load_weights"]


class BasicConv2d(nn.Module):
    """Conv2d(bias) -> BatchNorm2d(eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class MulConvAdapter(nn.Module):
    """Parallel adapter: D -> C (ReLU) -> 1x1 | 1x1,3x3 | 1x1,5x5 convs on the patch grid -> D.

    The CLS row bypasses the convs and the input is then added to every row, so CLS ends up doubled
    (an official quirk the checkpoint was trained with).
    """

    def __init__(self, dim: int, hidden: int, ch1: int, ch3red: int, ch3: int, ch5red: int, ch5: int) -> None:
        super().__init__()
        if ch1 + ch3 + ch5 != hidden:
            raise ConfigError(f"MulConvAdapter branch widths {ch1}+{ch3}+{ch5} must sum to {hidden}")
        self.branch1 = BasicConv2d(hidden, ch1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(hidden, ch3red, 1), BasicConv2d(ch3red, ch3, 3))
        self.branch3 = nn.Sequential(BasicConv2d(hidden, ch5red, 1), BasicConv2d(ch5red, ch5, 5))
        self.D_fc1 = nn.Linear(dim, hidden)
        self.D_fc2 = nn.Linear(hidden, dim)
        self.grid_hw = (16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = F.relu(self.D_fc1(x))
        h, w = self.grid_hw
        grid = x0[:, 1:].reshape(x0.shape[0], h, w, x0.shape[-1]).permute(0, 3, 1, 2)
        conv = torch.cat([self.branch1(grid), self.branch2(grid), self.branch3(grid)], dim=1)
        conv = conv.flatten(2).transpose(1, 2)
        return self.D_fc2(torch.cat([x0[:, :1], conv], dim=1) + x0)


class CricaBlock(Block):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, hidden: int) -> None:
        super().__init__(dim, num_heads, mlp_ratio)
        q = hidden // 16  # 768 -> 384 hidden: branches 192, 24->96, 24->96 (official widths)
        self.adapter = MulConvAdapter(dim, hidden, hidden // 2, q, hidden // 4, q, hidden // 4)

    def ffn_branch(self, y: torch.Tensor) -> torch.Tensor:
        return self.mlp(y) + PARALLEL_ADAPTER_SCALE * self.adapter(y)


class CrossImageAttention(nn.Module):
    """Parameters named like ``nn.MultiheadAttention`` (packed in_proj, out_proj)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        if not self.in_proj_weight.is_meta:
            nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, S, D), attention over S (the images) independently for each of the B region slots."""
        b, s, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        heads = [t.reshape(b, s, self.num_heads, d // self.num_heads).transpose(1, 2) for t in (q, k, v)]
        out = F.scaled_dot_product_attention(*heads)
        return self.out_proj(out.transpose(1, 2).reshape(b, s, d))


class CrossImageEncoderLayer(nn.Module):
    """Post-norm layer equal to ``nn.TransformerEncoderLayer(d, nhead, ff, activation="gelu")`` in eval."""

    def __init__(self, dim: int, num_heads: int, ff: int) -> None:
        super().__init__()
        self.self_attn = CrossImageAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ff)
        self.linear2 = nn.Linear(ff, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class CrossImageEncoder(nn.Module):
    def __init__(self, dim: int, num_heads: int, ff: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CrossImageEncoderLayer(dim, num_heads, ff) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (R, S, D) -> (R, S, D); S images attend to each other per region slot R."""
        for layer in self.layers:
            x = layer(x)
        return x


@dataclasses.dataclass(frozen=True)
class CricaConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    pos_grid: int = 37
    adapter_hidden: int = 384
    encoder_heads: int = 16
    encoder_ff: int = 2048
    encoder_layers: int = 2
    #: 0: each image alone (default); k > 0: sliding window of the k previous images (see module doc).
    cross_image_context: int = 0


def _region_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    # 16 -> [0:8, 8:16] and [0:5, 5:11, 11:16], the official split points.
    cuts = [0] + [int(n * i / parts + 0.5) for i in range(1, parts)] + [n]
    return list(zip(cuts[:-1], cuts[1:]))


class CricaVPR(nn.Module):
    """``forward(x)``: (N, 3, 224, 224) -> (global (N, 14*D) L2-normalised, local (N, 16, 16, D) L2 per location).

    Official size: D = 768, global 10752-d.
    """

    def __init__(self, cfg: CricaConfig = CricaConfig()) -> None:
        super().__init__()
        if cfg.cross_image_context < 0:
            raise ConfigError(f"cross_image_context must be >= 0, got {cfg.cross_image_context}")
        self.cfg = cfg
        vit = VitConfig(embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                        mlp_ratio=cfg.mlp_ratio, pos_grid=cfg.pos_grid)
        self.backbone = DinoVisionTransformer(
            vit, lambda i, c: CricaBlock(c.embed_dim, c.num_heads, c.mlp_ratio, cfg.adapter_hidden))
        self.aggregation = make_aggregation()
        self.encoder = CrossImageEncoder(cfg.embed_dim, cfg.encoder_heads, cfg.encoder_ff, cfg.encoder_layers)
        self._context: torch.Tensor | None = None

    @property
    def global_dim(self) -> int:
        """D of the global descriptor: 14 regions x embed_dim (10752 at full size)."""
        return 14 * self.cfg.embed_dim

    def region_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone + multi-level GeM.

        Returns:
            tokens (N, 14, D): [CLS, 2x2 regions row-major, 3x3 regions row-major] (not normalised),
            local (N, h, w, D): final patch tokens, L2-normalised per location.
        """
        ps = self.backbone.patch_size
        for block in self.backbone.blocks:
            block.adapter.grid_hw = (x.shape[-2] // ps, x.shape[-1] // ps)
        cls, patches, (h, w) = self.backbone.forward_tokens(x)
        grid = patches.reshape(patches.shape[0], h, w, patches.shape[-1])
        fmap = grid.permute(0, 3, 1, 2)
        regions = [cls]
        for parts in (2, 3):
            for r0, r1 in _region_bounds(h, parts):
                for c0, c1 in _region_bounds(w, parts):
                    regions.append(self.aggregation(fmap[:, :, r0:r1, c0:c1]))
        return torch.stack(regions, dim=1), F.normalize(grid, p=2.0, dim=-1)

    @staticmethod
    def _flatten(encoded: torch.Tensor) -> torch.Tensor:
        return F.normalize(encoded.flatten(1), p=2.0, dim=-1)

    def encode_alone(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, 14, D) -> (N, 14*D): each image its own length-1 context."""
        n, r, d = tokens.shape
        return self._flatten(self.encoder(tokens.reshape(n * r, 1, d)).reshape(n, r * d))

    def encode_batch(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, 14, D) -> (N, 14*D): all N images attend to each other (the official eval batch)."""
        return self._flatten(self.encoder(tokens.transpose(0, 1)).transpose(0, 1))

    def forward_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Official evaluation semantics: the given batch is one cross-image context."""
        tokens, local = self.region_tokens(x)
        return self.encode_batch(tokens), local

    def reset_context(self) -> None:
        """Forget the images remembered for ``cross_image_context > 0``."""
        self._context = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, local = self.region_tokens(x)
        k = self.cfg.cross_image_context
        if k == 0:
            return self.encode_alone(tokens), local
        history = tokens.detach() if self._context is None else torch.cat([self._context, tokens.detach()])
        start = history.shape[0] - tokens.shape[0]
        out = [self.encode_batch(history[max(0, start + i - k): start + i + 1])[-1] for i in range(tokens.shape[0])]
        self._context = history[-k:]
        return torch.stack(out), local


def build_cricavpr(pretrained: bool = False, **overrides: object) -> CricaVPR:
    """CricaVPR (DINOv2 ViT-B/14). ``pretrained=True`` loads the cached official weights.

    Overrides: embed_dim, depth, num_heads, mlp_ratio, pos_grid, adapter_hidden, encoder_heads,
    encoder_ff, encoder_layers, cross_image_context.
    """
    return build_official("CricaVPR", CricaVPR, CricaConfig, "cricavpr", pretrained, overrides)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load the official CricaVPR checkpoint strictly (raises ModelLoadError on mismatch)."""
    load_official(module, CricaVPR, path)
