"""MegaLoc: key layouts (safetensors and the older torch file), internal resize, linear head, ONNX, download."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _reference import assert_onnx_matches_torch, backends_agree, manifest, random_frames, state_manifest
from safetensors.torch import save_file

from vpr_ros.core.errors import ModelLoadError
from vpr_ros.models import load_model
from vpr_ros.models import weights as W
from vpr_ros.models.checkpoint import read_state_dict
from vpr_ros.models.megaloc import build_megaloc, multiple_of_14
from vpr_ros.models.preprocess import preprocess_images
from vpr_ros.models.registry import get_preset
from vpr_ros.models.salad import build_salad

SALAD_SMALL = dict(depth=2, embed_dim=64, num_heads=2, num_clusters=8, cluster_dim=16, token_dim=32, mlp_dim=32)
SMALL = dict(SALAD_SMALL, output_dim=48)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_megaloc(**SMALL)
    with torch.no_grad():
        m.aggregator.agg.dust_bin.fill_(1.3)
    return m


def _v1_layout(state: dict[str, torch.Tensor], dim: int) -> dict[str, torch.Tensor]:
    """The older ``megaloc.torch`` layout: torch.hub ViT under ``backbone.model`` with its mask token."""
    out = {("backbone.model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
           for k, v in state.items()}
    out["backbone.model.mask_token"] = torch.zeros(1, dim)
    return out


def test_full_model_state_dict_equals_official_manifest() -> None:
    with torch.device("meta"):
        m = build_megaloc()
    assert state_manifest(m) == manifest("megaloc", prefix="")
    assert sum(v.numel() for v in m.state_dict().values()) == 228_639_553  # MODELS_2.md §2.8
    assert sum(v.numel() for v in m.aggregator.linear.parameters()) == 140_583_168


def test_default_preset_matches_registry_shapes() -> None:
    spec = get_preset("megaloc")
    with torch.device("meta"):
        g, loc = build_megaloc()(torch.empty(1, 3, *spec.input_size))
    assert g.shape == (1, spec.global_dim) == (1, 8448) and loc.shape == (1, *spec.local_shape)


def test_sides_round_to_multiples_of_14_like_python_round() -> None:
    measured = {21: 28, 35: 28, 49: 56, 63: 56, 240: 238, 320: 322, 480: 476, 640: 644, 752: 756}
    assert {s: multiple_of_14(s) for s in measured} == measured


def test_any_input_size_is_resized_inside_the_model(model: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 120, 160)  # -> 126 x 154
    with torch.no_grad():
        g, loc = model(x)
        resized = F.interpolate(x, size=(126, 154), mode="bilinear", align_corners=False, antialias=True)
        g_ref, loc_ref = model(resized)
        exact = torch.randn(2, 3, 126, 168)  # multiples of 14: used as they are
        g_exact = model(exact)[0]
        cls, patches, hw = model.backbone.forward_tokens(exact)
        salad = model.aggregator.agg(patches.transpose(1, 2).reshape(2, 64, *hw), cls)
    assert loc.shape == (2, 9, 11, 64)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(loc, loc_ref, atol=1e-6, rtol=0)
    # The linear layer sees the unit-norm SALAD vector and its output is normalised again.
    np.testing.assert_allclose(salad.norm(dim=-1).numpy(), 1.0, atol=1e-6)
    torch.testing.assert_close(g_exact, F.normalize(model.aggregator.linear(salad), dim=-1))


def test_onnx_export_matches_torch(model: torch.nn.Module) -> None:
    assert_onnx_matches_torch(model, hw=(70, 84))


def test_load_model_torch_and_onnxruntime_agree(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))
    out = backends_agree("megaloc", dict(SMALL, input_size=(98, 126)), random_frames())
    assert out["torch"].global_.shape == (3, 48) and out["torch"].local.shape == (3, 7, 9, 64)


def test_safetensors_and_older_torch_layout_both_load(model, tmp_path) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    current = tmp_path / "model.safetensors"
    save_file(state, str(current))
    old = tmp_path / "megaloc.torch"
    torch.save(_v1_layout(state, 64), old)
    x = torch.randn(1, 3, 98, 98)
    with torch.no_grad():
        expected = model(x)[0]
        for path in (current, old):
            loaded = load_model("megaloc", str(path), **SMALL, input_size=(98, 98))
            torch.testing.assert_close(loaded.module(x)[0], expected, atol=0, rtol=0)
    assert list(read_state_dict(old)) == list(state)  # renamed, mask token dropped, module order


def test_safetensors_is_read_by_content_not_by_name(model, tmp_path) -> None:
    path = tmp_path / "weights.bin"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert set(read_state_dict(path)) == set(model.state_dict())
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="cannot read safetensors file"):
        read_state_dict(broken)


def test_salad_file_given_to_megaloc_names_salad(tmp_path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "dino_salad.ckpt"
    torch.save(build_salad(**SALAD_SMALL).state_dict(), path)
    with pytest.raises(ModelLoadError, match="looks like preset: salad"):
        load_model("megaloc", str(path), **SMALL)


def test_preprocessing_normalises_then_resizes_antialiased() -> None:
    frame = random_frames(1)[0]
    got = preprocess_images([frame], "imagenet-bilinear-antialias", (98, 126))[0]
    x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    ref = F.interpolate(x[None], size=(98, 126), mode="bilinear", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


class _Safetensors(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def served_file(model, tmp_path) -> Iterator[str]:
    path = tmp_path / "served.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    _Safetensors.body = path.read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Safetensors)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/model.safetensors"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_download_from_hugging_face_layout_then_load(served_file, model, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(W, "weights_dir", lambda: tmp_path / "weights")
    assert "huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors" in W.SOURCES["megaloc"].urls[0]
    path = W.download("megaloc", url=served_file, progress=False, timeout_s=10)
    assert path.name == W.SOURCES["megaloc"].filename and W.verify("megaloc") == W.sha256_file(path)
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path / "cache"))
    loaded = load_model("megaloc", **SMALL, input_size=(98, 98))  # the cached default file
    x = torch.randn(1, 3, 98, 98)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x)[0], model(x)[0], atol=0, rtol=0)


def test_megaloc_files_of_either_layout_given_to_salad_name_megaloc(model, tmp_path) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save(_v1_layout(state, 64), tmp_path / "megaloc.torch")
    for name in ("model.safetensors", "megaloc.torch"):
        with pytest.raises(ModelLoadError, match="looks like preset: megaloc"):
            load_model("salad", str(tmp_path / name), **SALAD_SMALL)
