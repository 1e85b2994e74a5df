"""The text-aware fused descriptor (models/text_fused.py) with the real MiniLM embedder."""

import numpy as np
import pytest

from conftest import TinyExtractor, corridor_image
from vpr_ros.core.errors import ModelLoadError
from vpr_ros.core.text.place_text import TextReading
from vpr_ros.models.text_fused import TextFusedExtractor, fused_text

text_embedding = pytest.importorskip("vpr_ros.models.text_embedding")


class GivenText:
    """Reads the text a test put on an image (by its first pixel value), counting calls."""

    def __init__(self, texts):
        self.texts = texts
        self.calls = 0

    def read(self, image):
        self.calls += 1
        return self.texts.get(int(image[0, 0, 0]), ())


@pytest.fixture(scope="module")
def embedder():
    try:
        return text_embedding.TextEmbedder()
    except ModelLoadError as exc:  # the optional model package is missing
        pytest.skip(f"MiniLM not installed: {exc}")


def _image(split, index, tag):
    im = corridor_image(split, index).copy()
    im[0, 0, 0] = tag
    return im


def test_fused_rows_are_unit_and_cosine_mixes_image_and_text(embedder):
    w = 1.5
    reader = GivenText({1: (TextReading("354", 0.99),), 2: (TextReading("354", 0.99),),
                        3: (TextReading("356", 0.99),), 4: (TextReading("999", 0.2),)})
    base = TinyExtractor()
    fused = TextFusedExtractor(base, reader, embedder, w, min_confidence=0.8)
    images = [_image("ref", 7, 1), _image("query", 7, 2), _image("ref", 17, 3), _image("ref", 30, 4)]
    f = fused.extract(images).global_
    g = base.extract(images).global_
    e = embedder.embed(["354", "356"])
    assert f.shape == (4, base.global_dim + 384) and fused.global_dim == f.shape[1]
    assert np.allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    assert np.allclose(f[3], np.concatenate([g[3], np.zeros(384)]), atol=1e-6)  # unsure text: image only
    same = (g[0] @ g[1] + w ** 2) / (1 + w ** 2)
    other = (g[0] @ g[2] + w ** 2 * (e[0] @ e[1])) / (1 + w ** 2)
    assert f[0] @ f[1] == pytest.approx(same, abs=1e-5)
    assert f[0] @ f[2] == pytest.approx(other, abs=1e-5)
    assert f[0] @ f[3] == pytest.approx(g[0] @ g[3] / np.sqrt(1 + w ** 2), abs=1e-5)


def test_read_reuses_the_readings_of_extract(embedder):
    reader = GivenText({1: (TextReading("Room 214", 0.9),)})  # embedded as "214"
    fused = TextFusedExtractor(TinyExtractor(), reader, embedder, 1.0, 0.8)
    image = _image("ref", 3, 1)
    fused.extract([image])
    assert fused.read(image) == (TextReading("Room 214", 0.9),) and reader.calls == 1
    assert fused.read(image.copy()) == (TextReading("Room 214", 0.9),) and reader.calls == 2  # not seen
    assert fused.model_id == "tiny+minilm-text-w1@test"


def test_fused_text_is_order_free_confident_and_distinctive():
    a = (TextReading("356", 0.9), TextReading("Room 354", 0.95), TextReading("412", 0.1))
    assert fused_text(a, 0.8) == fused_text(tuple(reversed(a)), 0.8) == "354 356"
    assert fused_text((TextReading("1", 0.9), TextReading("EA", 0.9)), 0.8) == ""  # texture junk
    assert fused_text((), 0.8) == ""


def test_config_switch_wraps_the_model_and_the_wrapper_reads_keyframes(embedder):
    pytest.importorskip("rapidocr_onnxruntime", reason="OCR is optional")
    from vpr_ros.models.text_readers import attach_text_reader, text_extractor
    from vpr_ros.core.config import config_from_flat
    from vpr_ros.core.detector import LoopClosureDetector

    base = TinyExtractor()
    assert text_extractor(config_from_flat({}), base) is base  # off by default
    cfg = config_from_flat({"text.fused_weight": 0.5})
    model = text_extractor(cfg, base)
    assert isinstance(model, TextFusedExtractor) and model.global_dim == base.global_dim + 384
    det = LoopClosureDetector(cfg, model)
    attach_text_reader(det)  # text.ocr is off, yet the fused model reads every frame: it gives the text
    assert det.text_reader is model
