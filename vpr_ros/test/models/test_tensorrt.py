"""TensorRT backend: everything a CPU machine can check (settings, cache keys, builder args, export, errors)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from vpr_ros.core.errors import ConfigError, ModelLoadError
from vpr_ros.models.backends import tensorrt_backend as T
from vpr_ros.models.registry import get_preset
from vpr_ros.models.selavpr import build_selavpr

SMALL = dict(depth=1, embed_dim=32, num_heads=2, local_hidden=8, local_dim=4)


def test_settings_validate_precision_and_batch_range() -> None:
    with pytest.raises(ConfigError, match="fp16, fp32"):
        T.EngineSettings(input_hw=(224, 224), precision="int4")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        T.EngineSettings(input_hw=(224, 224), min_batch=2, opt_batch=1)


def test_builder_arguments_and_trtexec_command() -> None:
    s = T.EngineSettings(input_hw=(224, 224), precision="fp16", opt_batch=4, max_batch=8, workspace_mib=2048)
    args = T.builder_arguments(s)
    assert args["min_shape"] == (1, 3, 224, 224) and args["opt_shape"] == (4, 3, 224, 224)
    assert args["max_shape"] == (8, 3, 224, 224) and args["fp16"] and args["workspace_bytes"] == 2048 << 20
    cmd = T.trtexec_command("m.onnx", "m.engine", s)
    assert cmd[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    assert "--minShapes=images:1x3x224x224" in cmd and "--maxShapes=images:8x3x224x224" in cmd
    assert "--fp16" in cmd and "--memPoolSize=workspace:2048M" in cmd
    assert "--fp16" not in T.trtexec_command("m.onnx", "e", T.EngineSettings((224, 224), precision="fp32"))


def test_engine_cache_key_depends_on_every_component() -> None:
    s = T.EngineSettings(input_hw=(224, 224))
    base = T.engine_cache_key("abc", s, "Orin", "10.3.0")
    variants = [T.engine_cache_key("abd", s, "Orin", "10.3.0"),
                T.engine_cache_key("abc", T.EngineSettings((322, 322)), "Orin", "10.3.0"),
                T.engine_cache_key("abc", T.EngineSettings((224, 224), precision="fp32"), "Orin", "10.3.0"),
                T.engine_cache_key("abc", s, "RTX 4090", "10.3.0"),
                T.engine_cache_key("abc", s, "Orin", "8.6.2")]
    assert len({base, *variants}) == 6
    assert base == T.engine_cache_key("abc", T.EngineSettings(input_hw=(224, 224)), "Orin", "10.3.0")


def test_module_digest_tracks_weights() -> None:
    torch.manual_seed(0)
    m = build_selavpr(**SMALL)
    d = T.module_digest(m)
    assert d == T.module_digest(m)
    with torch.no_grad():
        m.aggregation[1].p.add_(1e-3)
    assert T.module_digest(m) != d


def test_export_has_dynamic_batch_and_both_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = T.export_onnx(build_selavpr(**SMALL), tmp_path / "m.onnx", (224, 224))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["global", "local"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    # The position-embedding interpolation is a constant, not a Resize TensorRT would redo differently.
    assert not any(n.op_type == "Resize" for n in graph.node)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_clear_error_without_cuda() -> None:
    with pytest.raises(ModelLoadError, match="needs an NVIDIA GPU with CUDA.*onnxruntime"):
        T.load_tensorrt_backend(get_preset("selavpr"), build_selavpr(**SMALL), "selavpr@test", "cuda",
                                "fp16", None)


def test_clear_error_without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install tensorrt.*JetPack"):
        T._tensorrt_flavour()
