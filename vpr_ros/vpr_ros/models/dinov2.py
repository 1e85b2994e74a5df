"""DINOv2 vision transformer (ViT-S/B/L/14), written to load the official DINOv2 state dicts unchanged.

Parameter names follow facebookresearch/dinov2 (``cls_token``, ``pos_embed``, ``register_tokens``,
``mask_token``, ``patch_embed.proj``, ``blocks.N.{norm1,attn,ls1,norm2,mlp,ls2}``, ``norm``) so that
the SelaVPR and CricaVPR checkpoints, which embed this backbone, load with ``strict=True``.

Blocks are pre-norm with LayerScale. Subclasses of :class:`Block` add adapters by overriding
:meth:`Block.attn_branch` / :meth:`Block.ffn_branch` (see ``selavpr.py`` and ``cricavpr.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VitConfig", "VIT_SIZES", "Block", "DinoVisionTransformer", "interpolate_pos_embed"]

#: Pretrained DINOv2 checkpoints store the position embedding of a 518x518 input: a 37x37 grid.
PRETRAIN_GRID = 37


@dataclasses.dataclass(frozen=True)
class VitConfig:
    """Shape of a DINOv2 ViT. Defaults are ViT-L/14 as built by SelaVPR/CricaVPR (img_size 518)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14
    #: Side of the stored position-embedding grid (518 / 14 = 37 for the official checkpoints).
    pos_grid: int = PRETRAIN_GRID
    num_register_tokens: int = 0
    #: Official interpolation settings: SelaVPR (both variants) and CricaVPR use 0.1 / False.
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False


VIT_SIZES: dict[str, VitConfig] = {
    "vits14": VitConfig(embed_dim=384, depth=12, num_heads=6),
    "vitb14": VitConfig(embed_dim=768, depth=12, num_heads=12),
    "vitl14": VitConfig(embed_dim=1024, depth=24, num_heads=16),
}


def interpolate_pos_embed(patch_pos: torch.Tensor, grid_hw: tuple[int, int], offset: float,
                          antialias: bool) -> torch.Tensor:
    """Resize a (1, G*G, D) patch position embedding to (1, h*w, D) exactly as official DINOv2 does.

    With ``offset != 0`` PyTorch is given ``scale_factor=((h+offset)/G, (w+offset)/G)``: the output is
    floor(G*scale) = h but the sampling grid uses 1/scale (e.g. 37/16.1 for a 224 input), which is what
    the checkpoints were trained with. ``size=(h, w)`` would sample with 37/16 and differ noticeably.
    """
    n, d = patch_pos.shape[1], patch_pos.shape[2]
    g = int(math.isqrt(n))
    h, w = grid_hw
    grid = patch_pos.float().reshape(1, g, g, d).permute(0, 3, 1, 2)
    if offset:
        out = F.interpolate(grid, scale_factor=((h + offset) / g, (w + offset) / g), mode="bicubic",
                            antialias=antialias)
    else:
        out = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=antialias)
    if tuple(out.shape[-2:]) != (h, w):
        raise ValueError(f"position-embedding interpolation gave {tuple(out.shape[-2:])}, expected {(h, w)}")
    return out.permute(0, 2, 3, 1).reshape(1, h * w, d).to(patch_pos.dtype)


