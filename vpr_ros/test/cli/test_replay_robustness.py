"""`vpr-ros replay` under hostile but fair inputs: every failure is exit 2 with a message naming the
input, checked before the first frame, and nothing the user owns is written or overwritten."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

import vpr_ros.cli.replay as replay
from conftest import TinyExtractor, corridor_image
from vpr_ros.cli.main import main
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_image_bag
from vpr_ros.io.msgdefs import typestore

NS = 1_000_000_000
N = 12
TOPIC = "/cam"
TEST_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    monkeypatch.setattr(replay, "load_extractor", lambda config: TinyExtractor())


@pytest.fixture(scope="module")
def frames():
    return [Frame((i + 1) * NS, corridor_image("ref", i)) for i in range(N)]


@pytest.fixture
def bag(tmp_path, frames):
    return write_image_bag(tmp_path / "bag", frames, TOPIC, encoding="mono8", storage="sqlite3")


def _replay(bag, out, *extra):
    return main(["replay", str(bag), "--image-topic", TOPIC, "--out", str(out), "--no-progress", *extra])


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def saved_map(tmp_path, bag):
    assert _replay(bag, tmp_path / "first", "--map-save", str(tmp_path / "map")) == 0
    return tmp_path / "map"


def _fails(capsys, *needles):
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in captured.err, captured.err
    assert "frames," not in captured.out  # no summary: nothing was replayed
    return captured.err


def test_out_that_is_a_file_fails_before_the_map_is_replaced(tmp_path, bag, saved_map, capsys):
    before = _snapshot(saved_map)
    (tmp_path / "out").write_text("my notes")
    assert _replay(bag, tmp_path / "out", "--map-save", str(saved_map)) == 2
    _fails(capsys, "output folder", str(tmp_path / "out"), "is a file")
    assert (tmp_path / "out").read_text() == "my notes"
    assert _snapshot(saved_map) == before


def test_out_below_a_file_cannot_be_created(tmp_path, bag, capsys):
    (tmp_path / "file").write_text("x")
    assert _replay(bag, tmp_path / "file" / "out") == 2
    _fails(capsys, str(tmp_path / "file" / "out"), "cannot be created")


def test_out_with_an_existing_result_bag_fails_first(tmp_path, bag, monkeypatch, capsys):
    monkeypatch.setattr(replay, "load_extractor", lambda config: pytest.fail("model loaded"))
    (tmp_path / "out" / "loop_closures").mkdir(parents=True)
    assert _replay(bag, tmp_path / "out") == 2
    _fails(capsys, "loop_closures already exists")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["loop_closures"]


@pytest.mark.parametrize("target", ["dot", "file", "foreign", "bag", "out"])
def test_map_save_targets_that_are_not_ours_are_refused_untouched(tmp_path, bag, monkeypatch, capsys,
                                                                   target):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpeg")
    (tmp_path / "notes.txt").write_text("keep me")
    path = {"dot": ".", "file": str(tmp_path / "notes.txt"), "foreign": str(foreign), "bag": str(bag),
            "out": str(tmp_path / "out")}[target]
    monkeypatch.chdir(foreign if target == "dot" else tmp_path)
    before = _snapshot(tmp_path)
    assert _replay(bag, tmp_path / "out", "--map-save", path) == 2
    # the message names the path (ours, or the store's own refusal once it has one)
    err = _fails(capsys, path)
    assert "current directory" in err if target == "dot" else "map" in err
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_map_load_that_does_not_exist_fails_before_the_model(tmp_path, bag, monkeypatch, capsys):
    monkeypatch.setattr(replay, "load_extractor", lambda config: pytest.fail("model loaded"))
    assert _replay(bag, tmp_path / "out", "--map-load", str(tmp_path / "nomap")) == 2
    _fails(capsys, "--map-load", "does not exist")
    assert not (tmp_path / "out").exists()


def _bag_with_header_stamps(path: Path, stamps_ns: list[int]) -> Path:
    """Record times increase; the image header stamps are ``stamps_ns`` (as a driver may send)."""
    store = typestore()
    image = store.types["sensor_msgs/msg/Image"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        for i, stamp in enumerate(stamps_ns):
            grey = np.ascontiguousarray(corridor_image("ref", i)[..., 1])
            stamp_msg = store.types["builtin_interfaces/msg/Time"](sec=stamp // NS, nanosec=stamp % NS)
            header = store.types["std_msgs/msg/Header"](stamp=stamp_msg, frame_id="cam")
            msg = image(header=header, height=grey.shape[0], width=grey.shape[1], encoding="mono8",
                        is_bigendian=0, step=grey.shape[1], data=grey.reshape(-1))
            writer.write(conn, (i + 1) * NS, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def test_a_stamp_going_back_1ns_is_skipped_and_counted(tmp_path, capsys):
    stamps = [(i + 1) * NS for i in range(N)]
    stamps[5] = stamps[4] - 1  # one frame 1 ns older than the previous one
    bag = _bag_with_header_stamps(tmp_path / "bag", stamps)
    assert _replay(bag, tmp_path / "out") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["stamps_backwards_skipped"] == 1 and metrics["num_frames"] == N - 1
    assert "message 5" in metrics["stamps_backwards_examples"][0]
    assert "skipped 1 frames whose stamp went backwards" in capsys.readouterr().out


def test_stamp_going_back_can_abort_with_a_message(tmp_path, capsys):
    stamps = [(i + 1) * NS for i in range(4)]
    stamps[2] = stamps[1] - 1
    bag = _bag_with_header_stamps(tmp_path / "bag", stamps)
    assert _replay(bag, tmp_path / "out", "--on-stamp-backwards", "abort") == 2
    assert "message 2" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_truncated_mcap_replays_what_is_left_and_reports_the_loss(tmp_path, frames, capsys):
    bag = write_image_bag(tmp_path / "bag", frames, TOPIC, encoding="mono8", storage="mcap")
    data_file = next(bag.glob("*.mcap"))
    data = data_file.read_bytes()
    data_file.write_bytes(data[:int(len(data) * 0.9)])
    assert _replay(bag, tmp_path / "out") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["bag_salvaged"] is True
    assert 0 < metrics["num_frames"] < N and metrics["bag_lost_messages"] == N - metrics["num_frames"]
    assert metrics["num_frames"] >= 0.8 * N  # 90% of the bytes hold most of the frames
    assert "the bag was damaged" in capsys.readouterr().out


def test_sqlite_bag_with_corrupted_pages_is_a_clear_error(tmp_path, bag, capsys):
    db = next(bag.glob("*.db3"))
    raw = bytearray(db.read_bytes())
    start = len(raw) // 2 // 4096 * 4096
    raw[start:start + 4096] = np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()
    db.write_bytes(bytes(raw))
    assert _replay(bag, tmp_path / "out", "--map-save", str(tmp_path / "map")) == 2
    _fails(capsys, f"bag {bag}", "damaged", ".recover")
    assert not (tmp_path / "map").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["missing", "binary", "directory"])
def test_sqlite_bag_with_bad_metadata_is_a_clear_error(tmp_path, bag, capsys, damage):
    meta = bag / "metadata.yaml"
    meta.unlink()
    if damage == "binary":
        meta.write_bytes(bytes(range(256)) * 4)
    elif damage == "directory":  # unreadable as a file
        meta.mkdir()
    assert _replay(bag, tmp_path / "out") == 2
    _fails(capsys, f"bag {bag}", "metadata.yaml" if damage == "missing" else "cannot open")


def test_mcap_bag_without_metadata_is_read_from_its_files(tmp_path, frames):
    bag = write_image_bag(tmp_path / "bag", frames, TOPIC, encoding="mono8", storage="mcap")
    (bag / "metadata.yaml").unlink()  # an interrupted `ros2 bag record` leaves none
    assert _replay(bag, tmp_path / "out") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_frames"] == N and metrics["bag_salvaged"] and metrics["bag_unreadable_bytes"] == 0


def test_binary_config_file_is_a_config_error(tmp_path, bag, capsys):
    (tmp_path / "conf.yaml").write_bytes(bytes(range(256)) * 8)
    assert _replay(bag, tmp_path / "out", "--config", str(tmp_path / "conf.yaml")) == 2
    _fails(capsys, "conf.yaml", "not text")


def test_bad_override_yaml_is_a_config_error(tmp_path, bag, capsys):
    assert _replay(bag, tmp_path / "out", "--set", "index.top_k=[1") == 2
    _fails(capsys, "index.top_k=[1", "not valid YAML")


def test_random_bytes_as_ground_truth_fail_before_the_model(tmp_path, bag, monkeypatch, capsys):
    monkeypatch.setattr(replay, "load_extractor", lambda config: pytest.fail("model loaded"))
    (tmp_path / "gt.npy").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, np.uint8).tobytes())
    assert _replay(bag, tmp_path / "out", "--gt-npy", str(tmp_path / "gt.npy"),
                   "--gt-query-offset", "3") == 2
    _fails(capsys, "gt.npy", "not a VPR-Bench")


@pytest.mark.parametrize("args", [["--gt-radius-m", "0"], ["--gt-radius-m", "nan"],
                                  ["--gt-query-offset", "-1"], ["--on-stamp-backwards", "reverse"]])
def test_bad_numeric_arguments_are_usage_errors(tmp_path, bag, capsys, args):
    with pytest.raises(SystemExit) as exc:
        _replay(bag, tmp_path / "out", *args)
    assert exc.value.code == 2 and args[0] in capsys.readouterr().err


def _netns_mount_available() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
import vpr_ros.cli.replay as replay
from conftest import TinyExtractor
from vpr_ros.cli.main import main
replay.load_extractor = lambda config: TinyExtractor()
sys.exit(main(sys.argv[2:]))
"""


