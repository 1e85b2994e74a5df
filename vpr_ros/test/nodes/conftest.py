"""Fixtures for node tests: run DDS code in a private network namespace.

Every process that opens a DDS participant runs inside a network namespace that has only a
loopback interface (``unshare -rn`` + ``ip link set lo up``), with
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, UDP-only Fast DDS transport (its shared-memory
transport lives in /dev/shm, which a network namespace does not isolate) and a ROS_DOMAIN_ID of its
own. When pytest itself already runs in such a namespace (the CI may start the whole suite under
``unshare -rn``), the scenario runs directly.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from vpr_ros.netns import in_isolated_netns, netns_argv

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parents[1]          # vpr_ros/ (holds the vpr_ros Python package)
SCENARIOS = HERE / "scenarios.py"
_domain_ids = itertools.count((os.getpid() * 7) % 90)


def netns_available() -> str | None:
    """None when a network namespace can be made here, otherwise the reason it cannot."""
    if in_isolated_netns():
        return None
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare (util-linux) and ip (iproute2) are needed for the DDS tests"
    probe = subprocess.run(netns_argv(["true"]), capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    return None


def ros_env(tmp_path: Path) -> dict[str, str]:
    """Environment for every ROS process of one test: loopback discovery, own domain, temp logs."""
    env = dict(os.environ)
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(1 + next(_domain_ids) % 100),
        FASTDDS_BUILTIN_TRANSPORTS="UDPv4",
        ROS_LOG_DIR=str(tmp_path / "ros_log"),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
        PYTHONPATH=os.pathsep.join([str(PACKAGE_ROOT), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; conflicts with the range variable
    return env


@pytest.fixture(scope="session")
def netns_ok() -> None:
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    try:
        import vpr_ros_msgs.msg  # noqa: F401
    except ImportError:
        pytest.skip("vpr_ros_msgs is not built; run scripts/build_msgs.sh")


def scenario_runner(script: Path, tmp_path: Path, *common: str) -> Callable[..., dict[str, Any]]:
    """``run(name, *args, timeout=60)``: run ``script NAME --out result.json --tmp T --deadline D
    *common *args`` in a private netns; return its JSON (``_logs``: its output and the nodes' log tails).

    The scenario's own deadline is ``timeout`` minus a margin; on failure the assertion message
    carries the scenario's output (which includes the node's log tail).
    """

    def run(name: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        out = tmp_path / f"{name}.json"
        argv = [sys.executable, str(script), name, "--out", str(out), "--tmp", str(tmp_path),
                "--deadline", str(timeout - 5.0), *common, *args]
        proc = subprocess.run(netns_argv(argv), env=ros_env(tmp_path), capture_output=True, text=True,
                              timeout=timeout)
        logs = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        assert proc.returncode == 0, f"scenario {name} failed (rc {proc.returncode})\n{logs}"
        result = json.loads(out.read_text())
        log = result.get("log")
        result["_logs"] = logs + (log if isinstance(log, str) else "")
        return result

    return run


@pytest.fixture
def run_scenario(netns_ok: None, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """scenarios.py through :func:`scenario_runner`."""
    return scenario_runner(SCENARIOS, tmp_path)
