"""Image preprocessing: list of uint8 RGB frames -> normalised (N, 3, H, W) float32 tensor.

Recipes are named by ``PresetSpec.preprocess``. "imagenet-bilinear" normalises with the ImageNet
mean/std first and then resizes the float image with non-antialiased bilinear interpolation
(``align_corners=False``), the order SelaVPR's and CricaVPR's evaluation code uses; doing the same
here in torch keeps our descriptors equal to theirs. SALAD, MegaLoc and BoQ were evaluated with other
transforms (Pillow on uint8, antialiased bilinear, antialiased bicubic before normalising); each has
its own recipe below.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from vpr_ros.core.errors import ConfigError, InputError

__all__ = ["Recipe", "RECIPES", "as_rgb_uint8", "target_size", "preprocess_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Per-channel normalisation followed by a resize of the float image."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    #: torch's antialiased resampling (support widened by the downscale factor), as torchvision does.
    antialias: bool = False
    #: Resize the [0, 1] image and normalise afterwards (BoQ's README transform order).
    resize_first: bool = False
    #: Resize the uint8 image with Pillow before anything else (SALAD's eval transform on PIL images).
    pil: bool = False


RECIPES: dict[str, Recipe] = {
    "imagenet-bilinear": Recipe(IMAGENET_MEAN, IMAGENET_STD, "bilinear"),
    # SALAD: PIL Resize(BILINEAR) on the uint8 image (antialiased, 8-bit output) -> ToTensor -> Normalize.
    "pil-bilinear": Recipe(IMAGENET_MEAN, IMAGENET_STD, "bilinear", pil=True),
    # MegaLoc (VPR-methods-evaluation): ToTensor -> Normalize -> Resize(antialias=True), bilinear.
    "imagenet-bilinear-antialias": Recipe(IMAGENET_MEAN, IMAGENET_STD, "bilinear", antialias=True),
    # BoQ README: ToTensor -> Resize(bicubic, antialias=True) on the float image, unclamped -> Normalize.
    "bicubic-antialias": Recipe(IMAGENET_MEAN, IMAGENET_STD, "bicubic", antialias=True, resize_first=True),
}


def as_rgb_uint8(image: object, index: int = 0) -> npt.NDArray[np.uint8]:
    """Validate one frame and return it as (H, W, 3) uint8 RGB.

    Accepts (H, W) or (H, W, 1) grey (replicated) and (H, W, 4) RGBA (alpha dropped).

    Raises:
        InputError: not an array, not uint8, empty, or an unsupported channel count.
    """
    where = f"image {index}"
    if not isinstance(image, np.ndarray):
        raise InputError(f"{where} is a {type(image).__name__}; pass an HxWx3 uint8 numpy array")
    if image.dtype != np.uint8:
        raise InputError(f"{where} has dtype {image.dtype}; convert it to uint8 RGB (0..255)")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"{where} has shape {image.shape}; expected HxW grey, HxWx3 RGB or HxWx4 RGBA")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{where} is empty (shape {image.shape}); drop empty frames before extraction")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


#: Longest side / shortest side that ``keep_aspect`` accepts (panoramic cameras are about 3:1; 16:1 bounds the network input at 16x its square size).
MAX_KEEP_ASPECT_RATIO = 16.0


def target_size(height: int, width: int, input_size: tuple[int, int], patch_multiple: int,
                keep_aspect: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resize size and final (cropped/padded) size for a ``height`` x ``width`` frame.

    Without ``keep_aspect`` both are ``input_size``. With it, the short side is scaled to
    ``min(input_size)`` and each side is then centre-cropped down (or padded up, if shorter than one
    patch) to a multiple of ``patch_multiple``.

    Returns:
        ((resize_h, resize_w), (out_h, out_w)).
    """
    if not keep_aspect:
        return input_size, input_size
    if max(height, width) > MAX_KEEP_ASPECT_RATIO * min(height, width):
        # A 1x2000 frame would otherwise become a 322x644000 network input and stall the process.
        raise InputError(f"frame of {height}x{width} px has an aspect ratio above {MAX_KEEP_ASPECT_RATIO:g}:1, "
                         "which model.keep_aspect cannot feed to the network; crop the camera image or "
                         "set model.keep_aspect false")
    scale = min(input_size) / min(height, width)
    resized = (max(1, round(height * scale)), max(1, round(width * scale)))
    m = max(1, patch_multiple)
    out = tuple(max(m, (s // m) * m) for s in resized)
    return resized, (out[0], out[1])


def _pil_resize(rgb: npt.NDArray[np.uint8], size: tuple[int, int], interpolation: str) -> npt.NDArray[np.uint8]:
    """Pillow's resize of a uint8 (H, W, 3) frame to ``size`` (H, W): antialiased, rounded to uint8."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ConfigError(f"this preset's preprocessing resizes with Pillow, which is missing ({exc}); "
                          "run `pip install pillow` (pinned in requirements/base.txt)") from exc
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((size[1], size[0]), filters[interpolation])
    return np.asarray(resized)


def _center_fit(x: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
    """Centre-crop or zero-pad (zero = the mean colour after normalisation) (C, h, w) to ``out``."""
    for axis, size in ((1, out[0]), (2, out[1])):
        cur = x.shape[axis]
        if cur > size:
            start = (cur - size) // 2
            x = x.narrow(axis, start, size)
        elif cur < size:
            before = (size - cur) // 2
            pad = [0, 0, 0, 0]
            pad[(2 - axis) * 2:(2 - axis) * 2 + 2] = [before, size - cur - before]
            x = F.pad(x, pad)
    return x


def preprocess_images(images: Sequence[np.ndarray], recipe: str, input_size: tuple[int, int],
                      patch_multiple: int = 1, keep_aspect: bool = False) -> torch.Tensor:
    """Turn frames into the network input.

    Args:
        images: N frames, each (H, W, 3) uint8 RGB (grey and RGBA are converted).
        recipe: a key of :data:`RECIPES`.
        input_size: (H, W) the network sees (the short side target with ``keep_aspect``).
        patch_multiple: with ``keep_aspect``, output sides are multiples of this.
        keep_aspect: keep the aspect ratio instead of stretching to ``input_size``.
    Returns:
        (N, 3, H', W') float32 on CPU.
    Raises:
        InputError: no images, a bad image, or (``keep_aspect``) frames of different shapes.
        ConfigError: unknown recipe.
    """
    try:
        rec = RECIPES[recipe]
    except KeyError:
        raise ConfigError(
            f"unknown preprocess recipe {recipe!r}; choose one of {', '.join(RECIPES)}") from None
    if len(images) == 0:
        raise InputError("no images given; pass at least one HxWx3 uint8 frame")
    mean = torch.tensor(rec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(rec.std, dtype=torch.float32).view(3, 1, 1)
    mean_hwc, std_hwc = mean.numpy().reshape(3), std.numpy().reshape(3)
    out: list[torch.Tensor] = []
    for i, image in enumerate(images):
        rgb = as_rgb_uint8(image, i)
        resized, final = target_size(rgb.shape[0], rgb.shape[1], tuple(input_size), patch_multiple,
                                     keep_aspect)
        if rec.pil and rgb.shape[:2] != resized:
            rgb = _pil_resize(rgb, resized, rec.interpolation)
        # Converting to float32 in numpy copies, so read-only views (zero-copy bag images) are fine.
        # The scaling and normalisation then work in place on that copy: the same IEEE float32 ops in
        # the same order as torch's (x.div(255) - mean) / std (bit-identical, test_preprocess.py), without
        # three full-resolution temporaries (1.6-2x faster at 1280x720; docs/benchmarks.md).
        pixels = rgb.astype(np.float32, order="C")
        # As (H, W*3) rows with the mean/std tiled along them: numpy's broadcast over a last axis of 3
        # runs 3-element inner loops, 6x slower than these.
        rows = pixels.reshape(pixels.shape[0], -1)
        np.divide(rows, np.float32(255.0), out=rows)
        if not rec.resize_first:
            np.subtract(rows, np.tile(mean_hwc, pixels.shape[1]), out=rows)
            np.divide(rows, np.tile(std_hwc, pixels.shape[1]), out=rows)
        x = torch.from_numpy(pixels).permute(2, 0, 1)
        if tuple(x.shape[1:]) != resized:
            x = F.interpolate(x[None], size=resized, mode=rec.interpolation, align_corners=False,
                              antialias=rec.antialias)[0]
        if rec.resize_first:
            x = (x - mean) / std
        out.append(_center_fit(x, final))
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) > 1:
        raise InputError(f"frames of one batch give different input sizes {sorted(shapes)}; "
                         "batch frames of one camera, or disable keep_aspect")
    return torch.stack(out)
