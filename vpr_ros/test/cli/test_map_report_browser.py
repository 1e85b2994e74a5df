"""The map report in a real browser: headless Chromium (Debian ``chromium``, scripts/setup.sh installs it).

The page has no JavaScript, so "loads without errors" means: Chromium parses it, logs no console or
resource error, the DOM it builds holds the gallery with one figure per loop, and the thumbnails
(base64 JPEG inside SVG) really render (a screenshot is darker than the same page without them).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_map_cmd import build_map
from vpr_ros.cli.main import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOT_DIR = os.environ.get("VPR_TEST_SCREENSHOT_DIR")  # set it to keep the first-screen screenshot
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/setup.sh installs it)")


def _chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp / 'profile'}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=60, check=True)


def _page_errors(stderr: str) -> list[str]:
    """Console messages of the page itself (Chromium's own chrome:// pages log theirs too)."""
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln and "source: file://" in ln]


def _darkness(png: Path) -> float:
    img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert img is not None, f"chromium wrote no screenshot at {png}"
    return float(255 - img.mean())


def test_report_renders_in_chromium_with_every_loop(tmp_path):
    loops = build_map(tmp_path / "map")
    assert main(["map", "report", str(tmp_path / "map"), "--out", str(tmp_path / "report.html")]) == 0
    dom = _chromium(tmp_path / "report.html", tmp_path, "--dump-dom")
    assert _page_errors(dom.stderr) == []
    gallery = re.search(r'<section id="gallery"[^>]*data-loops="(\d+)"', dom.stdout)
    assert gallery and int(gallery.group(1)) == len(loops) > 0
    assert dom.stdout.count('<figure class="loop"') == len(loops)
    assert dom.stdout.count('class="thumb"') == 2 * len(loops)
    assert re.search(r'<svg id="timeline"', dom.stdout) and re.search(r'<svg id="trajectory"', dom.stdout)
    # the error check itself sees a page error when there is one
    broken = tmp_path / "broken.html"
    broken.write_text((tmp_path / "report.html").read_text().replace("</body>", "<script>nosuch();</script></body>"))
    assert any("nosuch" in ln for ln in _page_errors(_chromium(broken, tmp_path, "--dump-dom").stderr))

    # The same map without thumbnails: grey placeholders. The thumbnails must make the gallery darker,
    # which fails if the browser cannot decode the embedded JPEGs.
    shutil.copytree(tmp_path / "map", tmp_path / "bare")
    with sqlite3.connect(tmp_path / "bare" / "map.sqlite") as db:
        db.execute("DELETE FROM thumbnails")
    (tmp_path / "bare" / "manifest.json").unlink()  # edited on purpose; load it as a map without checksums
    with sqlite3.connect(tmp_path / "bare" / "map.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key='manifest'")
    assert main(["map", "report", str(tmp_path / "bare"), "--out", str(tmp_path / "bare.html")]) == 0
    size = "--window-size=1280,2400"
    shot = _chromium(tmp_path / "report.html", tmp_path, f"--screenshot={tmp_path / 'report.png'}", size)
    _chromium(tmp_path / "bare.html", tmp_path, f"--screenshot={tmp_path / 'bare.png'}", size)
    assert _page_errors(shot.stderr) == []
    assert _darkness(tmp_path / "report.png") > _darkness(tmp_path / "bare.png") + 5
    img = cv2.imread(str(tmp_path / "report.png"))
    assert img.shape[:2] == (2400, 1280) and np.std(img) > 20


def _class_pixels(img: np.ndarray) -> dict[str, int]:
    """Pixels of each loop class's colour (core/eval/loop_class.py) in a BGR screenshot."""
    from vpr_ros.core.eval import loop_class

    counts = {}
    for cls, (r, g, b, _) in loop_class.COLOURS.items():
        bgr = np.array([b, g, r]) * 255
        counts[cls] = int((np.abs(img.astype(float) - bgr).max(axis=2) < 12).sum())
    return counts


def test_first_screen_shows_the_loop_gallery(tmp_path):
    """At 1280x800 (a laptop's first screen) the gallery is visible: its thumbnails darken the view
    compared with the same map without thumbnails, and the figures' frames show the class colours."""
    build_map(tmp_path / "map")
    assert main(["map", "report", str(tmp_path / "map"), "--out", str(tmp_path / "report.html"),
                 "--min-matches", "60"]) == 0
    shutil.copytree(tmp_path / "map", tmp_path / "bare")
    with sqlite3.connect(tmp_path / "bare" / "map.sqlite") as db:
        db.execute("DELETE FROM thumbnails")
        db.execute("DELETE FROM meta WHERE key='manifest'")
    (tmp_path / "bare" / "manifest.json").unlink()
    assert main(["map", "report", str(tmp_path / "bare"), "--out", str(tmp_path / "bare.html"),
                 "--min-matches", "60"]) == 0
    size = "--window-size=1280,800"
    for name in ("report", "bare"):
        shot = _chromium(tmp_path / f"{name}.html", tmp_path, f"--screenshot={tmp_path / f'{name}.png'}", size)
        assert _page_errors(shot.stderr) == []
    img = cv2.imread(str(tmp_path / "report.png"))
    assert img.shape[:2] == (800, 1280)
    # thumbnails on the first screen (the bare page has grey boxes where they are)
    assert _darkness(tmp_path / "report.png") > _darkness(tmp_path / "bare.png") + 5
    # the class-coloured frames of the gallery's figures (6 px wide, a thumbnail high each)
    assert max(_class_pixels(img).values()) > 6 * 100, _class_pixels(img)
    if SHOT_DIR:  # keep the screenshot to look at
        shutil.copy(tmp_path / "report.png", Path(SHOT_DIR) / "report_first_screen.png")
