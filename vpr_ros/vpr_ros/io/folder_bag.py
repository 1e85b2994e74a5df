"""A folder of images -> a rosbag2 (MCAP) to replay: ``vpr-ros bag from-images``.

Images are taken in natural name order (``frame_9`` before ``frame_10``; case-insensitive), one
message per image, stamped ``start + k / rate``. Compressed (default): the file's own JPEG/PNG bytes
as ``sensor_msgs/CompressedImage`` (other formats OpenCV reads are re-encoded as PNG, lossless);
raw: decoded to ``rgb8`` ``sensor_msgs/Image`` (all images must have one size). Optional: a
``sensor_msgs/CameraInfo`` per image, same stamp, from a calibration YAML; ``nav_msgs/Odometry``
from a TUM (at the file's own stamps; the replay interpolates at each image) or KITTI (one pose per
image, at its stamp) trajectory.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from rosbags.rosbag2 import Writer, WriterError

from vpr_ros.core.errors import BagError, InputError
from vpr_ros.core.images import compressed_image_size, image_from_compressed, rgb_to_raw
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import STORAGES, _pose_message, camera_info_message, header_message
from vpr_ros.io.calibration import Calibration, load_calibration
from vpr_ros.io.msgdefs import typestore
from vpr_ros.io.pose_files import PoseFile

__all__ = ["IMAGE_SUFFIXES", "image_files", "natural_key", "FolderBag", "write_folder_bag",
           "camera_info_topic"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
NS = 1_000_000_000
#: a TUM pose within this of an image can give it a pose (the replay's pose track, io/poses.py)
POSE_GAP_NS = NS // 2


def natural_key(name: str) -> list[Any]:
    """Sort key: digit runs compare as numbers, text case-insensitively (frame_9 < frame_10)."""
    return [(0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in re.split(r"(\d+)", name) if p]


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder`` (by suffix, hidden files skipped), in natural name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder} is not a directory; give the folder that holds the images")
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    if not files:
        raise InputError(f"image folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)}); give the "
                         "folder that holds the images")
    return sorted(files, key=lambda p: natural_key(p.name))


def camera_info_topic(image_topic: str) -> str:
    """``/camera/image_raw`` -> ``/camera/camera_info`` (the image_transport convention)."""
    return image_topic.rsplit("/", 1)[0] + "/camera_info"


@dataclasses.dataclass(frozen=True)
class FolderBag:
    """What was written: the bag, its topics, the image count, size (first image) and stamps."""

    path: Path
    topics: dict[str, str]
    images: int
    width: int
    height: int
    first_stamp_ns: int
    last_stamp_ns: int
    poses: int


def _read(path: Path, compressed: bool) -> tuple[npt.NDArray[np.uint8], bytes, str]:
    """(RGB image, bytes to store, CompressedImage format) of one file; InputError names the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from None
    head = compressed_image_size(data)
    try:
        if head is not None:
            return image_from_compressed(head[0], data), data, head[0]
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.size == 0:
            raise InputError("OpenCV cannot decode it")
    except InputError as exc:
        raise InputError(f"image {path} is unreadable ({exc}); remove it or replace it") from None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if not compressed:
        return rgb, b"", ""
    ok, png = cv2.imencode(".png", bgr)
    if not ok:  # pragma: no cover - OpenCV encodes what it decoded
        raise InputError(f"image {path} cannot be re-encoded as PNG")
    return rgb, png.tobytes(), "png"


def _camera_info(cal: Calibration, stamp_ns: int, frame_id: str) -> Any:
    cam = cal.camera
    model = "equidistant" if cam.is_fisheye else (cam.distortion_model
                                                  if cam.distortion_model == "rational_polynomial" else "plumb_bob")
    d = cam.D if model != "plumb_bob" or cam.D.size >= 5 else np.r_[cam.D, np.zeros(5 - cam.D.size)]
    return camera_info_message(stamp_ns, frame_id, cam.K, d, cam.width, cam.height, model, cal.R, cal.P)


def _pose_stamps(files: list[Path], stamps: list[int], poses: PoseFile | None) -> list[tuple[int, npt.NDArray]]:
    """(stamp, pose) of each Odometry message; checks the poses fit the images."""
    if poses is None:
        return []
    if poses.stamps_ns is None:  # KITTI: line k is image k
        if len(poses.poses) != len(files):
            raise InputError(f"pose file {poses.path} has {len(poses.poses)} KITTI poses for {len(files)} images "
                             f"in {files[0].parent}; a KITTI file has one pose per image, in name order")
        return list(zip(stamps, poses.poses))
    lo, hi = poses.stamps_ns[0] - POSE_GAP_NS, poses.stamps_ns[-1] + POSE_GAP_NS
    if not any(lo <= s <= hi for s in stamps):
        raise InputError(f"pose file {poses.path}: its TUM stamps ({poses.stamps_ns[0] / NS:.3f} .. "
                         f"{poses.stamps_ns[-1] / NS:.3f} s) meet none of the image stamps ({stamps[0] / NS:.3f} "
                         f".. {stamps[-1] / NS:.3f} s); give --start with the time of the first image")
    return list(zip(poses.stamps_ns, poses.poses))


