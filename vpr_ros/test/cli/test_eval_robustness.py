"""`vpr-ros eval` validates its numbers, dataset and output before loading a model (issue 8)."""

import shutil

import numpy as np
import pytest

import vpr_ros.models
from conftest import CORRIDOR
from vpr_ros.cli.main import main


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    # every case here must fail before a model is loaded (and fast)
    monkeypatch.setattr(vpr_ros.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))


@pytest.fixture
def dataset(tmp_path):
    for split in ("query", "ref"):
        (tmp_path / "ds" / split).mkdir(parents=True)
        for i in range(2):
            shutil.copy(CORRIDOR / split / f"{i:07d}.jpg", tmp_path / "ds" / split)
    shutil.copy(CORRIDOR / "ground_truth_new.npy", tmp_path / "ds")
    return tmp_path / "ds"


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_rerank_k_must_be_positive(dataset, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--dataset", str(dataset), "--rerank-k", value])
    assert exc.value.code == 2 and "--rerank-k" in capsys.readouterr().err


def test_threads_must_be_positive(dataset, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--dataset", str(dataset), "--threads", "0"])
    assert exc.value.code == 2 and "--threads" in capsys.readouterr().err


def test_random_bytes_as_ground_truth(dataset, capsys):
    (dataset / "ground_truth_new.npy").write_bytes(
        np.random.default_rng(5).integers(0, 256, 5000, np.uint8).tobytes())
    assert main(["eval", "--dataset", str(dataset)]) == 2
    err = capsys.readouterr().err
    assert "ground_truth_new.npy" in err and "Traceback" not in err


def test_out_that_is_a_file(dataset, tmp_path, capsys):
    (tmp_path / "eval_out").write_text("keep")
    assert main(["eval", "--dataset", str(dataset), "--out", str(tmp_path / "eval_out")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "eval_out").read_text() == "keep"


def test_help_says_ground_truth_runs_no_code(capsys):
    for command in ("eval", "replay"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "without executing code" in " ".join(capsys.readouterr().out.split())
