"""Backends: ONNX Runtime equals torch, the graph cache, int8, and the errors users hit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_ros.core.errors import ConfigError, ModelLoadError
from vpr_ros.models import load_model
from vpr_ros.models.efficientnet_lite import BlockArgs
from vpr_ros.models.lite0 import Lite0GeM
from vpr_ros.models.model import resolve_weights
from vpr_ros.models.registry import get_preset

from conftest import corridor_image

# Stride 16 after four stride-2 steps; small enough to export in well under a second.
TINY = dict(stages=(BlockArgs(1, 3, 1, 1, 32, 16), BlockArgs(1, 3, 2, 2, 16, 24),
                    BlockArgs(1, 5, 2, 2, 24, 32), BlockArgs(1, 3, 2, 2, 32, 40)), head_ch=64)


@pytest.fixture(scope="module")
def real_models(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VPR_ROS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield (load_model("lite0-gem", backend="torch"), load_model("lite0-gem", backend="onnxruntime"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))
    return tmp_path


def _tiny_weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(Lite0GeM(**TINY).state_dict(), path)
    return path


def test_onnxruntime_equals_torch_on_a_real_frame(real_models) -> None:
    torch_model, ort_model = real_models
    assert ort_model.model_id == torch_model.model_id and ort_model.backend == "onnxruntime"
    images = [corridor_image("query", 0)]
    d_torch, d_ort = torch_model.extract(images), ort_model.extract(images)
    assert d_ort.global_.shape == d_torch.global_.shape and d_ort.local.shape == d_torch.local.shape
    assert np.abs(d_ort.global_ - d_torch.global_).max() < 1e-4
    assert np.abs(d_ort.local - d_torch.local).max() < 1e-4


def test_onnxruntime_batch_axis_is_dynamic(real_models) -> None:
    _, ort_model = real_models
    images = [corridor_image("ref", i) for i in (0, 40, 80)]
    batch = ort_model.extract(images)
    single = ort_model.extract(images[1:2])
    assert batch.global_.shape[0] == 3
    assert np.abs(batch.global_[1] - single.global_[0]).max() < 1e-5


def test_int8_runs_with_bounded_drift(real_models, cache: Path) -> None:
    _, fp32 = real_models
    int8 = load_model("lite0-gem", backend="onnxruntime", precision="int8")
    path = next(iter(int8.runner.paths.values()))
    assert path.name.endswith("_int8pc.onnx") and path.parent == cache / "onnx"
    images = [corridor_image("query", i) for i in (0, 50)]
    a, b = fp32.extract(images), int8.extract(images)
    drift = 1.0 - np.sum(a.global_ * b.global_, axis=1)
    print(f"int8 global drift (1 - cos): {drift.round(4)}")
    assert np.allclose(np.linalg.norm(b.global_, axis=1), 1.0, atol=1e-5)
    assert drift.max() < 0.15  # loose: dynamic int8 of an untrained-for-quantisation CNN drifts


def test_int8_vit_weights_are_quantised_per_output_channel(cache: Path) -> None:
    import onnx

    torch.manual_seed(0)
    small = dict(depth=1, embed_dim=32, num_heads=2, local_hidden=8, local_dim=8)
    int8 = load_model("selavpr", pretrained=False, backend="onnxruntime", precision="int8", **small)
    int8.extract([corridor_image("query", 0)])
    graph = onnx.load(str(int8.runner.paths[(224, 224)])).graph
    scales = {t.name: tuple(t.dims) for t in graph.initializer if t.name.endswith("_scale")}
    matmuls = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert len(matmuls) >= 6  # qkv, proj, fc1, fc2 and the two adapters' layers
    for node in matmuls:  # the weight's scale: one per output column (ONNX Runtime's per-channel)
        weight_scale = node.input[1].replace("_quantized", "_scale")
        assert scales[weight_scale][0] > 1, node.name


def test_graph_cache_is_reused_and_keyed_by_model(cache: Path) -> None:
    w1 = _tiny_weights(cache / "a.pth", seed=1)
    w2 = _tiny_weights(cache / "b.pth", seed=2)
    m1 = load_model("lite0-gem", str(w1), backend="onnxruntime", input_size=(64, 64), **TINY)
    path1 = m1.runner.paths[(64, 64)]
    mtime = path1.stat().st_mtime_ns
    again = load_model("lite0-gem", str(w1), backend="onnxruntime", input_size=(64, 64), **TINY)
    assert again.runner.paths[(64, 64)] == path1 and path1.stat().st_mtime_ns == mtime
    m2 = load_model("lite0-gem", str(w2), backend="onnxruntime", input_size=(64, 64), **TINY)
    assert m2.model_id != m1.model_id and m2.runner.paths[(64, 64)] != path1
    assert m1.model_id in path1.name and "64x64_opset17_fp32" in path1.name
    assert not list(cache.rglob("*.tmp"))  # atomic writes leave no partial files
    image = np.full((50, 70, 3), 128, np.uint8)
    assert not np.allclose(m1.extract([image]).global_, m2.extract([image]).global_)
    assert m1.global_dim == 64


def test_random_init_graphs_do_not_collide(cache: Path) -> None:
    torch.manual_seed(3)
    a = load_model("lite0-gem", pretrained=False, backend="onnxruntime", input_size=(64, 64), **TINY)
    torch.manual_seed(4)
    b = load_model("lite0-gem", pretrained=False, backend="onnxruntime", input_size=(64, 64), **TINY)
    assert a.model_id == b.model_id == "lite0-gem@random"
    assert a.runner.paths[(64, 64)] != b.runner.paths[(64, 64)]


def test_onnx_session_uses_requested_threads(cache: Path) -> None:
    torch.manual_seed(0)
    model = load_model("lite0-gem", pretrained=False, backend="onnxruntime", threads=2,
                       input_size=(64, 64), **TINY)
    opts = model.runner._session((64, 64)).get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1


def test_torch_bf16_close_to_fp32(cache: Path) -> None:
    image = [corridor_image("query", 3)]
    torch.manual_seed(0)
    fp32 = load_model("lite0-gem", pretrained=False, input_size=(64, 64), **TINY)
    torch.manual_seed(0)
    bf16 = load_model("lite0-gem", pretrained=False, precision="bf16", input_size=(64, 64), **TINY)
    a, b = fp32.extract(image).global_, bf16.extract(image).global_
    assert float(a[0] @ b[0]) > 0.98


@pytest.mark.parametrize("preset, overrides", [
    ("selavpr", dict(depth=2, embed_dim=64, num_heads=2, local_hidden=16, local_dim=8)),
    ("cricavpr", dict(depth=2, embed_dim=64, num_heads=2, adapter_hidden=32, encoder_heads=4)),
])
def test_cpu_bf16_casts_the_dinov2_backbone_and_keeps_heads_fp32(cache: Path, preset: str,
                                                                  overrides: dict) -> None:
    images = [corridor_image("query", i) for i in (3, 40)]
    torch.manual_seed(0)
    fp32 = load_model(preset, pretrained=False, **overrides)
    torch.manual_seed(0)
    bf16 = load_model(preset, pretrained=False, precision="bf16", **overrides)
    dtypes = {name.split(".")[0]: p.dtype for name, p in bf16.module.named_parameters()}
    assert dtypes.pop("backbone") == torch.bfloat16
    assert set(dtypes.values()) == {torch.float32}  # GeM p, local head / cross-image encoder
    assert bf16.runner.autocast is None  # weights already bf16: no per-call casts
    a, b = fp32.extract(images), bf16.extract(images)
    assert b.global_.dtype == np.float32 and b.local.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b.global_, axis=1), 1.0, atol=1e-5)
    cos = (a.global_ * b.global_).sum(1)
    assert cos.min() > 0.999 and not np.allclose(a.global_, b.global_, atol=1e-7)  # really bf16


def test_configuration_errors(cache: Path) -> None:
    with pytest.raises(ConfigError, match="lite0-gem"):
        load_model("no-such-preset")
    with pytest.raises(ConfigError, match="backend"):
        load_model("lite0-gem", pretrained=False, backend="openvino")
    with pytest.raises(ConfigError, match="int8 needs backend onnxruntime"):
        load_model("lite0-gem", pretrained=False, precision="int8", **TINY)
    with pytest.raises(ConfigError, match="fp32, int8"):
        load_model("lite0-gem", pretrained=False, backend="onnxruntime", precision="fp16", **TINY)
    with pytest.raises(ConfigError, match="override"):
        load_model("lite0-gem", pretrained=False, no_such_option=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_cuda_is_a_clear_model_load_error(cache: Path) -> None:
    with pytest.raises(ModelLoadError, match="device=cuda.*no CUDA"):
        load_model("lite0-gem", pretrained=False, device="cuda", precision="fp16", **TINY)


def test_missing_download_says_how_to_fix(cache: Path) -> None:
    with pytest.raises(ModelLoadError, match="weights download selavpr-msls|vpr-ros weights"):
        resolve_weights(get_preset("selavpr"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("lite0-gem", str(cache / "missing.pth"))