def _replay_with_small_mount(mount: Path, size: str, read_only: bool,
                             argv: list[str]) -> subprocess.CompletedProcess:
    """Run the real CLI with a tmpfs at ``mount`` (a private mount namespace: no root needed)."""
    mount.mkdir()
    script = f'mount -t tmpfs -o size={size} tmpfs "{mount}"'
    if read_only:
        script += f' && mount -o remount,ro "{mount}"'
    cmd = ["unshare", "-rm", "sh", "-c", script + ' && exec "$@"', "sh", sys.executable, "-c", DRIVER,
           str(TEST_DIR), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not _netns_mount_available(), reason="needs unshare -rm (user + mount namespace)")
def test_read_only_out_fails_before_the_replay(tmp_path, bag):
    ro = tmp_path / "ro"
    proc = _replay_with_small_mount(ro, "64k", True, [
        "replay", str(bag), "--image-topic", TOPIC, "--no-progress", "--out", str(ro / "out")])
    assert proc.returncode == 2, proc.stderr
    assert "not writable" in proc.stderr and "Read-only" in proc.stderr
    assert "Traceback" not in proc.stderr and "frames," not in proc.stdout


@pytest.mark.skipif(not _netns_mount_available(), reason="needs unshare -rm (user + mount namespace)")
def test_map_save_on_a_full_disk_is_a_clear_error(tmp_path, bag):
    small = tmp_path / "small"
    proc = _replay_with_small_mount(small, "16k", False, [
        "replay", str(bag), "--image-topic", TOPIC, "--no-progress", "--out", str(tmp_path / "out"),
        "--map-save", str(small / "map")])
    assert proc.returncode == 2, proc.stderr
    assert str(small / "map") in proc.stderr and "Traceback" not in proc.stderr
