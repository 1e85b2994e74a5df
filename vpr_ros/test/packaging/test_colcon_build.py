"""The path a ROS user takes: ``colcon build`` of both packages, then ``ros2 run`` from the install space.

colcon and the ament/rosidl tools are the PyPI wheels of the test venv (requirements/ros.txt; the venv
plays the part of ``/opt/ros/jazzy``, prepared by scripts/setup.sh and scripts/build_msgs.sh). The node
is started the way ``source install/setup.bash && ros2 run vpr_ros loop_closure_node`` starts it: the
overlay's ``setup.bash`` sets every path, so the code and the message libraries come from the install
space, never from the editable install in the venv (checked, not assumed). Runs in the network
namespace of scripts/test.sh; takes about 20 s, almost all of it the rosidl build of vpr_ros_msgs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
VENV = Path(sys.prefix)
PURELIB = Path(sysconfig.get_paths()["purelib"]).relative_to(VENV)  # lib/python3.X/site-packages
TINY_EXTRACTOR_DIR = REPO / "vpr_ros" / "test" / "nodes"
BUILD_TIMEOUT_S = 300
READY_TIMEOUT_S = 60


def _underlay_env() -> dict[str, str]:
    """The venv as the ROS underlay: what ``source /opt/ros/jazzy/setup.bash`` would give."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    env.update(VIRTUAL_ENV=str(VENV), PATH=f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
               AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV))
    # The wheels' bootstrapper would re-exec python with $VENV/lib added in set order (random), which
    # could shadow the overlay's message libraries with the venv's copy; fix the underlay order here.
    libs = [str(VENV / "lib"), *sorted(str(p) for p in (VENV / PURELIB).glob("ros_*.libs"))]
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"
    return env


