"""Node-only settings (image transport, QoS, queue, debug image, diagnostics), ROS-free.

They sit beside the core configuration in the same parameter file (config/loop_closure.yaml), so
the offline tools can read that file and skip these keys without importing rclpy.
``vpr_ros.nodes.params`` declares them as ROS parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from vpr_ros.core.config import FieldSpec, check_value, flat_field_specs
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.images import DEFAULT_MAX_PIXELS

__all__ = ["NodeSettings", "NODE_PARAMETERS", "MUTABLE_PARAMETERS", "all_parameter_specs",
           "settings_from_flat", "node_parameter_names"]

RELIABILITIES = ("best_effort", "reliable")


def _spec(name: str, type_: type, default: Any, description: str, lo: float | None = None,
          hi: float | None = None, choices: tuple[str, ...] | None = None) -> FieldSpec:
    return FieldSpec(name, type_, default, description, lo, hi, choices)


#: Node-only parameters, in declaration order (name, type, default, description, range, choices).
NODE_PARAMETERS: tuple[FieldSpec, ...] = (
    _spec("image.compressed", bool, False,
          "Subscribe to sensor_msgs/CompressedImage (jpeg/png) instead of sensor_msgs/Image on "
          "'image'; remap 'image' to the '.../compressed' topic."),
    _spec("image.max_pixels", int, DEFAULT_MAX_PIXELS,
          "Largest image accepted, width x height (default 4096x4096); larger frames are dropped "
          "before decoding (compressed: from the PNG/JPEG header) and counted as "
          "'bad_input.too_large'.", lo=1, hi=1 << 30),
    _spec("qos.reliability", str, "best_effort",
          "Reliability of the image, camera_info, depth, right and odom subscriptions (sensor-data QoS uses "
          "best_effort; use reliable for bag replay without loss).", choices=RELIABILITIES),
    _spec("qos.depth", int, 5, "History depth of the image, camera_info, depth, right and odom subscriptions.",
          lo=1, hi=1000),
    _spec("queue.size", int, 4,
          "Frames waiting for the processing thread; when full the oldest frame is dropped and "
          "counted (diagnostics 'frames_dropped').", lo=1, hi=10000),
    _spec("pipeline", bool, True,
          "Run the model on the next frame while the previous one is searched, verified and published "
          "(two processing threads, one frame between them; same loop closures). false: one thread "
          "does each frame in turn. FAISS, OpenCV and OpenBLAS get 1 thread each either way."),
    _spec("debug.image", bool, False,
          "Publish 'debug_image' (query | match with MNN correspondences) for every loop closure; "
          "can be changed at run time."),
    _spec("diagnostics.period_sec", float, 1.0, "Period of the 'diagnostics' topic, seconds.",
          lo=0.05, hi=3600.0),
    _spec("camera_info.enabled", bool, False,
          "Subscribe to 'camera_info': its calibration gives loops a measured relative pose "
          "(geometry.*), and images must match its size (reported in diagnostics)."),
    _spec("camera_info.rectified", bool, False,
          "The images are rectified (image_rect): use the CameraInfo P matrices without distortion. "
          "False (image_raw): K and D, and for stereo the rectification rotations R."),
    _spec("depth.enabled", bool, False,
          "Subscribe to 'depth' (sensor_msgs/Image 16UC1 mm or 32FC1 m, aligned to the image) for "
          "metric relative poses (PnP); needs camera_info.enabled."),
    _spec("stereo.enabled", bool, False,
          "Subscribe to 'right/image' and 'right/camera_info' (baseline from its P) for metric "
          "relative poses (PnP); needs camera_info.enabled."),
    _spec("sync.tolerance_sec", float, 0.005,
          "A depth or right image belongs to the left image whose stamp is nearest within this, "
          "seconds (0 = exact stamps).", lo=0.0, hi=1.0),
    _spec("sync.max_wait_sec", float, 0.1,
          "How long the processing thread waits for a depth or right image that has not arrived "
          "yet, seconds; the frame then goes on without it (diagnostics 'depth_missing', "
          "'right_missing').", lo=0.0, hi=5.0),
    _spec("sync.buffer_size", int, 10,
          "Depth and right images kept per topic while waiting for their left image.", lo=1, hi=1000),
    _spec("odom.enabled", bool, True,
          "Subscribe to 'odom' (nav_msgs/Odometry) to tag keyframes with poses and drive the "
          "keyframes.min_translation_m / min_rotation_deg gates."),
    _spec("odom.max_age_sec", float, 0.2,
          "An image gets the odometry pose at its stamp, interpolated between the two poses around it "
          "(translation linear, rotation slerp) when both are at most this far, else the nearer one within "
          "this, seconds; none farther (diagnostics 'odom_missing').", lo=0.0, hi=60.0),
    _spec("odom.wait_sec", float, 0.1,
          "How long the processing thread waits for odometry stamped at or after an image that has not "
          "arrived yet (drivers publish it just after the image), seconds; only while odometry flows.",
          lo=0.0, hi=5.0),
    _spec("input.timeout_sec", float, 5.0,
          "Diagnostics warn (and the log says why, naming the image topics that exist) when no image has "
          "arrived this long after start, or since the last one, seconds (0 disables).", lo=0.0, hi=3600.0),
    _spec("input.max_loss_ratio", float, 0.2,
          "Diagnostics warn when more than this share of the recent frames was lost before reaching the "
          "node (header stamp gaps against the camera's period; diagnostics 'input.frames_lost').",
          lo=0.0, hi=1.0),
    _spec("log_throttle_sec", float, 5.0, "Minimum interval between two warnings about bad input, seconds.",
          lo=0.0, hi=3600.0),
    _spec("extractor_factory", str, "",
          "For tests and benchmarks only: 'module:function' returning a descriptor extractor for a "
          "Config, used instead of model.preset. Leave empty."),
    _spec("fleet.enabled", bool, False,
          "Decentralised multi-robot mode (docs/fleet.md): broadcast this robot's keyframe descriptors on "
          "<fleet.topic_prefix>/keyframes, index the other robots', fetch their local features on demand "
          "to verify inter-robot loops, and publish those loops on both robots."),
    _spec("fleet.topic_prefix", str, "/fleet",
          "Namespace shared by every robot of the fleet for the keyframes and loops topics (absolute, "
          "so robots in their own namespaces meet there)."),
    _spec("fleet.bandwidth_bytes_per_sec", int, 1_000_000,
          "Budget of what this robot sends to the fleet, bytes/s (token bucket, 1 s burst): descriptor "
          "batches wait for it; feature answers a peer waits for are sent and delay later batches; "
          "0 = unlimited.", lo=0, hi=1 << 30),
    _spec("fleet.batch_size", int, 10, "Keyframes per KeyframeDescriptors message, at most.", lo=1, hi=10000),
    _spec("fleet.history_depth", int, 1000,
          "Descriptor batches kept for late joiners (transient_local durability): a robot joining "
          "or rejoining receives up to this many of every peer's batches.", lo=1, hi=100000),
    _spec("fleet.request_timeout_sec", float, 2.0,
          "How long verification waits for a peer's local features; a candidate whose features do "
          "not arrive in time is skipped (diagnostics 'fleet.fetch_failures').", lo=0.01, hi=60.0),
    _spec("fleet.feature_cache_mb", float, 512.0,
          "Memory for other robots' local features fetched on demand, MB; beyond it the features fetched "
          "longest ago are dropped and fetched again when needed (diagnostics 'fleet.features_evicted').",
          lo=1.0, hi=1e6),
    _spec("fleet.peer_budget_mb", float, 256.0,
          "Memory one other robot's keyframes may take in this robot's map, MB (descriptor, index copy and "
          "record: 7.3 kB per 768-d keyframe); keyframes beyond it are refused ('fleet.refused.budget').",
          lo=0.001, hi=1e6),
    _spec("fleet.remote_budget_mb", float, 1024.0,
          "Memory all other robots' keyframes together may take, MB; at most map.memory_budget_mb when that "
          "is set; keyframes beyond it are refused ('fleet.refused.budget').", lo=0.001, hi=1e6),
    _spec("fleet.send_descriptors", str, "float16",
          "What this robot's keyframe batches carry: float16 (the float descriptors, plus the 64-byte hashes of "
          "a SelaVPR++ -rerank model) or hash (the hashes only, 64 B per keyframe: every robot needs "
          "index.first_pass hash and fetches float descriptors of its Hamming candidates on demand).",
          choices=("float16", "hash")),
    _spec("tf.wait_sec", float, 1.0,
          "Where tf2_ros is installed: how long the first frame of a camera waits for TF to give the camera's "
          "pose on the robot (frames.base_frame <- the image's frame_id), seconds; without it "
          "frames.base_from_camera is used (docs/relocalization.md, Frames).", lo=0.0, hi=60.0),
    _spec("tf.republish_sec", float, 0.1,
          "With relocalization.publish_tf: re-send the last map -> odom every this many seconds, stamped "
          "that far ahead (as AMCL's transform tolerance), so TF lookups between fixes succeed; 0 sends it "
          "only with each fix.", lo=0.0, hi=60.0),
)

#: Parameters that may change while the node runs.
MUTABLE_PARAMETERS = frozenset({"debug.image"})


@dataclasses.dataclass(frozen=True)
class NodeSettings:
    """Node-only settings (see :data:`NODE_PARAMETERS` for the meaning of each field)."""

    image_compressed: bool = False
    image_max_pixels: int = DEFAULT_MAX_PIXELS
    qos_reliability: str = "best_effort"
    qos_depth: int = 5
    queue_size: int = 4
    pipeline: bool = True
    debug_image: bool = False
    diagnostics_period_sec: float = 1.0
    camera_info_enabled: bool = False
    camera_info_rectified: bool = False
    depth_enabled: bool = False
    stereo_enabled: bool = False
    sync_tolerance_sec: float = 0.005
    sync_max_wait_sec: float = 0.1
    sync_buffer_size: int = 10
    odom_enabled: bool = True
    odom_max_age_sec: float = 0.2
    odom_wait_sec: float = 0.1
    input_timeout_sec: float = 5.0
    input_max_loss_ratio: float = 0.2
    log_throttle_sec: float = 5.0
    extractor_factory: str = ""
    fleet_enabled: bool = False
    fleet_topic_prefix: str = "/fleet"
    fleet_bandwidth_bytes_per_sec: int = 1_000_000
    fleet_batch_size: int = 10
    fleet_history_depth: int = 1000
    fleet_request_timeout_sec: float = 2.0
    fleet_feature_cache_mb: float = 512.0
    fleet_peer_budget_mb: float = 256.0
    fleet_remote_budget_mb: float = 1024.0
    fleet_send_descriptors: str = "float16"
    tf_wait_sec: float = 1.0
    tf_republish_sec: float = 0.1


def all_parameter_specs() -> list[FieldSpec]:
    """Core then node-only parameter specs, in declaration order (docs and tests use this)."""
    return [*flat_field_specs(), *NODE_PARAMETERS]


def _check(spec: FieldSpec, value: Any) -> Any:
    value = check_value(spec, value)
    if spec.name == "extractor_factory" and value and ":" not in value:
        raise ConfigError(f"extractor_factory={value!r} must look like 'module:function'")
    return value


def node_parameter_names() -> frozenset[str]:
    """Dotted names of the node-only parameters (offline tools skip them in parameter files)."""
    return frozenset(spec.name for spec in NODE_PARAMETERS)


def settings_from_flat(values: Mapping[str, Any]) -> NodeSettings:
    """Build :class:`NodeSettings` from dotted node-only names; raises ConfigError naming the key."""
    specs = {s.name: s for s in NODE_PARAMETERS}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ConfigError(f"unknown node parameter(s) {', '.join(unknown)}")
    fields = {name.replace(".", "_"): _check(specs[name], value) for name, value in values.items()}
    settings = NodeSettings(**fields)
    for needs in ("depth", "stereo"):
        if getattr(settings, f"{needs}_enabled") and not settings.camera_info_enabled:
            raise ConfigError(f"{needs}.enabled needs camera_info.enabled: true (the left camera's "
                              "calibration); enable it and publish 'camera_info'")
    return settings
