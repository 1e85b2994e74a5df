"""Issue 18, files and terminals of the command line, on real maps and bags and the real CLI:

* outputs never replace a user's file unasked (``--force``) and never follow a link (map report,
  map export, replay);
* stored strings (labels, OCR text, robot/session ids, paths) are shown escaped on the terminal;
* a FIFO as the labels file is refused before it is opened; a full disk leaves no output file behind
  (map export, map report), so the rerun works;
* a replay that could use no frame exits 2 and says why.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vpr_ros.cli.replay as replay
from conftest import TinyExtractor, corridor_image
from vpr_ros.cli.main import main
from vpr_ros.cli.map_access import open_map, write_map
from vpr_ros.core.text.place_text import PlaceLabel, TextReading
from vpr_ros.core.types import Frame, Keyframe
from vpr_ros.io.bag_writer import write_image_bag

DIM = 16
MODEL = "synthetic@test"
NS = 1_000_000_000
#: what must never reach a terminal raw: C0 (but newline between lines), DEL, C1, bidi controls
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
EVIL_ROBOT = "r1\x1b]0;pwned\x07"
EVIL_SESSION = "s\u202e1"
EVIL_LABEL = "Room 214\x1b[2J\x1b[H"
EVIL_OCR = "EXIT\x9b31m\u2066"


def keyframes(n: int, robot: str = "r1", session: str = "s1", seed: int = 0) -> list[Keyframe]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        g = rng.standard_normal(DIM).astype(np.float32)
        pose = np.eye(4)
        pose[0, 3] = float(i)
        out.append(Keyframe(id=i, stamp_ns=(i + 1) * NS, robot_id=robot, session_id=session,
                            global_=g / np.linalg.norm(g), local=rng.standard_normal((2, 2, 4)).astype(np.float32),
                            pose=pose, text=(TextReading(EVIL_OCR if i == 1 else "Room 216", 0.9),)))
    return out


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([*map(str, argv)])
    got = capsys.readouterr()
    return rc, got.out, got.err


@pytest.fixture
def small_map(tmp_path) -> Path:
    return write_map(tmp_path / "map", keyframes(40), [], MODEL, DIM)


# --- outputs never replace a user's file, never follow a link -----------------------------------

def test_report_refuses_an_existing_file_and_links_unless_forced(small_map, tmp_path, capsys):
    user = tmp_path / "notes.txt"
    user.write_text("my notes")
    link = tmp_path / "link.html"
    link.symlink_to(user)
    dangling = tmp_path / "dangling.html"
    dangling.symlink_to(tmp_path / "created_through_link.html")
    for out, force in ((user, False), (link, False), (link, True), (dangling, True)):
        rc, _, err = run(capsys, "map", "report", small_map, "--out", out, *(["--force"] if force else []))
        assert rc == 2 and str(out) in err and ("already exists" in err or "symbolic link" in err), err
        assert "--force" in err or "link" in err
    assert user.read_text() == "my notes" and link.is_symlink() and dangling.is_symlink()
    assert not (tmp_path / "created_through_link.html").exists()
    rc, _, err = run(capsys, "map", "report", small_map, "--out", user, "--force")  # asked: replaced
    assert rc == 0, err
    assert user.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.html", "link.html", "map", "notes.txt"]


def test_export_and_replay_never_write_through_a_link(small_map, tmp_path, capsys, monkeypatch):
    out = tmp_path / "export"
    out.mkdir()
    (out / "loops.g2o").symlink_to(tmp_path / "elsewhere.g2o")  # dangling: exists() says no
    rc, _, err = run(capsys, "map", "export", small_map, "--out", out)
    assert rc == 2 and "loops.g2o already exists" in err
    assert not (tmp_path / "elsewhere.g2o").exists() and sorted(os.listdir(out)) == ["loops.g2o"]
    monkeypatch.setattr(replay, "load_extractor", lambda config: TinyExtractor())
    bag = write_image_bag(tmp_path / "bag", [Frame((i + 1) * NS, corridor_image("ref", i)) for i in range(4)],
                          "/cam", encoding="mono8")
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    (tmp_path / "rout").mkdir()
    (tmp_path / "rout" / "metrics.json").symlink_to(victim)
    rc, _, err = run(capsys, "replay", bag, "--image-topic", "/cam", "--no-progress", "--out", tmp_path / "rout")
    assert rc == 2 and "metrics.json already exists" in err, err
    assert victim.read_text() == "precious"


# --- stored strings on the terminal --------------------------------------------------------------

def test_stored_strings_are_escaped_on_every_map_tool(tmp_path, capsys):
    a = tmp_path / "map\x1b[31mA"  # the path is printed too
    kfs = keyframes(6, EVIL_ROBOT, EVIL_SESSION)
    kfs[2].labels = (PlaceLabel(EVIL_LABEL, "user", 1),)
    write_map(a, kfs, [], MODEL, DIM)
    other = keyframes(6, EVIL_ROBOT, EVIL_SESSION, seed=1)  # same ids, other content: renumbered
    write_map(tmp_path / "b", other, [], MODEL, DIM)
    outputs = []
    for argv in (["info", a], ["query", a, "--text", "room 214", "--no-embedding"],
                 ["query", a, "--text", "exit", "--no-embedding"],
                 ["query", a, "--text", "room\x1bc", "--no-embedding", "--json"],
                 ["label", a, "--id", 3, "--label", "Lab\u202e1\x1b[8m"], ["verify", a],
                 ["merge", a, tmp_path / "b", "--out", tmp_path / "c", "--on-collision", "renumber"],
                 ["merge", a, tmp_path / "b", "--out", tmp_path / "d"],  # refused: the error names the robot
                 ["export", a, "--out", tmp_path / "e"], ["report", a, "--out", tmp_path / "r.html"],
                 ["compact", a, "--out", tmp_path / "f"]):
        rc, out, err = run(capsys, "map", *argv)
        assert rc in (0, 2), (argv, err)
        outputs.append((argv, out + err))
    for argv, text in outputs:
        assert not RAW.search(text), (argv, text)
    text = "\n".join(t for _, t in outputs)
    for visible in ("\\x1b]0;pwned\\x07", "s\\u202e1", "\\x1b[31mA", "\\x9b31m\\u2066", "\\x1b[2J",
                    "\\x1b[8m", "\\u202e"):
        assert visible in text, visible
    # the JSON stays the same JSON: the strings decode to what is stored
    query_json = next(t for argv, t in outputs if "--json" in argv)
    doc = json.loads(query_json)
    assert doc["map"] == str(a) and doc["matches"][0]["robot_id"] == EVIL_ROBOT
    assert open_map(a).keyframes[3].labels[0].label == "Lab\u202e1\x1b[8m"  # stored as given


# --- a FIFO as the labels file, a full disk -------------------------------------------------------

def test_label_refuses_a_fifo_before_opening_it(small_map, tmp_path):
    fifo = tmp_path / "labels.yaml"
    os.mkfifo(fifo)
    before = open_map(small_map).keyframes
    proc = subprocess.run([sys.executable, "-m", "vpr_ros.cli.main", "map", "label", str(small_map),
                           "--yaml", str(fifo)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert str(fifo) in proc.stderr and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr
    assert [k.labels for k in open_map(small_map).keyframes] == [k.labels for k in before]


def _limit_file_size(nbytes: int):
    def apply() -> None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def _cli(argv: list[str], limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpr_ros.cli.main", *map(str, argv)], capture_output=True,
                          text=True, timeout=120, preexec_fn=None if limit is None else _limit_file_size(limit))


@pytest.mark.parametrize("command", ["export", "report"])
def test_a_full_disk_leaves_no_output_and_the_rerun_works(small_map, tmp_path, command):
    """A real failing write: the process may write at most 1 kB per file (RLIMIT_FSIZE), as on a full
    disk the writes fail mid-file."""
    out = tmp_path / ("out" if command == "export" else "report.html")
    proc = _cli(["map", command, small_map, "--out", out], limit=1024)
    assert proc.returncode == 2, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["map"]  # no truncated file, no temporary, no folder
    assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr
    assert "File too large" in proc.stderr
    proc = _cli(["map", command, small_map, "--out", out])
    assert proc.returncode == 0, proc.stderr
    if command == "export":
        assert sorted(os.listdir(out)) == ["keyframes.csv", "loops.csv", "loops.g2o"]
        assert len((out / "keyframes.csv").read_text().splitlines()) == 41
    else:
        assert out.read_text(encoding="utf-8").endswith("</html>")


def _unshare_mount() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_mount(), reason="needs unshare -rm (user + mount namespace) for a small tmpfs")
def test_export_on_a_full_tmpfs_leaves_nothing_and_the_rerun_works(tmp_path):
    """ENOSPC itself: a 16 KiB tmpfs; a 300-keyframe export does not fit, a 3-keyframe one then does."""
    big = write_map(tmp_path / "big", keyframes(300), [], MODEL, DIM)
    few = write_map(tmp_path / "few", keyframes(3), [], MODEL, DIM)
    disk = tmp_path / "disk"
    disk.mkdir()
    py = sys.executable
    script = ('mount -t tmpfs -o size=16k tmpfs "$1" && "$2" -m vpr_ros.cli.main map export "$3" --out "$1/out"; '
              'echo "rc=$?"; ls -A "$1"; "$2" -m vpr_ros.cli.main map export "$4" --out "$1/out" && ls -A "$1/out"')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(disk), py, str(big), str(few)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.splitlines()[0] == "rc=2"
    assert proc.stdout.splitlines()[1].startswith("exported 3 keyframes")  # `ls` of the disk printed nothing
    assert proc.stdout.splitlines()[-3:] == ["keyframes.csv", "loops.csv", "loops.g2o"]
    assert "exported 3 keyframes" in proc.stdout


# --- a replay that used no frame ------------------------------------------------------------------

def test_replay_of_a_bag_without_a_usable_frame_fails_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(replay, "load_extractor", lambda config: TinyExtractor())
    frames = [Frame((i + 1) * NS, corridor_image("ref", i)) for i in range(6)]
    good = write_image_bag(tmp_path / "good", frames, "/cam", encoding="rgb8")
    bag = _bag_with_encoding(tmp_path / "bad", frames, "8UC3")  # the same images, an encoding not replayed
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "replay", bag, "--image-topic", "/cam", "--no-progress", "--out", out,
                          "--map-save", tmp_path / "map")
    assert rc == 2, (stdout, err)
    assert "/cam" in err and "6 message(s) unreadable or unusable" in err and "8UC3" in err, err
    assert "Traceback" not in err and "frames," not in stdout
    assert not (tmp_path / "map").exists()  # no empty map saved in its place
    assert not out.exists() or not os.listdir(out)  # nothing written: the rerun is not blocked
    assert run(capsys, "replay", good, "--image-topic", "/cam", "--no-progress", "--out", out)[0] == 0


def _bag_with_encoding(path: Path, frames: list[Frame], encoding: str, topic: str = "/cam") -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from vpr_ros.io.msgdefs import typestore

    store = typestore()
    image = store.types["sensor_msgs/msg/Image"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        for i, frame in enumerate(frames):
            stamp = store.types["builtin_interfaces/msg/Time"](sec=frame.stamp_ns // NS, nanosec=frame.stamp_ns % NS)
            header = store.types["std_msgs/msg/Header"](stamp=stamp, frame_id="cam")
            h, w = frame.image.shape[:2]
            msg = image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=3 * w,
                        data=np.ascontiguousarray(frame.image).reshape(-1))
            writer.write(conn, (i + 1) * NS, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def test_replay_warnings_and_summary_escape_what_the_bag_holds(tmp_path):
    """The bag's topic name reaches the warnings and the error: shown escaped, in a real process."""
    topic = "/cam\x1b]0;x\x07\u202e"
    bag = _bag_with_encoding(tmp_path / "bad", [Frame(NS, corridor_image("ref", 0))], "8UC3", topic)
    driver = ("import sys; sys.path.insert(0, sys.argv[1]); import vpr_ros.cli.replay as r; "
              "from conftest import TinyExtractor; from vpr_ros.cli.main import main; "
              "r.load_extractor = lambda c: TinyExtractor(); sys.exit(main(sys.argv[2:]))")
    proc = subprocess.run([sys.executable, "-c", driver, str(Path(__file__).resolve().parents[1]), "replay", str(bag),
                           "--image-topic", topic, "--no-progress", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "WARNING" in proc.stderr and "/cam\\x1b]0;x\\x07\\u202e" in proc.stderr, proc.stderr
    assert not RAW.search(proc.stdout + proc.stderr), proc.stderr