@pytest.fixture(scope="module")
def install_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    colcon = VENV / "bin" / "colcon"
    if not colcon.is_file():
        pytest.fail(f"{colcon} is missing: run scripts/setup.sh (installs colcon-common-extensions from "
                    "requirements/ros.txt)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    cmd = [str(colcon), "--log-base", str(ws / "log"), "build",
           "--base-paths", str(REPO),
           "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
           "--event-handlers", "console_direct-", "console_cohesion+",
           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ws, env=_underlay_env(), capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, (f"colcon build failed (rc {proc.returncode}, {elapsed:.0f} s); if CMake "
                                  "cannot find ament or Python paths, rerun scripts/build_msgs.sh, which "
                                  f"fixes the wheels' exports:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    # Exactly our two packages are found in the checkout (not its venv or build trees).
    assert "Summary: 2 packages finished" in proc.stdout, proc.stdout[-3000:]
    print(f"colcon build of vpr_ros_msgs + vpr_ros: {elapsed:.1f} s")
    return ws / "install"


def test_launch_config_and_executables_are_installed(install_space: Path) -> None:
    share = install_space / "vpr_ros" / "share" / "vpr_ros"
    launch = sorted(p.name for p in (REPO / "vpr_ros" / "launch").glob("*.launch.py"))
    assert launch and sorted(p.name for p in (share / "launch").glob("*.launch.py")) == launch
    yaml = share / "config" / "loop_closure.yaml"
    assert yaml.read_bytes() == (REPO / "vpr_ros" / "config" / "loop_closure.yaml").read_bytes()
    assert (share / "package.xml").is_file()
    index = install_space / "vpr_ros" / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / "vpr_ros").is_file()
    for exe in ("loop_closure_node", "vpr-ros"):
        assert os.access(install_space / "vpr_ros" / "lib" / "vpr_ros" / exe, os.X_OK), exe
    msgs = install_space / "vpr_ros_msgs"
    assert (msgs / "share" / "vpr_ros_msgs" / "msg" / "LoopClosure.msg").is_file()
    assert (msgs / PURELIB / "vpr_ros_msgs" / "msg" / "__init__.py").is_file()
    # Sources stay clean: nothing written next to the package sources.
    assert not list((REPO / "vpr_ros").glob("*.egg-info")) and not (REPO / "vpr_ros" / "build").exists()


def _ros_run(install_space: Path, args: list[str], out: Path) -> subprocess.Popen[bytes]:
    """``source install/setup.bash; ros2 run vpr_ros loop_closure_node ARGS`` (ros2cli is not on PyPI)."""
    env = _underlay_env()
    # bash's `.` of colcon's setup.bash returns the status of its last internal test, so it is
    # followed by `;`, not `&&`. The test directory is appended only for the injected extractor
    # (parameter extractor_factory), so it shadows nothing.
    script = (f'. "{install_space}/setup.bash"; export PYTHONPATH="$PYTHONPATH:{TINY_EXTRACTOR_DIR}"; '
              f'exec "{install_space}/vpr_ros/lib/vpr_ros/loop_closure_node" "$@"')
    with open(out, "wb") as fh:
        return subprocess.Popen(["bash", "-c", script, "ros2-run", *args], cwd=out.parent, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def _wait_for(out: Path, proc: subprocess.Popen[bytes], text: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = out.read_text(errors="replace")
        if text in log or proc.poll() is not None:
            return log
        time.sleep(0.1)
    return out.read_text(errors="replace")


def test_node_starts_from_the_install_space_with_the_installed_yaml(install_space: Path, tmp_path: Path) -> None:
    yaml = install_space / "vpr_ros" / "share" / "vpr_ros" / "config" / "loop_closure.yaml"
    out = tmp_path / "node.log"
    start = time.perf_counter()
    proc = _ros_run(install_space, ["--ros-args", "--params-file", str(yaml),
                                    "-p", "extractor_factory:=tiny_extractor:build"], out)
    try:
        log = _wait_for(out, proc, "ready:", READY_TIMEOUT_S)
        assert "ready:" in log and proc.poll() is None, f"node did not report ready:\n{log[-4000:]}"
        ready_s = time.perf_counter() - start
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = out.read_text(errors="replace")
    assert rc == 0, f"rc {rc} after SIGINT:\n{log[-4000:]}"
    assert "Traceback" not in log, log[-4000:]
    print(f"loop_closure_node from the install space: ready after {ready_s:.1f} s")
    # The message libraries came from the overlay, not from the copy build_msgs.sh put in the venv.
    typesupport = [line.split()[-1] for line in maps.splitlines() if "libvpr_ros_msgs__rosidl" in line]
    assert typesupport and all(p.startswith(str(install_space)) for p in typesupport), typesupport


def test_install_space_code_wins_over_the_editable_install(install_space: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import vpr_ros.nodes.loop_closure_node as n, vpr_ros_msgs.msg as m\n"
                     "print(n.__file__); print(m.__file__)\n")
    script = f'. "{install_space}/setup.bash"; exec python "{probe}"'
    proc = subprocess.run(["bash", "-c", script], env=_underlay_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    files = proc.stdout.split()
    assert files[0].startswith(str(install_space / "vpr_ros")), files
    assert files[1].startswith(str(install_space / "vpr_ros_msgs")), files


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_model_weights_fail_startup_with_a_message(install_space: Path, tmp_path: Path) -> None:
    # The default model (lite0-gem) with a crafted checkpoint: a message and exit code 2, no traceback,
    # and the payload never runs.
    marker = tmp_path / "MARKER"
    weights = tmp_path / "crafted.pth"
    torch.save({"_conv_stem.weight": _Payload(marker)}, weights)
    yaml = install_space / "vpr_ros" / "share" / "vpr_ros" / "config" / "loop_closure.yaml"
    out = tmp_path / "node.log"
    proc = _ros_run(install_space, ["--ros-args", "--params-file", str(yaml), "-p", f"model.weights:={weights}"],
                    out)
    try:
        rc = proc.wait(timeout=READY_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = out.read_text(errors="replace")
    assert rc == 2, f"rc {rc}:\n{log[-4000:]}"
    assert "startup failed: refused checkpoint" in log and str(weights) in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    assert not marker.exists()
