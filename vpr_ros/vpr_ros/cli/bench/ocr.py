"""``vpr-ros bench ocr``: milliseconds per OCR read (models/ocr.py) at camera resolutions, JSON out.

Images: the real EuRoC frame ``left_img_1.png`` (a real "Nova" case in view) with a SIMULATED sign
("Room 214", drawn with cv2.putText by :func:`simulated_sign`) pasted in, resized to each size
(160x120 is the Corridor's, 640x480 VGA, 752x480 EuRoC's own). Each size is read once untimed
(ONNX Runtime's first-run allocations), then ``--repeats`` times; the text read at each size is
reported so a fast read that found nothing is visible. ``cpu_ms`` is the process CPU time per read
(all ONNX Runtime threads): on a shared machine it moves far less with the load than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.cli.bench.machine import machine_base

__all__ = ["add_arguments", "run_ocr_bench", "simulated_sign", "EUROC_TEXT_FRAME"]

#: Real EuRoC V1_01 frame with real text ("Nova" on a case, lower right); see docs/place_text.md.
EUROC_TEXT_FRAME = Path(__file__).resolve().parents[3] / "test" / "data" / "kimera_euroc" / "left_img_1.png"


def simulated_sign(image: npt.NDArray[np.uint8], text: str, center: tuple[float, float], scale: float = 1.0,
                   angle_deg: float = 0.0) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """A SIMULATED sign: black ``text`` on a white plate, rotated by ``angle_deg`` (counter-clockwise)
    about ``center`` and pasted onto a copy of ``image`` ((H, W) grey or (H, W, 3) RGB uint8).

    Returns the new image and the plate's four corners (4, 2) float32 in image pixels, clockwise
    from top-left, so tests can check where OCR put its box.
    """
    thickness = max(1, round(2 * scale))
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = round(10 * scale) + 2
    plate = np.full((th + baseline + 2 * pad, tw + 2 * pad), 255, np.uint8)
    cv2.putText(plate, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, 0, thickness, cv2.LINE_AA)
    h, w = plate.shape
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    rot[:, 2] += np.asarray(center, np.float64) - (w / 2, h / 2)
    size = (image.shape[1], image.shape[0])
    mask = cv2.warpAffine(np.full_like(plate, 255), rot, size, flags=cv2.INTER_NEAREST) > 0
    warped = cv2.warpAffine(plate, rot, size, flags=cv2.INTER_LINEAR)
    out = image.copy()
    out[mask] = warped[mask] if image.ndim == 2 else warped[mask][:, None]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    return out, (corners @ rot[:, :2].T + rot[:, 2]).astype(np.float32)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", nargs="+", default=["160x120", "640x480", "752x480"],
                        help="WIDTHxHEIGHT of the frames read")
    parser.add_argument("--threads", type=int, default=1, help="text.ocr_threads (ONNX Runtime intra-op)")
    parser.add_argument("--max-side-px", type=int, default=960, help="text.ocr_max_side_px")
    parser.add_argument("--repeats", type=int, default=10, help="timed reads per size")
    parser.add_argument("--frame", default=str(EUROC_TEXT_FRAME), help="grey base frame")
    parser.add_argument("--out", default="", help="also write the JSON record here")


def _machine() -> dict[str, Any]:
    from vpr_ros.models.ocr import ocr_versions

    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=False).stdout.strip() or "unknown"
    except OSError:
        git = "unknown"
    return {**machine_base(), **ocr_versions(), "git": git, "loadavg_1min": round(os.getloadavg()[0], 2)}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise SystemExit(f"bench ocr: size {text!r} is not WIDTHxHEIGHT (e.g. 640x480)") from exc
    return w, h


def run_ocr_bench(args: argparse.Namespace) -> int:
    from vpr_ros.core.config.text import TextConfig
    from vpr_ros.models.ocr import OcrReader

    base = cv2.imread(args.frame, cv2.IMREAD_GRAYSCALE)
    if base is None:
        raise SystemExit(f"bench ocr: cannot read {args.frame}; pass --frame with a grey image")
    frame, _ = simulated_sign(base, "Room 214", (300.0, 200.0), scale=1.5, angle_deg=5.0)
    t0 = time.perf_counter()
    reader = OcrReader(TextConfig(ocr_threads=args.threads, ocr_max_side_px=args.max_side_px))
    load_s = time.perf_counter() - t0
    rows = []
    for text in args.sizes:
        w, h = _size(text)
        image = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        t0 = time.perf_counter()
        reader.read(image)  # first read of a size: ORT allocations, out of the timing
        first_ms = (time.perf_counter() - t0) * 1e3
        times, readings = [], ()
        cpu0 = time.process_time()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            readings = reader.read(image)
            times.append((time.perf_counter() - t0) * 1e3)
        cpu_ms = (time.process_time() - cpu0) * 1e3 / args.repeats
        t = np.array(times)
        rows.append({"size": f"{w}x{h}", "first_ms": round(first_ms, 1), "mean_ms": round(float(t.mean()), 1),
                     "std_ms": round(float(t.std()), 1), "p95_ms": round(float(np.percentile(t, 95)), 1),
                     "cpu_ms": round(cpu_ms, 1),
                     "read": "; ".join(f"{r.text} ({r.confidence:.3f})" for r in readings)})
    record = {"bench": "ocr", "image": f"{Path(args.frame).name} + SIMULATED sign 'Room 214'",
              "threads": args.threads, "max_side_px": args.max_side_px, "repeats": args.repeats,
              "load_s": round(load_s, 2), "machine": _machine(), "rows": rows}
    doc = json.dumps(record, indent=2, ensure_ascii=False)
    print(doc)
    if args.out:
        Path(args.out).write_text(doc + "\n")
    return 0