def write_folder_bag(folder: str | Path, out: str | Path, *, rate_hz: float = 10.0, start_ns: int | None = None,
                     topic: str = "/camera/image_raw", compressed: bool = True,
                     calibration: str | Path | None = None, poses: PoseFile | None = None,
                     frame_id: str = "camera", odom_topic: str = "/odom", storage: str = "mcap") -> FolderBag:
    """Write the images of ``folder`` (and the optional calibration and poses) to a new bag ``out``.

    ``start_ns``: stamp of the first image (default: the first TUM pose's stamp with TUM poses, else 0).
    Raises InputError (folder, image, size, pose count) or BagError (``out`` exists, cannot be written);
    nothing is left at ``out`` when it fails.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise BagError(f"output bag {out} already exists; remove it or give another --out")
    if not rate_hz > 0 or not np.isfinite(rate_hz):
        raise InputError(f"rate {rate_hz} Hz must be a finite number above 0")
    files = image_files(folder)
    cal = load_calibration(calibration) if calibration is not None else None
    if start_ns is None:
        start_ns = poses.stamps_ns[0] if poses is not None and poses.stamps_ns else 0
    stamps = [int(start_ns) + int(round(k * NS / rate_hz)) for k in range(len(files))]
    odometry = _pose_stamps(files, stamps, poses)
    store = typestore()
    img_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    topics = {topic: img_type}
    size: tuple[int, int] | None = None
    try:
        with Writer(out, version=9, storage_plugin=STORAGES[storage]) as writer:  # type: ignore[arg-type]
            img_conn = writer.add_connection(topic, img_type, typestore=store)
            info_conn = odom_conn = None
            if cal is not None:
                topics[camera_info_topic(topic)] = "sensor_msgs/msg/CameraInfo"
                info_conn = writer.add_connection(camera_info_topic(topic), "sensor_msgs/msg/CameraInfo",
                                                  typestore=store)
            if odometry:
                topics[odom_topic] = "nav_msgs/msg/Odometry"
                odom_conn = writer.add_connection(odom_topic, "nav_msgs/msg/Odometry", typestore=store)
                for stamp, pose in odometry:
                    msg = _pose_message(Frame(stamp, np.zeros((1, 1, 3), np.uint8), pose), "odom", frame_id,
                                        "nav_msgs/msg/Odometry")
                    writer.write(odom_conn, stamp, store.serialize_cdr(msg, "nav_msgs/msg/Odometry"))
            for path, stamp in zip(files, stamps):
                rgb, data, fmt = _read(path, compressed)
                h, w = rgb.shape[:2]
                if size is None:
                    size = (w, h)
                elif not compressed and size != (w, h):
                    raise InputError(f"image {path} is {w}x{h} but {files[0]} is {size[0]}x{size[1]}; a raw "
                                     "bag needs one image size (resize them, or leave out --raw)")
                if cal is not None and (cal.camera.width, cal.camera.height) != (w, h):
                    raise InputError(f"image {path} is {w}x{h} but the calibration {calibration} is for "
                                     f"{cal.camera.width}x{cal.camera.height}; give the images' calibration")
                header = header_message(stamp, frame_id)
                if compressed:
                    msg = store.types[img_type](header=header, format=fmt, data=np.frombuffer(data, np.uint8))
                else:
                    rh, rw, step, raw = rgb_to_raw(rgb, "rgb8")
                    msg = store.types[img_type](header=header, height=rh, width=rw, encoding="rgb8",
                                                is_bigendian=0, step=step, data=np.frombuffer(raw, np.uint8))
                writer.write(img_conn, stamp, store.serialize_cdr(msg, img_type))
                if info_conn is not None:
                    writer.write(info_conn, stamp, store.serialize_cdr(
                        _camera_info(cal, stamp, frame_id), "sensor_msgs/msg/CameraInfo"))
    except BaseException as exc:
        shutil.rmtree(out, ignore_errors=True)  # ours: it did not exist before
        if isinstance(exc, WriterError):
            raise BagError(f"cannot write bag {out}: {exc}") from None
        raise
    assert size is not None
    return FolderBag(out, topics, len(files), size[0], size[1], stamps[0], stamps[-1], len(odometry))
