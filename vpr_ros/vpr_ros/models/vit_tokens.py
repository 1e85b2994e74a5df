"""The token preparation of our DINOv2 ViT, for models that run its blocks themselves (SelaVPR++, ImAge).

``DinoVisionTransformer.forward_tokens`` runs every block and the final norm in one go; SelaVPR++ carries
side streams beside the blocks and ImAge inserts tokens between them, so both need the prepared sequence
alone: patch embedding, CLS, the interpolated position embedding, then the register tokens (no position
embedding), exactly as ``forward_tokens`` builds it.
"""

from __future__ import annotations

import torch

from vpr_ros.core.errors import InputError
from vpr_ros.models.dinov2 import DinoVisionTransformer

__all__ = ["embed_tokens"]


def embed_tokens(vit: DinoVisionTransformer, x: torch.Tensor,
                 model: str = "this model") -> tuple[torch.Tensor, tuple[int, int], torch.dtype]:
    """Prepared tokens of ``x`` before block 0.

    Args:
        x: (N, 3, H, W) normalised images; H and W multiples of the patch size (14).
        model: the model's name, for the error message.
    Returns:
        tokens (N, 1 + R + h*w, D) as [CLS, registers, patches row-major] in the backbone's dtype,
        the patch grid (h, w), and the input dtype (to cast outputs back to).
    Raises:
        InputError: a side that is not a multiple of the patch size.
    """
    # Python ints: the spatial size is static in exported graphs (only the batch is dynamic).
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    ps = vit.patch_size
    h, w = in_h // ps, in_w // ps
    if h * ps != in_h or w * ps != in_w or h == 0 or w == 0:
        raise InputError(f"{model} needs input sides that are multiples of {ps}, got {in_h}x{in_w}; "
                         f"resize to e.g. {max(1, round(in_h / ps)) * ps}x{max(1, round(in_w / ps)) * ps}")
    in_dtype, dtype = x.dtype, vit.patch_embed.proj.weight.dtype
    tokens = vit.patch_embed(x if in_dtype == dtype else x.to(dtype))
    tokens = torch.cat([vit.cls_token.expand(tokens.shape[0], -1, -1).to(dtype), tokens], dim=1)
    tokens = tokens + vit.pos_embed_for((h, w)).to(dtype)
    if vit.register_tokens is not None:
        regs = vit.register_tokens.expand(tokens.shape[0], -1, -1).to(dtype)
        tokens = torch.cat([tokens[:, :1], regs, tokens[:, 1:]], dim=1)
    return tokens, (h, w), in_dtype
