"""Reading text on keyframes (OCR) with the PP-OCR models shipped inside ``rapidocr-onnxruntime``.

The package is optional (``text.ocr`` is off by default) and imported only when an :class:`OcrReader`
is built, so nothing here costs anything, or needs the package, until OCR is switched on. Install it
with ``pip install --no-deps -r requirements/ocr.txt`` plus ``-r requirements/ocr_runtime.txt``
(scripts/setup.sh does both): the wheel declares ``opencv-python``, which must not land next to our
``opencv-python-headless``.

Pipeline per image (rapidocr): text detection (DB, PP-OCRv4) on the image upsampled so its shorter
side is 736 px, direction classification of each line, then recognition (PP-OCRv4, Chinese + English
character set) of each line cropped from the image we pass in. We shrink large images first
(``text.ocr_max_side_px``) and scale the boxes back, so callers always get original-image pixels.

Measured here (docs/place_text.md): the detector's own upsampling is what makes small text readable
(letting it run at native size lost the real "cali" sticker of the toy street image db7), and
upsampling a tiny (160x102) frame ourselves before OCR changed neither the tokens read nor the cost,
so tiny images go in as they are.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.config.text import TextConfig
from vpr_ros.core.errors import InputError, ModelLoadError
from vpr_ros.core.text.place_text import TextReading

__all__ = ["OcrReader", "OcrUnavailableError", "OCR_PACKAGE", "OCR_INSTALL", "ocr_versions"]

log = logging.getLogger(__name__)

OCR_PACKAGE = "rapidocr-onnxruntime"
OCR_INSTALL = ("pip install -r requirements/ocr_runtime.txt && "
               "pip install --no-deps -r requirements/ocr.txt")
_MODULE = "rapidocr_onnxruntime"


class OcrUnavailableError(ModelLoadError):
    """text.ocr is on but the OCR package cannot be imported (or its models cannot be loaded)."""


def _import_rapidocr() -> Any:
    try:
        return importlib.import_module(_MODULE)
    except ImportError as exc:
        raise OcrUnavailableError(
            f"text.ocr needs the {OCR_PACKAGE} package ({exc}); install it with `{OCR_INSTALL}` "
            "(--no-deps keeps opencv-python out: we use opencv-python-headless), or set text.ocr: off"
        ) from exc


def ocr_versions() -> dict[str, str]:
    """Versions of the OCR stack for benchmark records; a package that is not installed reads 'missing'."""
    from importlib import metadata

    out = {}
    for dist in (OCR_PACKAGE, "onnxruntime", "opencv-python-headless"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _pinned_session(ort: Any, model_path: str, threads: int) -> Any:
    # rapidocr builds its sessions with every core and ORT's default spinning worker threads; OCR
    # shares the CPU with the detector, so our sessions use exactly `threads` and never spin.
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])


class OcrReader:
    """Reads lines of text from an image. Deterministic: the same image gives the same readings.

    Built from :class:`TextConfig` (``ocr_threads``, ``ocr_max_side_px``). Not thread-safe: use one
    reader per thread (core/text/ocr_worker.py owns one).

    Raises:
        OcrUnavailableError: rapidocr-onnxruntime is not installed or its models cannot be loaded.
    """

    def __init__(self, config: TextConfig | None = None) -> None:
        self.config = config or TextConfig()
        rapidocr = _import_rapidocr()
        import onnxruntime as ort

        threads = self.config.ocr_threads
        try:
            engine = rapidocr.RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
            utils = importlib.import_module(f"{_MODULE}.utils")
            main = importlib.import_module(f"{_MODULE}.main")
            paths = utils.update_model_path(utils.read_yaml(main.DEFAULT_CFG_PATH))
            # Replace the three sessions rapidocr opened with thread-pinned, non-spinning ones.
            engine.text_det.infer.session = _pinned_session(ort, paths["Det"]["model_path"], threads)
            engine.text_cls.infer.session = _pinned_session(ort, paths["Cls"]["model_path"], threads)
            engine.text_rec.session.session = _pinned_session(ort, paths["Rec"]["model_path"], threads)
        except (AttributeError, KeyError, OSError) as exc:
            raise OcrUnavailableError(
                f"{OCR_PACKAGE} is installed but its models cannot be loaded ({type(exc).__name__}: {exc}); "
                f"reinstall the pinned version (requirements/ocr.txt: `{OCR_INSTALL}`)") from exc
        except Exception as exc:  # noqa: BLE001 - ORT's error classes share no base but Exception
            raise OcrUnavailableError(
                f"ONNX Runtime cannot open the OCR models of {OCR_PACKAGE} ({exc}); reinstall it "
                f"(`{OCR_INSTALL}`) or set text.ocr: off") from exc
        self._engine = engine

    def read(self, image: npt.NDArray[np.uint8]) -> tuple[TextReading, ...]:
        """Text lines in ``image``.

        Args:
            image: (H, W, 3) uint8 RGB or (H, W) uint8 grey.

        Returns:
            One :class:`TextReading` per line, top-to-bottom then left-to-right, with its box as four
            (x, y) corners in pixels of ``image`` (clockwise from top-left) and the recognition
            confidence; () when no text is found.

        Raises:
            InputError: not a uint8 grey or RGB image, or empty.
        """
        bgr = _to_bgr(image)
        height, width = bgr.shape[:2]
        scale = min(1.0, self.config.ocr_max_side_px / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        sx, sy = width / bgr.shape[1], height / bgr.shape[0]
        result, _ = self._engine(_bounded_aspect(bgr))
        readings = []
        for box, text, confidence in result or ():
            corners = tuple((min(float(x) * sx, float(width)), min(float(y) * sy, float(height)))
                            for x, y in box)
            readings.append(TextReading(str(text), float(confidence), corners))
        return tuple(readings)

    def __call__(self, image: npt.NDArray[np.uint8]) -> tuple[TextReading, ...]:
        return self.read(image)


#: rapidocr's text detector scales an image up until its SHORTER side is 736 px, so a 2x4000 strip
#: became 736 x 1.47M px and the process was killed for memory. Strips longer than this ratio are
#: padded (bottom or right, black) to it first; boxes keep their coordinates.
_MAX_ASPECT = 4


def _bounded_aspect(bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    height, width = bgr.shape[:2]
    short = -(-max(height, width) // _MAX_ASPECT)
    if min(height, width) >= short:
        return bgr
    return cv2.copyMakeBorder(bgr, 0, max(0, short - height), 0, max(0, short - width), cv2.BORDER_CONSTANT,
                              value=(0, 0, 0))


def _to_bgr(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    # rapidocr treats an ndarray as OpenCV BGR (its models were trained on cv2-read images).
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InputError(f"OCR needs a uint8 image, got {getattr(image, 'dtype', type(image).__name__)}; "
                         "convert with core/images.py first")
    if image.ndim == 2:
        if image.size == 0:
            raise InputError("OCR got an empty image")
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3 and image.size:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    raise InputError(f"OCR needs an (H, W, 3) RGB or (H, W) grey image, got shape {image.shape}")
