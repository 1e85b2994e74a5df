"""Checks of what other robots send, ROS-free (fleet mode, docs/fleet.md "Fleet input").

Any participant of the DDS domain can publish on the fleet topics, so every field of a peer's
message is checked before it is used: names, keyframe ids, stamps, model and dimension, encoding,
sizes, NaN/Inf, poses, the shape of fetched local features and the content of a fleet loop. A failed
check raises :class:`Refused`, whose ``reason`` the node counts as ``fleet.refused.<reason>``
before it drops the message; nothing a peer sends may end a callback or the processing thread.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import FleetError

__all__ = ["Refused", "REFUSAL_REASONS", "MAX_NAME", "MAX_KEYFRAME_ID", "MAX_BATCH", "check_name",
           "check_service_name", "check_ids", "stamp_ns", "check_poses", "check_descriptors",
           "check_local_shapes", "check_local", "check_loop_values", "model_local_channels"]

#: Every ``fleet.refused.<reason>`` counter (docs/fleet.md says what each one means).
REFUSAL_REASONS = ("model_mismatch", "malformed", "name", "id", "stamp", "nonfinite", "pose", "shape", "budget",
                   "peers", "loop_target", "loop_sender", "first_pass")
MAX_NAME = 256                  # robot, session and model ids, characters
MAX_SERVICE_NAME = 200          # a fully-qualified ROS service name (DDS adds prefixes and suffixes)
MAX_KEYFRAME_ID = 2**63 - 1     # keyframe ids are stored as signed 64-bit integers (SQLite)
MAX_BATCH = 10_000              # keyframes in one batch (fleet.batch_size allows at most this)
MAX_LOCAL_SIDE = 4096           # height or width of one fetched local feature map
MAX_LOCAL_VALUES = 1 << 26      # values of one fetched local feature map (256 MB as float32)
_NAME = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces or control characters
_SERVICE = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)+")  # fully qualified, no substitutions ({node}, ~)
_NS = 1_000_000_000


class Refused(FleetError):
    """A peer's message fails a check; ``reason`` is one of :data:`REFUSAL_REASONS`."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def check_name(text: object, what: str) -> str:
    """A robot, session or model id: 1..MAX_NAME printable ASCII characters without spaces."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_NAME or not _NAME.fullmatch(text):
        shown = _short(text) if isinstance(text, str) else type(text).__name__
        raise Refused("name", f"{what} {shown} is not 1-{MAX_NAME} printable characters without spaces")
    return text


def check_service_name(text: object) -> str:
    """A features service: a fully-qualified ROS name ('/robot1/fleet/get_features'), at most
    MAX_SERVICE_NAME characters; empty means the peer answers no feature requests."""
    if text == "":
        return text
    if not isinstance(text, str) or len(text) > MAX_SERVICE_NAME or not _SERVICE.fullmatch(text):
        raise Refused("name", f"features service {_short(str(text))} is not a fully-qualified ROS service name "
                      f"of at most {MAX_SERVICE_NAME} characters")
    return text


def check_ids(ids: Sequence[int] | npt.NDArray[np.integer], what: str = "keyframe ids") -> list[int]:
    """Keyframe ids as Python ints: each in [0, 2^63), none repeated (a map key is signed 64-bit)."""
    out = [int(i) for i in ids]
    bad = next((i for i in out if not 0 <= i <= MAX_KEYFRAME_ID), None)
    if bad is not None:
        raise Refused("id", f"{what}: id {bad} is outside [0, 2^63) (a map stores signed 64-bit ids)")
    if len(set(out)) != len(out):
        raise Refused("id", f"{what}: an id is repeated")
    return out


def stamp_ns(sec: int, nanosec: int, what: str = "stamp") -> int:
    """builtin_interfaces/Time fields -> nanoseconds; refused when negative or nanosec >= 1e9."""
    if not 0 <= int(nanosec) < _NS or int(sec) < 0:
        raise Refused("stamp", f"{what} {sec} s {nanosec} ns is negative or has nanosec >= 1e9")
    return int(sec) * _NS + int(nanosec)


def check_poses(poses: npt.NDArray[np.float64] | None, n: int) -> None:
    """(n, 4, 4) poses: each all NaN (no pose) or all finite."""
    if poses is None:
        return
    if poses.shape != (n, 4, 4):
        raise Refused("malformed", f"{poses.size} pose values for {n} keyframes (16 each)")
    none = np.isnan(poses).all(axis=(1, 2))
    if not np.all(none | np.isfinite(poses).all(axis=(1, 2))):
        raise Refused("pose", "a pose is neither all NaN (no pose) nor finite (Inf, or NaN in part of it)")


def check_descriptors(values: npt.NDArray[np.floating]) -> None:
    """(n, dim) descriptors: finite and not all zero (they are L2-normalised on arrival)."""
    if not np.all(np.isfinite(values)):
        raise Refused("nonfinite", "unusable descriptors: NaN or inf")
    if np.any(~values.any(axis=1)):
        raise Refused("nonfinite", "unusable descriptors: one is all zero (no direction)")


def check_local_shapes(ids: Sequence[int], shapes: Sequence[int], size: int, item: int) -> list[tuple[int, ...]]:
    """The structure of a feature answer: 3 positive, bounded values per id, and ``size`` bytes that
    are exactly the sum of the maps (``item`` bytes per value); returns one (h, w, c) per id."""
    if len(shapes) != 3 * len(ids):
        raise Refused("malformed", f"feature answer has {len(shapes)} shape values for {len(ids)} keyframes (3 each)")
    out = [tuple(int(s) for s in shapes[3 * k:3 * k + 3]) for k in range(len(ids))]
    for shape in out:
        h, w, c = shape
        if not (0 < h <= MAX_LOCAL_SIDE and 0 < w <= MAX_LOCAL_SIDE and 0 < c and h * w * c <= MAX_LOCAL_VALUES):
            raise Refused("malformed", f"feature answer has an unusable local shape {shape}")
    expected = sum(int(np.prod(s)) for s in out) * item
    if expected != size:
        raise Refused("malformed", f"feature answer has {size} bytes, its shapes describe {expected}")
    return out


def check_local(local: npt.NDArray[np.floating], channels: int | None, kid: int) -> None:
    """One fetched (h, w, c) map: ``channels`` (the own model's, None: unknown) and finite values."""
    if channels is not None and local.shape[-1] != channels:
        raise Refused("shape", f"features of keyframe {kid} have {local.shape[-1]} channels, this robot's "
                      f"model gives {channels}")
    if not np.all(np.isfinite(local)):
        raise Refused("nonfinite", f"features of keyframe {kid} contain NaN or inf")


def check_loop_values(values: Mapping[str, float]) -> None:
    """The numbers of a fleet loop (score, similarity, pose, covariance): finite; the similarity of
    L2-normalised descriptors within [-1, 1] (float16 rounding aside), the score not negative."""
    for name, value in values.items():
        if not np.all(np.isfinite(np.asarray(value, np.float64))):
            raise Refused("nonfinite", f"loop {name} is NaN or inf")
    if not -1.01 <= float(values.get("global_similarity", 0.0)) <= 1.01 or float(values.get("score", 0.0)) < 0:
        raise Refused("nonfinite", f"loop similarity {values.get('global_similarity')} or score "
                      f"{values.get('score')} is out of range")


def model_local_channels(model: object) -> int | None:
    """Channels of a model's local features, which fetched features must have: from one extraction of
    a grey image (call at startup, before any frame), else its preset's ``spec.local_shape``, else
    None (no local head; fetched features are then checked against own keyframes once there are some)."""
    try:
        local = model.extract([np.full((64, 64, 3), 127, np.uint8)]).local  # type: ignore[attr-defined]
        if local is not None and np.ndim(local) == 4:
            return int(np.shape(local)[-1])
    except Exception:  # noqa: BLE001 - a model that cannot run on a grey image fails on frames, not here
        pass
    shape = getattr(getattr(model, "spec", None), "local_shape", None)
    return int(shape[-1]) if shape else None
