"""`vpr-ros eval`: recall@N on a VPR-Bench folder, with and without MNN re-ranking."""

import json

import pytest

from conftest import CORRIDOR, TinyExtractor
from vpr_ros.cli.eval import evaluate
from vpr_ros.cli.main import main
from vpr_ros.core.errors import InputError


def test_evaluate_with_the_tiny_extractor_is_consistent():
    result = evaluate(TinyExtractor(), CORRIDOR, rerank_k=5)
    assert result["queries"] == 111 and result["database"] == 111
    g, r = result["global"], result["mnn_rerank"]
    assert 0 < g["R@1"] <= g["R@5"] <= g["R@10"] <= 1
    # Re-ranking only reorders the top 5, so R@5 and R@10 cannot change.
    assert r["R@5"] == g["R@5"] and r["R@10"] == g["R@10"]


def test_real_model_mnn_reranking_lifts_recall(tmp_path, capsys):
    """Measured reference: Lite0 GeM R@1 0.75 / R@5 0.96; MNN re-ranking lifts R@1 to about 0.9."""
    assert main(["eval", "--dataset", str(CORRIDOR), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["global"]["R@1"] >= 0.72 and result["global"]["R@5"] >= 0.94
    assert result["mnn_rerank"]["R@1"] >= 0.88
    assert result["mnn_rerank"]["R@1"] > result["global"]["R@1"]


def test_missing_images_are_reported(tmp_path):
    (tmp_path / "query").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        evaluate(TinyExtractor(), tmp_path, rerank_k=5)
