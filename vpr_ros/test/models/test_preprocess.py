"""Preprocessing: exact values against a numpy/torch reference, colour conversions, keep_aspect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_images, target_size


def _reference(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Normalise in numpy, then torch bilinear (non-antialiased), as SelaVPR's eval does."""
    x = (image.astype(np.float32) / np.float32(255.0) - np.array(IMAGENET_MEAN, np.float32)) \
        / np.array(IMAGENET_STD, np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def test_matches_numpy_normalise_then_bilinear(rng: np.random.Generator) -> None:
    images = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8) for _ in range(3)]
    out = preprocess_images(images, "imagenet-bilinear", (32, 48))
    assert out.shape == (3, 3, 32, 48) and out.dtype == torch.float32
    ref = torch.cat([_reference(im, (32, 48)) for im in images])
    assert torch.allclose(out, ref, atol=1e-6, rtol=0)


def test_same_size_is_only_normalised(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = preprocess_images([image], "imagenet-bilinear", (20, 30))[0]
    assert np.allclose(out[0].numpy(), (image[..., 0] / 255.0 - 0.485) / 0.229, atol=1e-5)


def test_grey_and_rgba_are_converted(rng: np.random.Generator) -> None:
    grey = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((24, 24, 1), 7, np.uint8)], axis=2)
    out = preprocess_images([grey, grey[..., None], rgba, rgb], "imagenet-bilinear", (16, 16))
    for i in range(3):
        assert torch.equal(out[i], out[3])


@pytest.mark.parametrize("hw", [(120, 160), (480, 640), (333, 251), (50, 500), (224, 224)])
@pytest.mark.parametrize("patch", [14, 32])
def test_keep_aspect_sizes_are_patch_multiples(hw: tuple[int, int], patch: int) -> None:
    image = np.zeros((*hw, 3), np.uint8)
    out = preprocess_images([image], "imagenet-bilinear", (224, 224), patch, keep_aspect=True)
    h, w = out.shape[2:]
    assert h % patch == 0 and w % patch == 0
    resized, final = target_size(*hw, (224, 224), patch, True)
    assert min(resized) == 224 and (h, w) == final
    # Only the remainder to the next multiple is cropped: the aspect ratio survives.
    assert abs(w / h - hw[1] / hw[0]) < 0.25 * hw[1] / hw[0]


def test_keep_aspect_pads_tiny_side() -> None:
    assert target_size(10, 10, (8, 8), 14, True) == ((8, 8), (14, 14))
    out = preprocess_images([np.full((10, 10, 3), 255, np.uint8)], "imagenet-bilinear", (8, 8), 14,
                            keep_aspect=True)
    assert out.shape[2:] == (14, 14)
    assert float(out[0, 0, 0, 0]) == 0.0 and float(out[0, 0, 7, 7]) > 2.0  # zero padding, white centre


@pytest.mark.parametrize("bad, words", [
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 3), np.float32), "dtype float32"),
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    ([[1, 2], [3, 4]], "list"),
])
def test_bad_input_raises_input_error(bad: object, words: str) -> None:
    with pytest.raises(InputError, match=words):
        preprocess_images([bad], "imagenet-bilinear", (16, 16))


def test_batch_level_errors() -> None:
    with pytest.raises(InputError, match="no images"):
        preprocess_images([], "imagenet-bilinear", (16, 16))
    with pytest.raises(ConfigError, match="imagenet-bilinear"):
        preprocess_images([np.zeros((4, 4, 3), np.uint8)], "nope", (16, 16))
    mixed = [np.zeros((40, 40, 3), np.uint8), np.zeros((40, 80, 3), np.uint8)]
    with pytest.raises(InputError, match="different input sizes"):
        preprocess_images(mixed, "imagenet-bilinear", (32, 32), 16, keep_aspect=True)


def test_keep_aspect_refuses_extreme_aspect_ratios() -> None:
    # A 1x2000 frame used to become a 322x644000 input and stall the process for minutes.
    with pytest.raises(InputError, match="aspect ratio"):
        target_size(1, 2000, (322, 322), 14, True)
    with pytest.raises(InputError, match="keep_aspect"):
        preprocess_images([np.zeros((1, 2000, 3), np.uint8)], "imagenet-bilinear", (322, 322), 14,
                          keep_aspect=True)
    assert target_size(1, 2000, (322, 322), 14, False) == ((322, 322), (322, 322))  # stretched: fine
