"""Labels YAML (core/text/labels.py): keyframes by id or pose region, and errors naming file and entry."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.core.errors import InputError
from vpr_ros.core.text.labels import find_keyframe, load_labels, read_labels_yaml
from vpr_ros.core.types import Keyframe


def kf(i: int, robot: str = "a", session: str = "s1", xyz=None) -> Keyframe:
    pose = None
    if xyz is not None:
        pose = np.eye(4)
        pose[:3, 3] = xyz
    return Keyframe(id=i, stamp_ns=i, robot_id=robot, session_id=session,
                    global_=np.ones(4, np.float32) / 2, pose=pose)


@pytest.fixture
def keyframes() -> list[Keyframe]:
    return [kf(0, xyz=(0, 0, 0)), kf(1, xyz=(1, 0, 0)), kf(2, xyz=(5, 0, 3)), kf(3),
            kf(0, "b", "s9", xyz=(0.5, 0, 0))]


def write(tmp_path, text: str):
    p = tmp_path / "labels.yaml"
    p.write_text(text)
    return p


def test_ids_and_regions(tmp_path, keyframes):
    p = write(tmp_path, """
- label: "Room 214"
  keyframe: {robot: a, session: s1, id: 0}
- label: Kitchen
  region: {center: [0.2, 0, 0], radius_m: 1.0}
- label: 214
  keyframe: {id: 3}
- label: Dock
  region: {center: [5, 0], radius_m: 0.1}
- label: Kitchen
  keyframe: {robot: a, session: s1, id: 1}
""")
    got = load_labels(p, keyframes, stamp_ns=7)
    names = {k: [lb.label for lb in v] for k, v in got.items()}
    # region: keyframes 0, 1 and robot b's 0 (within 1 m); 3 has no pose; "Kitchen" once on key 1
    assert names == {0: ["Room 214", "Kitchen"], 1: ["Kitchen"], 4: ["Kitchen"], 3: ["214"], 2: ["Dock"]}
    assert got[0][0].source == "yaml" and got[0][0].stamp_ns == 7


def test_empty_file_gives_no_labels(tmp_path, keyframes):
    assert load_labels(write(tmp_path, "# nothing yet\n"), keyframes) == {}


@pytest.mark.parametrize("text, message", [
    ("label: x\n", "must be a list of entries"),
    ("- label: x\n  keyframe: {id: 1}\n  region: {center: [0, 0], radius_m: 1}\n", "exactly one of"),
    ("- label: ''\n  keyframe: {id: 1}\n", "entry 1: label must be non-empty"),
    ("- label: ok\n  keyframe: {id: 1}\n- label: x\n  keyframe: {id: one}\n",
     "entry 2 \\('x'\\): keyframe id must be an integer"),
    ("- label: x\n  region: {center: [0, 0], radius: 1}\n", "unknown key\\(s\\) \\['radius'\\] in region"),
    ("- label: x\n  region: {center: [0, 0, 0, 0], radius_m: 1}\n", "center must be"),
    ("- label: x\n  region: {center: [0, 0], radius_m: -1}\n", "positive number"),
    ("- label: x\n  keyframe: {id: 1, robt: a}\n", "unknown key"),
    ("- label: ok\n  keyframe: {id: 1\n- label: x\n", "not valid YAML at line 3"),
    ("- just a string\n", "entry 1 is not a mapping"),
])
def test_bad_files_name_file_and_entry(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(InputError, match=message) as err:
        read_labels_yaml(p)
    assert str(p) in str(err.value)


def test_unresolvable_entries(tmp_path, keyframes):
    with pytest.raises(InputError, match=r"entry 1 \('x'\): the map has no keyframe id 9 .*ids 0..3"):
        load_labels(write(tmp_path, "- label: x\n  keyframe: {id: 9}\n"), keyframes)
    with pytest.raises(InputError, match=r"keyframe id 0 is in 2 robot/session pairs .*give robot and session"):
        load_labels(write(tmp_path, "- label: x\n  keyframe: {id: 0}\n"), keyframes)
    with pytest.raises(InputError, match=r"within 0.5 m .*nearest keyframe is 3.00 m away"):
        load_labels(write(tmp_path, "- label: x\n  region: {center: [5, 0, 0], radius_m: 0.5}\n"), keyframes)
    with pytest.raises(InputError, match="cannot be read"):
        load_labels(tmp_path / "missing.yaml", keyframes)


def test_find_keyframe_with_robot_and_session(keyframes):
    assert find_keyframe(keyframes, 0, "b", "s9") == 4
    assert find_keyframe(keyframes, 0, robot="a") == 0
    assert find_keyframe(keyframes, 2) == 2


def test_binary_huge_and_endless_files_are_refused_with_a_message(tmp_path, monkeypatch):
    binary = tmp_path / "labels.yaml"
    binary.write_bytes(b"- label: \xff\xfe\x00 x\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_labels_yaml(binary)
    monkeypatch.setattr("vpr_ros.core.text.labels.MAX_LABELS_BYTES", 1000)
    big = tmp_path / "big.yaml"
    big.write_text("- label: x\n  keyframe: {id: 1}\n" * 100)
    with pytest.raises(InputError, match="larger than"):
        read_labels_yaml(big)
    with pytest.raises(InputError, match="not a regular file"):  # never ends: refused before it is opened
        read_labels_yaml("/dev/zero")
    with pytest.raises(InputError, match="cannot be read"):
        read_labels_yaml(tmp_path)
