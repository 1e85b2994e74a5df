"""The OCR package is installed without its opencv-python dependency: exactly one cv2 in the env.

rapidocr-onnxruntime declares opencv-python; installed with its dependencies it would put a second
distribution of the ``cv2`` package next to our opencv-python-headless (the last one installed
overwrites the other's files, and uninstalling either then breaks ``import cv2``).
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _cv2_distributions() -> list[str]:
    owners = []
    for dist in metadata.distributions():
        files = dist.files or []
        if any(f.parts and f.parts[0] == "cv2" for f in files):
            owners.append(dist.metadata["Name"])
    return sorted(owners)


def test_exactly_one_cv2_distribution_is_installed() -> None:
    assert _cv2_distributions() == ["opencv-python-headless"]
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("opencv-python")


def test_rapidocr_is_installed_at_the_pinned_version_and_imports() -> None:
    pin = re.search(r"^rapidocr-onnxruntime==(\S+)$", (REPO / "requirements" / "ocr.txt").read_text(), re.M)
    assert pin, "requirements/ocr.txt must pin rapidocr-onnxruntime"
    assert metadata.version("rapidocr-onnxruntime") == pin.group(1)
    import rapidocr_onnxruntime

    assert hasattr(rapidocr_onnxruntime, "RapidOCR")
    # Its declared runtime dependencies, other than opencv-python, are all present.
    for req in metadata.requires("rapidocr-onnxruntime") or []:
        name = re.split(r"[<>=!~ ;\[]", req, maxsplit=1)[0]
        if name.lower() != "opencv-python":
            metadata.version(name)  # raises PackageNotFoundError when missing


def test_setup_installs_the_ocr_wheel_without_dependencies() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert re.search(r"--no-deps -r requirements/ocr\.txt", setup)
    assert "-r requirements/ocr_runtime.txt" in setup
    assert "opencv-python==" not in "\n".join(p.read_text() for p in (REPO / "requirements").glob("*.txt"))
