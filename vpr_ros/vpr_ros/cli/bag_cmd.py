"""``vpr-ros bag from-images``: a folder of images (plus calibration and poses) -> a rosbag2 to replay.

Images in natural name order (frame_9 before frame_10), stamped start + k / rate. Writing:
``vpr_ros/io/folder_bag.py``; the steps after it: docs/replay.md, "Try it on your own data".
"""

from __future__ import annotations

import argparse
from typing import Any

from vpr_ros.cli.arg_types import positive_float
from vpr_ros.cli.terminal import say
from vpr_ros.core.errors import InputError
from vpr_ros.io.folder_bag import camera_info_topic, write_folder_bag
from vpr_ros.io.pose_files import POSE_FORMATS, read_pose_file

__all__ = ["add_parser", "run_from_images"]


def _start_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"{text} s is not a time between 0 and 2^31 s")
    return value


def run_from_images(args: argparse.Namespace) -> int:
    poses = read_pose_file(args.poses, args.poses_format) if args.poses else None
    if not args.topic.startswith("/") or args.topic.endswith("/"):
        raise InputError(f"--topic {args.topic!r} is not a topic name; give e.g. /camera/image_raw")
    bag = write_folder_bag(args.dir, args.out, rate_hz=args.rate,
                           start_ns=None if args.start is None else int(round(args.start * 1e9)),
                           topic=args.topic, compressed=not args.raw, calibration=args.camera_info,
                           poses=poses)
    kind = "raw rgb8 Image" if args.raw else "CompressedImage"
    say(f"wrote {bag.path}: {bag.images} images ({bag.width}x{bag.height}, {kind}, name order) on "
        f"{args.topic}, {bag.first_stamp_ns / 1e9:.3f} .. {bag.last_stamp_ns / 1e9:.3f} s at {args.rate:g} Hz")
    if args.camera_info:
        say(f"  CameraInfo from {args.camera_info} on {camera_info_topic(args.topic)}, one per image")
    if poses is not None:
        how = "at the file's stamps" if poses.format == "tum" else "one per image"
        say(f"  {bag.poses} {poses.format.upper()} poses as nav_msgs/Odometry on /odom ({how})")
    extra = (f" --camera-info-topic {camera_info_topic(args.topic)}" if args.camera_info else "") + \
        (" --odom-topic /odom" if poses is not None else "")
    say(f"replay it: vpr-ros replay {bag.path} --image-topic {args.topic}{extra} --out OUT")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bag", help="make a rosbag2 from your own data (images, calibration, poses)",
                              description=__doc__)
    sub = p.add_subparsers(dest="bag_command", required=True, metavar="SUBCOMMAND")
    f = sub.add_parser("from-images", help="a folder of images -> a rosbag2 (MCAP)",
                       description=(__doc__ or "").split("\n\n")[0])
    f.add_argument("dir", help="folder of images (jpg, png, bmp, tif, pgm/ppm, webp), taken in natural "
                               "name order (frame_9 before frame_10)")
    f.add_argument("--out", required=True, help="the bag directory to create (must not exist)")
    f.add_argument("--rate", type=positive_float, default=10.0, metavar="HZ",
                   help="images per second: image k is stamped START + k / HZ (default 10)")
    f.add_argument("--start", type=_start_seconds, metavar="SEC",
                   help="stamp of the first image in seconds (default: the first pose's stamp with a TUM "
                        "--poses file, else 0)")
    f.add_argument("--topic", default="/camera/image_raw", help="image topic (default /camera/image_raw)")
    f.add_argument("--camera-info", metavar="YAML",
                   help="calibration (ROS camera_calibration YAML, or EuRoC/Kimera sensor YAML): "
                        "sensor_msgs/CameraInfo on TOPIC's namespace + /camera_info, one per image, same stamps")
    f.add_argument("--poses", metavar="FILE",
                   help="trajectory as nav_msgs/Odometry on /odom: TUM 't x y z qx qy qz qw' (written at "
                        "its own stamps; the replay interpolates at each image) or KITTI 12 numbers per "
                        "line (one pose per image, in name order; the counts must match)")
    f.add_argument("--poses-format", choices=("auto", *POSE_FORMATS), default="auto",
                   help="format of --poses (default: by its column count, 8 TUM, 12 KITTI)")
    enc = f.add_mutually_exclusive_group()
    enc.add_argument("--compressed", action="store_true", default=True,
                     help="sensor_msgs/CompressedImage with each file's own JPEG/PNG bytes (default; other "
                          "formats are re-encoded as PNG)")
    enc.add_argument("--raw", action="store_true", help="sensor_msgs/Image, decoded to rgb8 (one image size)")
    f.set_defaults(func=run_from_images)
    return p