class PatchEmbed(nn.Module):
    """(N, 3, H, W) -> (N, H/14 * W/14, D) tokens, row-major."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a packed [q | k | v] projection (DINOv2 layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn_branch(norm1 x)), then x + ls2(ffn_branch(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        # Registration order defines state_dict order; it mirrors the official checkpoints.
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def attn_branch(self, y: torch.Tensor) -> torch.Tensor:
        return self.attn(y)

    def ffn_branch(self, y: torch.Tensor) -> torch.Tensor:
        return self.mlp(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn_branch(self.norm1(x)))
        return x + self.ls2(self.ffn_branch(self.norm2(x)))


BlockFactory = Callable[[int, VitConfig], Block]


def _plain_block(index: int, cfg: VitConfig) -> Block:
    return Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT backbone returning the final-LayerNorm CLS and patch tokens.

    The interpolated position embedding is computed once per (input grid, weights version) and
    cached, since it is by far the most expensive constant of the forward pass to recompute.
    """

    def __init__(self, cfg: VitConfig, block_factory: BlockFactory = _plain_block) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid * cfg.pos_grid, d))
        self.register_tokens = (nn.Parameter(torch.zeros(1, cfg.num_register_tokens, d))
                                if cfg.num_register_tokens else None)
        # Unused at inference, but part of every official checkpoint.
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.blocks = nn.ModuleList(block_factory(i, cfg) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self._init_weights()

    def _init_weights(self) -> None:
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)

    def pos_embed_for(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        """(1, 1 + h*w, D) position embedding for an h x w patch grid (cached when not training)."""
        cfg = self.cfg
        pos = self.pos_embed
        if grid_hw == (cfg.pos_grid, cfg.pos_grid):
            return pos
        tracing = torch._C._get_tracing_state() is not None
        cacheable = (tracing or not (torch.is_grad_enabled() and pos.requires_grad)) and not pos.is_meta
        # _version changes on every in-place update (load_state_dict), so new weights invalidate it.
        key = (grid_hw, pos._version, pos.data_ptr(), pos.dtype, pos.device)
        if cacheable and key in self._pos_cache:
            return self._pos_cache[key]
        if tracing:
            # Export: keep the interpolation out of the graph (a constant there), so ONNX/TensorRT
            # never re-implement PyTorch's bicubic scale-factor semantics.
            state = torch._C._get_tracing_state()
            torch._C._set_tracing_state(None)
            try:
                with torch.no_grad():
                    out = self._interpolated(pos, grid_hw)
            finally:
                torch._C._set_tracing_state(state)
        else:
            out = self._interpolated(pos, grid_hw)
        if cacheable:
            self._pos_cache = {k: v for k, v in self._pos_cache.items() if k[1:] == key[1:]}
            out = self._pos_cache[key] = out.detach()
        return out

    def _interpolated(self, pos: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        cfg = self.cfg
        patch = interpolate_pos_embed(pos[:, 1:], grid_hw, cfg.interpolate_offset, cfg.interpolate_antialias)
        return torch.cat([pos[:, :1], patch], dim=1)

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Run the ViT.

        Args:
            x: (N, 3, H, W) normalised images; H and W multiples of 14.
        Returns:
            cls (N, D), patch tokens (N, h*w, D) row-major (both after the final LayerNorm), and (h, w).
        """
        # Python ints: the spatial size is static in exported graphs (only the batch is dynamic).
        in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
        h, w = in_h // self.patch_size, in_w // self.patch_size
        if h * self.patch_size != in_h or w * self.patch_size != in_w:
            raise ValueError(f"input {(in_h, in_w)} is not a multiple of {self.patch_size}")
        # A backbone cast to bf16 (the CPU fast path) takes and returns float32 like the fp32 one.
        in_dtype, dtype = x.dtype, self.patch_embed.proj.weight.dtype
        tokens = self.patch_embed(x if in_dtype == dtype else x.to(dtype))
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed_for((h, w))
        if self.register_tokens is not None:
            # Registers go in after the position embedding and get none (as in DINOv2).
            regs = self.register_tokens.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([tokens[:, :1], regs, tokens[:, 1:]], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        if tokens.dtype != in_dtype:
            tokens = tokens.to(in_dtype)
        return tokens[:, 0], tokens[:, 1 + self.num_register_tokens:], (h, w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> (CLS (N, D), patch tokens (N, h*w, D)), both after the final LayerNorm."""
        cls, patches, _ = self.forward_tokens(x)
        return cls, patches
