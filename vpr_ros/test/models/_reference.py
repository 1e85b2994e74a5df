"""Helpers shared by the SelaVPR/CricaVPR tests: manifests and the ONNX-vs-torch comparison."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


def manifest(name: str, prefix: str = "module.") -> list[tuple[str, str, str]]:
    """(key without ``prefix``, shape like '1x1370x1024' or 'scalar', dtype) of an official checkpoint.

    SelaVPR/CricaVPR files carry DataParallel's ``module.``; SALAD, MegaLoc and BoQ files have none.
    """
    rows = []
    for line in (REFERENCE / f"{name}_checkpoint_keys.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        assert key.startswith(prefix)
        rows.append((key[len(prefix):], shape, dtype))
    return rows


def state_manifest(module: torch.nn.Module) -> list[tuple[str, str, str]]:
    return [(k, "x".join(map(str, v.shape)) or "scalar", str(v.dtype).replace("torch.", ""))
            for k, v in module.state_dict().items()]


def onnx_outputs(module: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Export ``module`` with a dynamic batch (traced at batch 1) and run ``x`` through ONNX Runtime."""
    import onnxruntime as ort

    from vpr_ros.models.backends.tensorrt_backend import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(module, Path(tmp) / "m.onnx", tuple(x.shape[-2:]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        return session.run(None, {"images": x.numpy()})


def backends_agree(preset: str, overrides: dict, images: list[np.ndarray]) -> dict:
    """Extract ``images`` with the torch and onnxruntime backends of ``load_model`` (same random
    init), assert both give the same descriptors, and return them by backend name."""
    from vpr_ros.models import load_model

    out = {}
    for backend in ("torch", "onnxruntime"):
        torch.manual_seed(0)  # same random init for both
        out[backend] = load_model(preset, pretrained=False, backend=backend, **overrides).extract(images)
    np.testing.assert_allclose(out["onnxruntime"].global_, out["torch"].global_, atol=1e-5)
    np.testing.assert_allclose(out["onnxruntime"].local, out["torch"].local, atol=1e-5)
    return out


def random_frames(n: int = 3) -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 256, (120, 160, 3), dtype=np.uint8) for i in range(n)]


def assert_onnx_matches_torch(model: torch.nn.Module, batch: int = 3, hw: tuple[int, int] = (224, 224)) -> None:
    """Export with a dynamic batch (traced at 1), run ``batch`` images of ``hw``, compare with torch (1e-5)."""
    x = torch.randn(batch, 3, *hw)
    with torch.no_grad():
        g, loc = model(x)
    og, oloc = onnx_outputs(model, x)
    np.testing.assert_allclose(og, g.numpy(), atol=1e-5)
    np.testing.assert_allclose(oloc, loc.numpy(), atol=1e-5)


def assert_batch_equals_each_alone(model: torch.nn.Module, hw: tuple[int, int]) -> None:
    """Two images of ``hw`` in one batch give the global descriptors each gives alone (1e-6)."""
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        both = model(x)[0]
        alone = torch.cat([model(x[i:i + 1])[0] for i in range(2)])
    torch.testing.assert_close(both, alone, atol=1e-6, rtol=1e-6)
