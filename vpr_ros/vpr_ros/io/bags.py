"""Reading camera frames (and poses) from rosbag2 files (sqlite3 or mcap) with rosbags, no ROS.

``ImageBag`` yields :class:`vpr_ros.core.types.Frame` objects from one image topic
(``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage``), each with the pose of an optional
``nav_msgs/Odometry`` / ``geometry_msgs/PoseStamped`` topic at the image stamp. Corrupt messages
are skipped and counted in :attr:`ImageBag.stats` instead of aborting a long replay. A damaged MCAP
bag (truncated recording, no summary, no ``metadata.yaml``) is read as far as it goes
(:mod:`vpr_ros.io.mcap_salvage`) and the loss is counted; any other storage failure is a
:class:`BagError` that names the file and what to do. With :class:`~vpr_ros.io.frame_sync.GeometryInputs`
each frame also gets its calibration and, paired by stamp, its depth or right image (``frame_sync.py``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import struct
from pathlib import Path
from typing import Any, Iterator

import apsw
import cv2
import numpy as np
import numpy.typing as npt
import yaml
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2.errors import ReaderError
from rosbags.serde import SerdeError

from vpr_ros.core.errors import BagError, InputError
from vpr_ros.core.images import image_from_compressed, image_from_raw
from vpr_ros.core.types import Frame
from vpr_ros.io.frame_sync import CalibrationTrack, FrameAssembler, GeometryInputs
from vpr_ros.io.mcap_salvage import SalvagedMcap
from vpr_ros.io.msgdefs import typestore
from vpr_ros.io.poses import PoseTrack, pose_matrix

__all__ = ["IMAGE_TYPES", "POSE_TYPES", "ReadStats", "ImageBag", "bag_topics"]

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = ("nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseStamped")
# what a damaged message can raise while being deserialised or decoded
_CORRUPT = (AnyReaderError, SerdeError, InputError, ValueError, IndexError, UnicodeDecodeError, cv2.error)
# what damaged storage (metadata.yaml, sqlite pages, mcap records) can raise while opening or reading;
# apsw is the SQLite binding rosbags reads sqlite3 bags with
_STORAGE = (AnyReaderError, ReaderError, OSError, UnicodeDecodeError, ValueError, KeyError, TypeError,
            struct.error, apsw.Error)


@dataclasses.dataclass
class ReadStats:
    """What a pass over the bag saw. ``corrupt_examples`` keeps the first few error messages."""

    images: int = 0
    corrupt: int = 0
    poses: int = 0
    frames_without_pose: int = 0
    corrupt_examples: list[str] = dataclasses.field(default_factory=list)
    #: the bag was damaged and read by the MCAP salvage reader (see lost_bytes / lost_messages)
    salvaged: bool = False
    lost_bytes: int = 0
    lost_messages: int = 0
    salvage_problems: list[str] = dataclasses.field(default_factory=list)
    #: images replayed without their depth / right image (none within the sync tolerance, or damaged)
    frames_without_depth: int = 0
    frames_without_right: int = 0

    def note_corrupt(self, what: str) -> None:
        self.corrupt += 1
        if len(self.corrupt_examples) < 5:
            self.corrupt_examples.append(what)


def _stamp_ns(header: Any, fallback_ns: int) -> int:
    stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    # drivers that leave the header empty still have the recording time
    return stamp if stamp > 0 else int(fallback_ns)


def _expected_counts(path: Path) -> dict[str, int]:
    """topic -> message count from ``metadata.yaml`` (empty when it is missing or unreadable)."""
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return {t["topic_metadata"]["name"]: int(t["message_count"])
                for t in info["topics_with_message_count"]}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return {}


def _salvage(path: Path, why: str) -> SalvagedMcap | None:
    """The readable part of the MCAP files of bag directory ``path``, or None when nothing is."""
    files = sorted(path.glob("*.mcap"))
    if not files:
        return None
    try:
        reader = SalvagedMcap(files, _expected_counts(path))
    except OSError as exc:
        raise BagError(f"cannot read bag {path}: {exc}; check the files are readable") from exc
    if not reader.num_messages:
        return None
    lost = sum(reader.lost_messages.values())
    logger.warning("bag %s: %s; read %d messages from its MCAP files directly, %d bytes unreadable%s",
                   path, why, reader.num_messages, reader.lost_bytes,
                   f", {lost} messages listed in metadata.yaml lost" if lost else "")
    return reader


def _open(path: Path) -> AnyReader | SalvagedMcap:
    if not path.exists():
        raise BagError(f"bag {path} does not exist; give the rosbag2 directory (with metadata.yaml)")
    if not path.is_dir():
        raise BagError(f"bag {path} is not a directory; give the rosbag2 directory that holds "
                       "metadata.yaml and the .mcap or .db3 files")
    if not (path / "metadata.yaml").exists():
        salvaged = _salvage(path, "no metadata.yaml (an interrupted recording?)")
        if salvaged is not None:
            return salvaged
        raise BagError(f"bag {path} has no metadata.yaml; if the recording was interrupted, run "
                       f"'ros2 bag reindex {path}' to rebuild it, or give the rosbag2 directory")
    try:
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    except _STORAGE as exc:
        # a truncated MCAP recording has no footer or summary: rosbags refuses it, we read what is left
        salvaged = _salvage(path, f"rosbags cannot open it ({exc})")
        if salvaged is not None:
            return salvaged
        raise BagError(f"cannot open bag {path}: {exc}; give an intact rosbag2 directory (sqlite3 or "
                       "mcap), or repair it (sqlite3: 'sqlite3 FILE.db3 .recover', mcap: 'mcap "
                       "recover')") from None
    return reader


def _messages(reader: Any, path: Path, connections: list[Any]) -> Iterator[tuple[Any, int, bytes]]:
    """``reader.messages`` with storage failures (damaged sqlite pages, mcap chunks) as BagError."""
    count = 0
    try:
        for item in reader.messages(connections=connections):
            yield item
            count += 1
    except _STORAGE as exc:
        raise BagError(f"bag {path} is damaged after {count} messages ({exc}); repair it (sqlite3: "
                       "'sqlite3 FILE.db3 .recover | sqlite3 NEW.db3', mcap: 'mcap recover') or "
                       "record it again") from None


def bag_topics(path: str | Path) -> dict[str, str]:
    """``{topic: message type}`` of every topic in a rosbag2 directory."""
    reader = _open(Path(path))
    try:
        return {name: info.msgtype or "?" for name, info in reader.topics.items()}
    finally:
        reader.close()


class ImageBag:
    """Frames of one image topic of a rosbag2, with optional poses; use as a context manager.

    Iterating yields ``Frame(stamp_ns, image (H, W, 3) uint8 RGB, pose (4, 4) float64 world_T_body
    or None)`` in recording order; the stamp is the image header stamp (the recording time when the
    header is empty). ``inputs``: also fill ``camera`` and ``depth`` or ``right`` + ``stereo``.
    Raises :class:`BagError` when a topic is missing or has the wrong type.
    """

    def __init__(self, path: str | Path, image_topic: str, pose_topic: str | None = None, *,
                 max_pose_gap_sec: float = 0.5, inputs: GeometryInputs | None = None) -> None:
        self.path = Path(path)
        self.image_topic = image_topic
        self.pose_topic = pose_topic
        self.inputs = inputs
        if inputs is not None and image_topic in inputs.topics():
            raise BagError(f"{image_topic} is given as the image topic and as a geometry input topic; give each once")
        self.stats = ReadStats()
        self._max_pose_gap_sec = max_pose_gap_sec
        self._reader = _open(self.path)
        if isinstance(self._reader, SalvagedMcap):
            self.stats.salvaged = True
            self.stats.lost_bytes = self._reader.lost_bytes
            self.stats.lost_messages = self._reader.lost_messages.get(image_topic, 0)
            self.stats.salvage_problems = list(self._reader.problems)
        try:
            self.topics = {name: info.msgtype or "?" for name, info in self._reader.topics.items()}
            self._image_conns = self._connections(image_topic, IMAGE_TYPES)
            self._pose_conns = self._connections(pose_topic, POSE_TYPES) if pose_topic else []
            side = inputs.topics() if inputs else {}
            self._side_conns = {t: self._connections(t, types) for t, types in side.items()}
        except BagError:
            self._reader.close()
            raise
        self._track: PoseTrack | None = None
        #: 0-based position on the image topic of the frame yielded last (corrupt messages count).
        self.message_index = -1

    def _connections(self, topic: str, allowed: tuple[str, ...]) -> list[Any]:
        if topic not in self.topics:
            listing = ", ".join(f"{t} [{m}]" for t, m in sorted(self.topics.items())) or "none"
            raise BagError(f"topic {topic!r} is not in bag {self.path}; the bag has: {listing}")
        if self.topics[topic] not in allowed:
            raise BagError(f"topic {topic!r} in bag {self.path} has type {self.topics[topic]}; "
                           f"expected one of {', '.join(allowed)}")
        return [c for c in self._reader.connections if c.topic == topic]

    @property
    def num_images(self) -> int:
        """Number of messages on the image topic (for progress bars)."""
        return sum(c.msgcount for c in self._image_conns)

    def __enter__(self) -> "ImageBag":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def pose_track(self) -> PoseTrack | None:
        """All poses of the pose topic (read once), or None when no pose topic was given."""
        if not self._pose_conns:
            return None
        if self._track is None:
            stamps, poses = [], []
            for conn, bag_ns, raw in _messages(self._reader, self.path, self._pose_conns):
                try:
                    msg = self._reader.deserialize(raw, conn.msgtype)
                    pose = msg.pose.pose if conn.msgtype == POSE_TYPES[0] else msg.pose
                    p, q = pose.position, pose.orientation
                    matrix = pose_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
                except _CORRUPT as exc:
                    self.stats.note_corrupt(f"{conn.topic} @ {bag_ns}: {exc}")
                    continue
                if not np.all(np.isfinite(matrix)):
                    self.stats.note_corrupt(f"{conn.topic} @ {bag_ns}: pose is not finite")
                    continue
                stamps.append(_stamp_ns(msg.header, bag_ns))
                poses.append(matrix)
            self.stats.poses = len(poses)
            self._track = PoseTrack(stamps, poses, self._max_pose_gap_sec)
        return self._track

    def _calibration_track(self, topic: str | None) -> CalibrationTrack | None:
        """Every CameraInfo of ``topic`` (a few hundred bytes each: read before the images)."""
        if topic is None:
            return None
        track = CalibrationTrack(topic, self.inputs.rectified)
        for conn, bag_ns, raw in _messages(self._reader, self.path, self._side_conns[topic]):
            try:
                msg = self._reader.deserialize(raw, conn.msgtype)
            except _CORRUPT as exc:
                self.stats.note_corrupt(f"{conn.topic} @ {bag_ns}: {exc}")
                continue
            track.add(_stamp_ns(msg.header, bag_ns), msg)
        if not len(track):
            raise BagError(f"topic {topic} in bag {self.path} has no readable CameraInfo message; give the camera "
                           "info topic of the image topic, or a calibration file")
        return track

    def _assembler(self) -> FrameAssembler | None:
        if self.inputs is None:
            return None
        return FrameAssembler(self.inputs, self._calibration_track(self.inputs.camera_info_topic),
                              self._calibration_track(self.inputs.right_camera_info_topic),
                              self._image, self.stats)

    @staticmethod
    def _image(msgtype: str, msg: Any) -> npt.NDArray[np.uint8]:
        if msgtype == IMAGE_TYPES[0]:
            return image_from_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
        return image_from_compressed(msg.format, msg.data)

    def _decode(self, msgtype: str, raw: bytes) -> tuple[Any, npt.NDArray[np.uint8]]:
        msg = self._reader.deserialize(raw, msgtype)
        return msg, self._image(msgtype, msg)

    def __iter__(self) -> Iterator[Frame]:
        track = self.pose_track()
        assembler = self._assembler()
        streams = {} if assembler is None else assembler.streams
        conns = list(self._image_conns) + [c for t in streams for c in self._side_conns[t]]
        # Images wait here for their depth / right image (frame_sync.py); without inputs none waits.
        pending: collections.deque[tuple[int, int, Frame]] = collections.deque()
        index = -1
        for conn, bag_ns, raw in _messages(self._reader, self.path, conns):
            if conn.topic in streams:
                try:
                    msg = self._reader.deserialize(raw, conn.msgtype)
                except _CORRUPT as exc:
                    self.stats.note_corrupt(f"{conn.topic} @ {bag_ns}: {exc}")
                    continue
                streams[conn.topic].add(_stamp_ns(msg.header, bag_ns), conn.msgtype, msg)
            else:
                index += 1
                frame = self._frame(conn, bag_ns, raw, track)
                if frame is not None:
                    pending.append((index, bag_ns, frame))
            while pending and (assembler is None or assembler.ready(pending[0][2].stamp_ns, pending[0][1], bag_ns)):
                yield self._emit(*pending.popleft(), assembler)
        while pending:
            yield self._emit(*pending.popleft(), assembler)

    def _frame(self, conn: Any, bag_ns: int, raw: bytes, track: PoseTrack | None) -> Frame | None:
        try:
            msg, image = self._decode(conn.msgtype, raw)
        except _CORRUPT as exc:
            self.stats.note_corrupt(f"{conn.topic} @ {bag_ns}: {exc}")
            logger.warning("skipping corrupt message on %s at %d ns: %s", conn.topic, bag_ns, exc)
            return None
        stamp = _stamp_ns(msg.header, bag_ns)
        pose = track.at(stamp) if track is not None else None
        if track is not None and pose is None:
            self.stats.frames_without_pose += 1
        self.stats.images += 1
        return Frame(stamp_ns=stamp, image=image, pose=pose)

    def _emit(self, index: int, bag_ns: int, frame: Frame, assembler: FrameAssembler | None) -> Frame:
        self.message_index = index
        if assembler is None:
            return frame
        return assembler.complete(frame, f"image {index} of {self.image_topic}")
