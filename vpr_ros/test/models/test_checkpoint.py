"""Reading official checkpoint files: formats, prefixes, legacy names, numpy entries, clear mismatches."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_ros.core.errors import ModelLoadError
from vpr_ros.models import cricavpr, selavpr
from vpr_ros.models.checkpoint import guess_preset, normalise_keys, read_state_dict

SELA = dict(depth=2, embed_dim=64, num_heads=2, local_hidden=16, local_dim=8)
CRICA = dict(depth=2, embed_dim=64, num_heads=2, adapter_hidden=32, encoder_heads=4, encoder_ff=32)


def _training_checkpoint(model: torch.nn.Module, path: Path, rename: dict[str, str] | None = None) -> Path:
    """What the official train.py writes: DataParallel keys plus epoch/optimizer/numpy recalls."""
    state = {}
    for k, v in model.state_dict().items():
        for old, new in (rename or {}).items():
            k = k.replace(old, new)
        state["module." + k] = v.clone()
    torch.save({"epoch_num": 7, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "recalls": np.array([80.1, 90.2, 93.0, 95.5]), "best_r5": np.float64(90.2),
                "not_improved_num": 0}, path)
    return path


def _as_numpy1_pickle(src: Path, dst: Path) -> Path:
    """Rewrite the pickle so numpy globals carry numpy 1.x names, as files saved by the authors do."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(item, data)
    return dst


@pytest.fixture(scope="module")
def sela() -> selavpr.SelaVPR:
    torch.manual_seed(1)
    return selavpr.build_selavpr(**SELA)


def test_training_checkpoint_loads_and_reproduces_outputs(sela: selavpr.SelaVPR, tmp_path: Path) -> None:
    path = _as_numpy1_pickle(_training_checkpoint(sela, tmp_path / "a.pth"), tmp_path / "SelaVPR_msls.pth")
    torch.manual_seed(2)
    fresh = selavpr.build_selavpr(**SELA)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert not torch.allclose(fresh(x)[0], sela(x)[0])
        selavpr.load_weights(fresh, path)
        for a, b in zip(fresh(x), sela(x)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_bare_state_dict_and_legacy_local_head_names(sela: selavpr.SelaVPR, tmp_path: Path) -> None:
    torch.save({k: v for k, v in sela.state_dict().items()}, tmp_path / "bare.pth")
    assert set(read_state_dict(tmp_path / "bare.pth")) == set(sela.state_dict())
    legacy = _training_checkpoint(sela, tmp_path / "old.pth",
                                  {"LocalAdapt.upconv1.": "upconv.", "LocalAdapt.upconv2.": "upconv2."})
    raw = torch.load(legacy, weights_only=False)["model_state_dict"]
    assert "module.upconv.weight" in raw and "module.upconv2.bias" in raw
    fresh = selavpr.build_selavpr(**SELA)
    selavpr.load_weights(fresh, legacy)
    torch.testing.assert_close(fresh.LocalAdapt.upconv2.weight, sela.LocalAdapt.upconv2.weight)
    assert normalise_keys({"module.module.a": torch.zeros(1)}) == {"a": torch.zeros(1)}


def test_arbitrary_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "payload": zipfile.ZipInfo("x")}, path)
    with pytest.raises(ModelLoadError, match="weights_only"):
        read_state_dict(path)


def test_wrong_model_names_the_preset_that_fits(sela: selavpr.SelaVPR, tmp_path: Path) -> None:
    crica = cricavpr.build_cricavpr(**CRICA)
    path = _training_checkpoint(crica, tmp_path / "CricaVPR.pth")
    with pytest.raises(ModelLoadError) as err:
        selavpr.load_weights(sela, path)
    msg = str(err.value)
    assert "looks like preset: cricavpr" in msg
    assert "missing: backbone.blocks.0.adapter1.D_fc1.weight" in msg
    assert "unexpected: backbone.blocks.0.adapter.branch1.conv.weight" in msg
    cricavpr.load_weights(cricavpr.build_cricavpr(**CRICA), path)  # and it does fit CricaVPR


def test_shrunken_model_reports_misshaped_keys(sela: selavpr.SelaVPR, tmp_path: Path) -> None:
    path = _training_checkpoint(sela, tmp_path / "s.pth")
    wider = selavpr.build_selavpr(**{**SELA, "local_dim": 16})
    with pytest.raises(ModelLoadError, match=r"mis-shaped: LocalAdapt.upconv2.weight \(file 16x8x3x3"):
        selavpr.load_weights(wider, path)


def test_missing_or_garbage_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "page.pth").write_text("<html>Google Drive quota exceeded</html>")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "page.pth")


def test_guess_preset() -> None:
    t = torch.zeros(1)
    assert guess_preset({"encoder.layers.0.self_attn.in_proj_weight": t}) == "cricavpr"
    assert guess_preset({"LocalAdapt.upconv1.weight": t}) == "selavpr"
    assert guess_preset({"LocalAdapt.upconv1.weight": t, "backbone.register_tokens": t}) == "selavpr-reg4"
    assert guess_preset({"blocks.0.attn.qkv.weight": t}).startswith("none")
    assert guess_preset({"foo": t}) is None
