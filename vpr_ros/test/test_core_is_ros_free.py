"""The core must stay importable without ROS: no rclpy, *_msgs, launch or torch in vpr_ros/core."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "vpr_ros" / "core"
FORBIDDEN_ROOTS = {"rclpy", "launch", "launch_ros", "rosidl_runtime_py", "torch", "ament_index_python"}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_core_imports_no_ros():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 8
    offenders = []
    for path in files:
        for name in _imports(path):
            root = name.split(".")[0]
            if root in FORBIDDEN_ROOTS or root.endswith("_msgs") or root.endswith("_srvs"):
                offenders.append(f"{path.relative_to(CORE)}: {name}")
    assert not offenders, offenders


def test_checker_catches_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import rclpy\nfrom sensor_msgs.msg import Image\n")
    assert list(_imports(bad)) == ["rclpy", "sensor_msgs.msg"]
