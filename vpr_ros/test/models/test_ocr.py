"""OcrReader (models/ocr.py) on real images with known text, and on SIMULATED signs on a real frame.

Real text: the EuRoC frame left_img_1.png shows a case labelled "Nova"; the toy street view db7.jpg
a "cali" sticker on a car (test/data/*/ATTRIBUTION.md). Simulated: "Room 214" plates drawn with
cv2.putText (cli/bench/ocr.simulated_sign) at a few sizes and angles, to check that boxes come back
in original-image pixels, also when the reader shrinks the image first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rapidocr_onnxruntime", reason="OCR package not installed (requirements/ocr.txt)")

from vpr_ros.cli.bench.ocr import simulated_sign  # noqa: E402
from vpr_ros.core.config.text import TextConfig  # noqa: E402
from vpr_ros.core.errors import InputError, ModelLoadError  # noqa: E402
from vpr_ros.models.ocr import OCR_INSTALL, OcrReader, OcrUnavailableError  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def reader() -> OcrReader:
    return OcrReader(TextConfig(ocr_threads=1))


@pytest.fixture(scope="module")
def euroc_grey() -> np.ndarray:
    return cv2.imread(str(DATA / "kimera_euroc" / "left_img_2.png"), cv2.IMREAD_GRAYSCALE)


def _centre(box) -> np.ndarray:
    return np.asarray(box, np.float64).mean(axis=0)


def test_reads_real_text_on_a_euroc_frame(reader: OcrReader) -> None:
    grey = cv2.imread(str(DATA / "kimera_euroc" / "left_img_1.png"), cv2.IMREAD_GRAYSCALE)
    readings = reader.read(grey)
    nova = [r for r in readings if r.tokens == ["nova"]]
    assert len(nova) == 1, readings
    assert nova[0].confidence > 0.9
    # The case's label sits at about (667, 415) in the 752x480 frame.
    assert np.allclose(_centre(nova[0].box), (667, 415), atol=15), nova[0].box
    # Deterministic: the same frame gives exactly the same readings.
    assert reader.read(grey) == readings


def test_reads_a_real_sticker_in_a_street_view_rgb(reader: OcrReader) -> None:
    rgb = cv2.cvtColor(cv2.imread(str(DATA / "toy_street" / "db7.jpg")), cv2.COLOR_BGR2RGB)
    readings = reader.read(rgb)
    assert [r.tokens for r in readings] == [["cali"]], readings
    assert np.allclose(_centre(readings[0].box), (241, 409), atol=10), readings[0].box


@pytest.mark.parametrize(("scale", "angle"), [(0.6, 0.0), (1.0, 15.0), (2.0, -20.0)])
def test_simulated_sign_box_is_in_image_pixels(reader: OcrReader, euroc_grey: np.ndarray,
                                               scale: float, angle: float) -> None:
    image, plate = simulated_sign(euroc_grey, "Room 214", (420.0, 260.0), scale=scale, angle_deg=angle)
    readings = [r for r in reader.read(image) if "214" in r.tokens]
    assert len(readings) == 1, reader.read(image)
    assert readings[0].confidence > 0.8
    size = np.linalg.norm(plate[1] - plate[0])
    assert np.linalg.norm(_centre(readings[0].box) - plate.mean(axis=0)) < 0.15 * size


def test_shrunk_image_boxes_are_scaled_back(euroc_grey: np.ndarray) -> None:
    # A 1504x960 frame read with ocr_max_side_px=752 is OCRed at 752x480; its box must still be in
    # 1504x960 pixels, twice the box of the same sign in the 752x480 frame.
    image, plate = simulated_sign(euroc_grey, "Room 214", (420.0, 260.0), scale=1.0, angle_deg=10.0)
    big = cv2.resize(image, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    small_reader = OcrReader(TextConfig(ocr_threads=1, ocr_max_side_px=752))
    readings = [r for r in small_reader.read(big) if "214" in r.tokens]
    assert len(readings) == 1
    assert np.linalg.norm(_centre(readings[0].box) - 2.0 * plate.mean(axis=0)) < 15.0
    assert max(x for x, _ in readings[0].box) > 752  # not left in the shrunk image's pixels


def test_sessions_are_pinned_to_configured_threads() -> None:
    reader = OcrReader(TextConfig(ocr_threads=2))
    engine = reader._engine
    for session in (engine.text_det.infer.session, engine.text_cls.infer.session,
                    engine.text_rec.session.session):
        opts = session.get_session_options()
        assert opts.intra_op_num_threads == 2
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("bad", [np.zeros((20, 20), np.float32), np.zeros((20, 20, 4), np.uint8),
                                 np.zeros((0, 5), np.uint8)])
def test_rejects_images_it_cannot_read(reader: OcrReader, bad: np.ndarray) -> None:
    with pytest.raises(InputError):
        reader.read(bad)


def test_missing_package_names_it_and_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # sys.modules[name] = None makes `import name` raise ImportError, as on a machine without it.
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    with pytest.raises(OcrUnavailableError) as err:
        OcrReader()
    assert isinstance(err.value, ModelLoadError)
    assert "rapidocr-onnxruntime" in str(err.value) and OCR_INSTALL in str(err.value)


def test_importing_the_module_does_not_import_rapidocr() -> None:
    code = ("import sys, vpr_ros.models.ocr, vpr_ros.cli.bench.ocr; "
            "assert 'rapidocr_onnxruntime' not in sys.modules, 'imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_ocr_writes_a_json_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import json

    from vpr_ros.cli.bench.ocr import add_arguments, run_ocr_bench

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "ocr.json"
    args = parser.parse_args(["--sizes", "160x120", "--repeats", "1", "--out", str(out)])
    assert run_ocr_bench(args) == 0
    record = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == record
    (row,) = record["rows"]
    assert row["size"] == "160x120" and row["mean_ms"] > 0 and row["cpu_ms"] > 0
    assert "214" in row["read"]  # the SIMULATED sign is still read at the Corridor's resolution
    assert record["machine"]["rapidocr-onnxruntime"] != "missing" and "SIMULATED" in record["image"]


def test_strips_are_padded_so_the_detector_cannot_blow_up(reader: OcrReader, euroc_grey: np.ndarray) -> None:
    """rapidocr scales the shorter side up to 736 px: a 2x4000 strip became 736 x 1.47M px and the
    process was killed for memory. Strips are padded to 4:1 first; text in a strip keeps its box."""
    assert reader.read(np.zeros((2, 4000, 3), np.uint8)) == ()
    assert reader.read(np.zeros((4000, 2), np.uint8)) == ()
    image, plate = simulated_sign(euroc_grey, "Room 214", (376.0, 240.0), scale=1.0)
    strip = image[200:280]  # 80 x 752 (SIMULATED sign on a real frame): wider than 4:1, padded
    got = [r for r in reader.read(strip) if "214" in r.text]
    assert got, reader.read(strip)
    centre = np.mean(got[0].box, axis=0)
    assert abs(centre[0] - 376.0) < 40 and 0 <= centre[1] <= 80  # in the strip's own pixels
