"""package.xml against the code: every third-party module imported has a rosdep key or a documented pip pin.

Swarm-SLAM's commonest user reports are build breakage from undeclared dependencies; ``rosdep install``
only installs what package.xml names. The table below maps import names to rosdep keys; a new import
without an entry fails here, and so does a key that package.xml lost.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PKG = REPO / "vpr_ros"

#: import name -> rosdep key (ROS packages share the import name; python3-* keys from rosdistro python.yaml).
ROSDEP = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs", "std_srvs": "std_srvs", "sensor_msgs": "sensor_msgs",
    "geometry_msgs": "geometry_msgs", "nav_msgs": "nav_msgs", "diagnostic_msgs": "diagnostic_msgs",
    "vpr_ros_msgs": "vpr_ros_msgs", "launch": "launch", "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python",
    "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm",
    "visualization_msgs": "visualization_msgs", "scipy": "python3-scipy", "PIL": "python3-pil",
    "tf2_ros": "tf2_ros", "tf2_msgs": "tf2_msgs",  # nodes/tf_frames.py, import-gated (not on PyPI)
}
#: import name -> pip distribution, for modules without a usable rosdep key (the reason is in package.xml).
PIP_ONLY = {"faiss": "faiss-cpu", "torch": "torch", "onnx": "onnx", "onnxruntime": "onnxruntime",
            "rosbags": "rosbags", "apsw": "apsw", "backports": "backports.zstd",
            "evo": "evo", "gtsam": "gtsam", "safetensors": "safetensors", "numba": "numba"}
#: Standard-library modules newer than the Python we run on (tried first, with a fallback import).
NEWER_STDLIB = {"compression"}  # Python 3.14's zstd; io/mcap_salvage.py falls back to backports.zstd
#: Optional GPU backend: never a hard dependency, so it must only be imported inside functions.
OPTIONAL_LAZY = {"tensorrt", "torch_tensorrt"}
#: Optional OCR (text.ocr, models/ocr.py): pinned in requirements/ocr.txt, imported only when a reader is built.
OPTIONAL_LAZY |= {"rapidocr_onnxruntime"}
#: Declared keys no module imports by name, and why they are needed anyway.
DECLARED_WITHOUT_IMPORT = {
    "std_msgs": "LoopClosure carries a std_msgs/Header",
    "geometry_msgs": "LoopClosure carries a geometry_msgs/PoseWithCovariance",
}


def _sources() -> list[Path]:
    return sorted((PKG / "vpr_ros").rglob("*.py")) + sorted((PKG / "launch").glob("*.py"))


def _imports(path: Path) -> dict[str, bool]:
    """Top-level module names imported by ``path`` -> True when one import of it is at module level."""
    tree = ast.parse(path.read_text(), str(path))
    module_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / try-import blocks at top level count as module level
        if isinstance(node, (ast.If, ast.Try)):
            module_level.update(id(n) for n in ast.walk(node))
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            found[top] = found.get(top, False) or id(node) in module_level
    return found


def _third_party() -> dict[str, dict[str, bool]]:
    """module -> {file: imported at module level} over the package and its launch files."""
    out: dict[str, dict[str, bool]] = {}
    for path in _sources():
        for module, top_level in _imports(path).items():
            if module in sys.stdlib_module_names or module in NEWER_STDLIB or module == "vpr_ros" or module == "__future__":
                continue
            out.setdefault(module, {})[str(path.relative_to(REPO))] = top_level
    return out


def _declared(package_xml: Path) -> set[str]:
    root = ET.parse(package_xml).getroot()
    return {el.text.strip() for tag in ("depend", "exec_depend") for el in root.iter(tag) if el.text}


def _xml_comments(package_xml: Path) -> str:
    return " ".join(re.findall(r"<!--(.*?)-->", package_xml.read_text(), flags=re.S))


def test_the_scan_sees_the_imports_it_must_check() -> None:
    # Guards the guard: an AST walk that silently found nothing would make every check below pass.
    found = _third_party()
    for module in ("rclpy", "numpy", "torch", "faiss", "launch_ros", "vpr_ros_msgs", "tensorrt"):
        assert module in found, module
    assert not any(found["tensorrt"].values())  # only imported inside functions today


def test_every_imported_module_is_known() -> None:
    unknown = {m: sorted(files) for m, files in _third_party().items()
               if m not in ROSDEP and m not in PIP_ONLY and m not in OPTIONAL_LAZY}
    assert not unknown, (f"imports with no dependency entry: {unknown}; add an <exec_depend> rosdep key to "
                         "vpr_ros/package.xml (or document a pip-only pin there) and map it in this test")


def test_every_rosdep_module_is_declared_in_package_xml() -> None:
    declared = _declared(PKG / "package.xml")
    missing = {m: ROSDEP[m] for m in _third_party() if m in ROSDEP and ROSDEP[m] not in declared}
    assert not missing, f"package.xml lacks <exec_depend> for imported modules (module: key): {missing}"


def test_pip_only_modules_are_pinned_and_documented() -> None:
    used = {m for m in _third_party() if m in PIP_ONLY}
    base = "\n".join(p.read_text() for p in sorted((REPO / "requirements").glob("*.txt")))
    setup_py = (PKG / "setup.py").read_text()
    comments = _xml_comments(PKG / "package.xml")
    for module in sorted(used):
        dist = PIP_ONLY[module]
        assert re.search(rf"^{re.escape(dist)}==", base, flags=re.M), f"{dist} not pinned in requirements/*.txt"
        assert f'"{dist}' in setup_py, f"{dist} missing from setup.py install_requires"
        assert re.search(rf"\b{re.escape(dist)}\b", comments), f"package.xml does not say {dist} comes from pip"


def test_optional_backends_are_imported_lazily() -> None:
    eager = {m: [f for f, top in files.items() if top] for m, files in _third_party().items() if m in OPTIONAL_LAZY}
    assert not any(eager.values()), f"optional GPU modules imported at module level: {eager}"


def test_no_stale_keys_in_package_xml() -> None:
    imported = {ROSDEP[m] for m in _third_party() if m in ROSDEP}
    stale = _declared(PKG / "package.xml") - imported - set(DECLARED_WITHOUT_IMPORT)
    assert not stale, f"package.xml declares keys nothing imports: {sorted(stale)}; drop them or say why here"


@pytest.mark.parametrize("kind", ["msg", "srv"])
def test_interface_package_declares_every_field_package(kind: str) -> None:
    msgs = REPO / "vpr_ros_msgs"
    used: set[str] = set()
    for path in (msgs / kind).glob(f"*.{kind}"):
        for line in path.read_text().splitlines():
            field = line.split("#", 1)[0].split()
            if field and "/" in field[0]:
                used.add(field[0].split("/")[0])
    declared = _declared(msgs / "package.xml")
    cmake = (msgs / "CMakeLists.txt").read_text()
    for pkg in sorted(used - {"vpr_ros_msgs"}):
        assert pkg in declared, f"vpr_ros_msgs/package.xml lacks <depend>{pkg}</depend>"
        assert f"find_package({pkg} REQUIRED)" in cmake, f"CMakeLists.txt does not find_package({pkg})"
