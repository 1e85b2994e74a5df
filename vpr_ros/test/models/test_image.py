"""ImAge: manifest of the released files, parity with an independent reference (MODELS_3.md §2), batch
independence, any multiple-of-14 input, strict load of the released layout, and the preprocessing choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _reference import assert_batch_equals_each_alone, manifest, random_frames, state_manifest
from _reference_successors import image_reference, perturb_

from vpr_ros.core.errors import InputError, ModelLoadError
from vpr_ros.models import load_model
from vpr_ros.models.image import build_image, build_image_gsv
from vpr_ros.models.preprocess import preprocess_images
from vpr_ros.models.registry import get_preset

SMALL = dict(depth=3, embed_dim=32, num_heads=2, insert_before=2)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_image(**SMALL)
    perturb_(m)
    with torch.no_grad():  # trained tokens are large vectors (k-means init scaled by alpha), not near zero
        m.learnable_aggregation_tokens.mul_(50.0)
    return m.eval()


@pytest.mark.parametrize("builder", [build_image, build_image_gsv])
def test_full_size_state_dict_equals_released_manifest(builder) -> None:
    spec = get_preset("image")
    with torch.device("meta"):
        m = builder()
        g, loc = m(torch.empty(1, 3, *spec.input_size))
    assert state_manifest(m) == manifest("image")
    assert sum(v.numel() for v in m.state_dict().values()) == 86_589_696  # MODELS_3.md §2.7
    assert g.shape == (1, spec.global_dim) == (1, 6144) and loc.shape == (1, *spec.local_shape)


@pytest.mark.parametrize("hw", [(70, 70), (56, 84)])
def test_outputs_equal_the_independent_reference(model, hw) -> None:
    x = torch.randn(2, 3, *hw)
    ref = image_reference(model.state_dict(), x, heads=2, insert_before=2)
    with torch.no_grad():
        g, loc = model(x)
    assert g.shape == (2, 8 * 32) and loc.shape == (2, hw[0] // 14, hw[1] // 14, 32)
    np.testing.assert_allclose(g.numpy(), ref["global"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(loc.numpy(), ref["local"], atol=1e-4, rtol=0)
    assert np.abs(g.numpy() - ref["global"]).max() < 1e-5
    # Each token's block has norm ~ 1/sqrt(8) after the global L2 (the LayerNorm equalises them).
    norms = np.linalg.norm(g.numpy().reshape(2, 8, 32), axis=-1)
    assert np.allclose(norms, 8 ** -0.5, atol=0.05)


def test_insertion_point_and_layout_matter(model) -> None:
    """The reference distinguishes what MODELS_3.md warns about: the block before which the tokens go in."""
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        g = model(x)[0].numpy()
    other = image_reference(model.state_dict(), x, heads=2, insert_before=1)["global"]
    assert np.abs(g - other).max() > 1e-3


def test_final_token_local_features_option(model) -> None:
    final = build_image(**SMALL, local_tokens="final").eval()
    final.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 56, 70)
    ref = image_reference(model.state_dict(), x, heads=2, insert_before=2)
    with torch.no_grad():
        np.testing.assert_allclose(final(x)[1].numpy(), ref["local_final"], atol=1e-4, rtol=0)
        torch.testing.assert_close(final(x)[0], model(x)[0], atol=0, rtol=0)
    assert np.abs(ref["local_final"] - ref["local"]).max() > 1e-2


def test_batch_of_two_equals_each_alone(model) -> None:
    assert_batch_equals_each_alone(model, hw=(56, 70))


def test_sides_must_be_multiples_of_14(model) -> None:
    with pytest.raises(InputError, match=r"multiples of 14, got 57x70"):
        model(torch.randn(1, 3, 57, 70))


def test_released_layout_loads_strictly_and_a_shrunk_model_is_refused(model, tmp_path) -> None:
    path = tmp_path / "ImAge_Merged.pth"
    torch.save({"epoch_num": 2, "model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 5e-5, "params": []}]},
                "recalls": np.array([94.1, 97.0]), "best_r1_r5": np.float64(191.1), "not_improved_num": 0}, path)
    loaded = load_model("image", str(path), **SMALL, input_size=(56, 70))
    x = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x)[0], model(x)[0], atol=0, rtol=0)
    assert loaded.hash_bits == 0
    with pytest.raises(ModelLoadError, match=r"mis-shaped.*looks like preset: image or image-gsv"):
        load_model("image-gsv", str(path), **dict(SMALL, num_tokens=4))


def test_preprocessing_is_normalise_then_antialiased_bilinear() -> None:
    """MODELS_3.md §0.6: ToTensor -> Normalize -> bilinear resize of the float tensor to 322x322 with
    antialias (torchvision >= 0.17, which ImAge pins): the recipe both presets use."""
    assert get_preset("image").preprocess == get_preset("selavprpp-rerank").preprocess == "imagenet-bilinear-antialias"
    frame = random_frames(1)[0]
    got = preprocess_images([frame], "imagenet-bilinear-antialias", (98, 98))[0]
    x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    ref = F.interpolate(x[None], size=(98, 98), mode="bilinear", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    plain = F.interpolate(x[None], size=(98, 98), mode="bilinear", align_corners=False, antialias=False)[0]
    assert (got - plain).abs().max() > 0.05  # the choice is visible at this downscale
