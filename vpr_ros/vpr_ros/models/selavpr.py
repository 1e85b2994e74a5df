"""SelaVPR (Lu et al., ICLR 2024): DINOv2 ViT-L/14 with global adapters, GeM global and dense local features.

Written from the description in the paper and MODELS.md; state-dict names equal the official
checkpoint's (without ``module.``) so released files load with ``strict=True``:

* every block: serial ``adapter1`` (with skip) on the attention output, parallel ``adapter2``
  (no skip, scaled by 0.2) beside the MLP; both D -> D/2 -> D with ReLU;
* global: per-location L2, GeM with the checkpoint's learned ``p`` (``aggregation.1.p``), L2;
* local: ``LocalAdapt`` = ConvTranspose(1024->256, k3 s2 p1) -> ReLU -> ConvTranspose(256->128, k3 s2 p1)
  giving a 61x61x128 map at 224x224, L2-normalised per location.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.core.errors import ConfigError, ModelLoadError
from vpr_ros.models.dinov2 import Block, DinoVisionTransformer, VitConfig

__all__ = ["SelaVPR", "build_selavpr", "build_selavpr_reg4", "load_weights", "L2Norm", "GeM"]

#: Scale of the parallel adapter, hard-coded in the official block.
PARALLEL_ADAPTER_SCALE = 0.2


class Adapter(nn.Module):
    """Bottleneck D -> D*ratio -> D with ReLU; adds its input back when ``skip_connect``."""

    def __init__(self, dim: int, ratio: float = 0.5, skip_connect: bool = True) -> None:
        super().__init__()
        self.skip_connect = skip_connect
        self.D_fc1 = nn.Linear(dim, int(dim * ratio))
        self.D_fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.D_fc2(F.relu(self.D_fc1(x)))
        return x + out if self.skip_connect else out


class SelaBlock(Block):
    """DINOv2 block with SelaVPR's serial (adapter1) and parallel (adapter2) adapters."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__(dim, num_heads, mlp_ratio)
        self.adapter1 = Adapter(dim, skip_connect=True)
        self.adapter2 = Adapter(dim, skip_connect=False)

    def attn_branch(self, y: torch.Tensor) -> torch.Tensor:
        return self.adapter1(self.attn(y))

    def ffn_branch(self, y: torch.Tensor) -> torch.Tensor:
        return self.mlp(y) + PARALLEL_ADAPTER_SCALE * self.adapter2(y)


class L2Norm(nn.Module):
    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=self.dim)


class GeM(nn.Module):
    """Generalised mean pooling over H, W with a learned power ``p`` (N, C, H, W) -> (N, C, 1, 1)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The clamp follows the per-location L2 norm, so negative channels contribute eps (as official).
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1), keepdim=True).pow(1.0 / self.p)


def make_aggregation() -> nn.Sequential:
    """L2Norm(dim=1) -> GeM -> Flatten; index 1 holds ``p`` (key ``aggregation.1.p``)."""
    return nn.Sequential(L2Norm(dim=1), GeM(), nn.Flatten())


class LocalAdapt(nn.Module):
    """Two stride-2 transposed convs: (N, D, h, w) -> (N, out, 4h-3, 4w-3)."""

    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = 128) -> None:
        super().__init__()
        self.upconv1 = nn.ConvTranspose2d(in_dim, hidden, kernel_size=3, stride=2, padding=1)
        self.upconv2 = nn.ConvTranspose2d(hidden, out_dim, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upconv2(F.relu(self.upconv1(x)))


@dataclasses.dataclass(frozen=True)
class SelaConfig:
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 0
    pos_grid: int = 37
    local_hidden: int = 256
    local_dim: int = 128


class SelaVPR(nn.Module):
    """``forward(x)``: (N, 3, H, W) -> (global (N, D) L2-normalised, local (N, 4h-3, 4w-3, 128) L2 per location).

    At the official 224x224 input: global (N, 1024), local (N, 61, 61, 128).
    """

    def __init__(self, cfg: SelaConfig = SelaConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        vit = VitConfig(embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                        mlp_ratio=cfg.mlp_ratio, num_register_tokens=cfg.num_register_tokens,
                        pos_grid=cfg.pos_grid, interpolate_offset=0.1, interpolate_antialias=False)
        self.backbone = DinoVisionTransformer(
            vit, lambda i, c: SelaBlock(c.embed_dim, c.num_heads, c.mlp_ratio))
        self.aggregation = make_aggregation()
        self.LocalAdapt = LocalAdapt(cfg.embed_dim, cfg.local_hidden, cfg.local_dim)

    @property
    def global_dim(self) -> int:
        """D of the global descriptor (1024 at full size)."""
        return self.cfg.embed_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, patches, hw = self.backbone.forward_tokens(x)
        return self.heads(patches, hw)

    def heads(self, patches: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Global and local heads on final patch tokens (N, h*w, D) (split out for mixed precision)."""
        h, w = hw
        fmap = patches.reshape(patches.shape[0], h, w, patches.shape[-1]).permute(0, 3, 1, 2)
        global_ = F.normalize(self.aggregation(fmap), p=2.0, dim=-1)
        local = F.normalize(self.LocalAdapt(fmap).permute(0, 2, 3, 1), p=2.0, dim=-1)
        return global_, local


def _config(overrides: dict[str, object], **preset: object) -> SelaConfig:
    allowed = {f.name for f in dataclasses.fields(SelaConfig)}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(f"unknown SelaVPR override(s) {unknown}; allowed: {sorted(allowed)}")
    return SelaConfig(**{**preset, **overrides})  # type: ignore[arg-type]


def _build(weights_name: str, pretrained: bool, overrides: dict[str, object],
           **preset: object) -> SelaVPR:
    model = SelaVPR(_config(overrides, **preset))
    if pretrained:
        from vpr_ros.models.weights import require_cached_weights

        load_weights(model, require_cached_weights(weights_name))
    return model.eval()


def build_selavpr(pretrained: bool = False, **overrides: object) -> SelaVPR:
    """SelaVPR (DINOv2 ViT-L/14). ``pretrained=True`` loads the cached official MSLS weights.

    Overrides (small random-init test models): embed_dim, depth, num_heads, mlp_ratio,
    num_register_tokens, pos_grid, local_hidden, local_dim.
    """
    return _build("selavpr-msls", pretrained, overrides)


def build_selavpr_reg4(pretrained: bool = False, **overrides: object) -> SelaVPR:
    """SelaVPR with 4 register tokens; interpolation as SelaVPR (offset 0.1, no antialias)."""
    return _build("selavpr-reg4-msls", pretrained, overrides, num_register_tokens=4)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load an official SelaVPR checkpoint (either variant, old or new key names) strictly.

    Raises:
        ModelLoadError: unreadable file or keys/shapes that do not fit (the message says which
            preset the file would fit).
    """
    if not isinstance(module, SelaVPR):
        raise ModelLoadError(f"selavpr.load_weights expects a SelaVPR module, got {type(module).__name__}")
    from vpr_ros.models.checkpoint import load_into

    load_into(module, path)
