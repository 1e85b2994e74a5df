"""The in-place numpy normalisation of preprocess_images is bit-identical to the torch formula it
replaced (``(x.div(255) - mean) / std`` on the permuted tensor, then the recipe's resize)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vpr_ros.models.preprocess import RECIPES, preprocess_images


def _torch_reference(rgb: np.ndarray, recipe: str, size: tuple[int, int]) -> torch.Tensor:
    rec = RECIPES[recipe]
    mean = torch.tensor(rec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(rec.std, dtype=torch.float32).view(3, 1, 1)
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1).div(255.0)
    if not rec.resize_first:
        x = (x - mean) / std
    if tuple(x.shape[1:]) != size:
        x = F.interpolate(x[None], size=size, mode=rec.interpolation, align_corners=False, antialias=rec.antialias)[0]
    if rec.resize_first:
        x = (x - mean) / std
    return x


@pytest.mark.parametrize("recipe", [r for r in RECIPES if not RECIPES[r].pil])
@pytest.mark.parametrize("shape", [(48, 64), (64, 64)])  # resized, and only normalised
def test_bit_identical_to_the_torch_formula(recipe, shape):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb[0] = (np.arange(shape[1]) * 4)[:, None]  # a ramp over the whole range
    rgb[1, :3] = [[0, 0, 0], [255, 255, 255], [1, 254, 128]]
    out = preprocess_images([rgb], recipe, (64, 64))[0]
    assert torch.equal(out, _torch_reference(rgb, recipe, (64, 64)))


def test_every_uint8_value_maps_as_before():
    values = np.arange(256, dtype=np.uint8)
    rgb = np.stack([values, values[::-1], np.roll(values, 7)], axis=1)[None]  # (1, 256, 3)
    out = preprocess_images([rgb], "imagenet-bilinear", (1, 256))[0]
    assert torch.equal(out, _torch_reference(rgb, "imagenet-bilinear", (1, 256)))


def test_strided_view_input_is_not_modified_and_matches():
    rgb = np.random.default_rng(1).integers(0, 256, (48, 128, 3), dtype=np.uint8)
    view = rgb[:, ::2]  # not contiguous: the float copy must still be C-ordered for the in-place rows
    before = view.copy()
    out = preprocess_images([view], "imagenet-bilinear", (64, 64))[0]
    assert torch.equal(out, _torch_reference(view, "imagenet-bilinear", (64, 64)))
    assert np.array_equal(view, before)
