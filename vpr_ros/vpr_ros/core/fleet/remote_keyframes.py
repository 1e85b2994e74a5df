"""Other robots' keyframes on the wire and in the map, ROS-free (fleet mode, docs/fleet.md).

A robot broadcasts its keyframes as batches of float16 global descriptors (:class:`DescriptorBatch`,
the content of vpr_ros_msgs/KeyframeDescriptors); a receiver turns them into "remote" keyframes
(``local`` None) that its detector indexes like any other. When one becomes a promising candidate,
its dense local features are fetched on demand (:func:`encode_locals` / :func:`decode_locals`, the
content of vpr_ros_msgs/GetKeyframeFeatures) and attached to the keyframe before verification.

float16 halves float32's bytes (a quarter of Swarm-SLAM's float64); on L2-normalised descriptors
its rounding changes cosine similarities by ~1e-3, and rows are re-normalised on arrival.

Hashes (issue 23): keyframes of a hashing model (SelaVPR++ ``-rerank``) also carry their packed binary
hash (64 B). A batch sends them beside the float16 descriptors, or instead of them (``send="hash"``:
encoding ``"none"``, 64 B per keyframe instead of 2 x dim); a receiver searching hashes first
(``index.first_pass=hash``) indexes hash-only keyframes with an empty ``global_`` and fetches the float
descriptors of its Hamming candidates on demand (:func:`encode_globals` / :func:`decode_globals`, the
``global_descriptors`` of GetKeyframeFeatures). A receiver searching floats first refuses hash-only
batches, and a hash-first one batches without hashes (``fleet.refused.first_pass``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import FleetError, InputError
from vpr_ros.core.fleet.validation import (MAX_BATCH, Refused, check_descriptors, check_ids, check_local,
                                           check_local_shapes, check_name, check_poses, check_service_name)
from vpr_ros.core.index import l2_normalise
from vpr_ros.core.types import Keyframe, KeyframeGeometry

__all__ = ["WIRE_ENCODING", "NO_DESCRIPTORS", "HASH_ENCODING", "SEND_MODES", "DescriptorBatch", "encode_batch",
           "check_batch", "head", "decode_batch", "encode_locals", "decode_locals", "decode_answer", "encode_geometry",
           "decode_geometry", "check_model", "encode_globals", "decode_globals"]

WIRE_ENCODING = "float16"
NO_DESCRIPTORS = "none"  # a batch of hashes only
#: Packed bits, bit k of a code in byte k // 8 at position 7 - k % 8 (``np.packbits``, core/hash_index.py).
HASH_ENCODING = "packbits_msb"
SEND_MODES = ("float16", "hash")
MAX_HASH_BYTES = 1024
_WIRE = np.dtype("<f2")


@dataclasses.dataclass(frozen=True)
class DescriptorBatch:
    """N keyframes of one robot and session: ids (N,) uint64, stamps_ns (N,) int64,
    descriptors N * dim little-endian float16 bytes (empty with encoding "none"), poses (N, 4, 4) float64
    (NaN: no pose) or None; hashes N * B/8 bytes of packed hashes ("" when none, hash_encoding "")."""

    robot_id: str
    session_id: str
    model_id: str
    dim: int
    ids: npt.NDArray[np.uint64]
    stamps_ns: npt.NDArray[np.int64]
    descriptors: bytes
    poses: npt.NDArray[np.float64] | None = None
    features_service: str = ""
    encoding: str = WIRE_ENCODING
    hashes: bytes = b""
    hash_encoding: str = ""

    @property
    def wire_bytes(self) -> int:
        """Payload bytes (ids, stamps, descriptors, hashes, poses), without the message header."""
        poses = 0 if self.poses is None else self.poses.size * 8
        return len(self.ids) * 16 + len(self.descriptors) + len(self.hashes) + poses


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def check_model(model_id: str, dim: int, own_model_id: str, own_dim: int, what: str) -> None:
    """Raise FleetError when another robot's model or descriptor dimension differs from ours."""
    if model_id != own_model_id or dim != own_dim:
        raise FleetError(f"{what} uses model {model_id!r} ({dim}-d), this robot uses {own_model_id!r} "
                         f"({own_dim}-d); descriptors of different models are not comparable, so they are "
                         "refused: run the same model.preset and weights on every robot of the fleet")


def encode_batch(keyframes: Sequence[Keyframe], model_id: str, dim: int, features_service: str = "",
                 send: str = "float16") -> DescriptorBatch:
    """Own keyframes (one robot and session) -> a batch: float16 descriptors and, where the keyframes have
    them, their hashes; ``send="hash"``: the hashes only. Raises InputError on a mixed batch, or for
    ``send="hash"`` with keyframes without a hash."""
    if not keyframes:
        raise InputError("a descriptor batch needs at least one keyframe")
    robot, session = keyframes[0].robot_id, keyframes[0].session_id
    if any(kf.robot_id != robot or kf.session_id != session for kf in keyframes):
        raise InputError("a descriptor batch holds keyframes of one robot and session only")
    if send not in SEND_MODES:
        raise InputError(f"send={send!r} is not one of {', '.join(SEND_MODES)}")
    hashed = all(kf.hash is not None for kf in keyframes)
    if send == "hash" and not hashed:
        raise InputError("sending hashes only needs keyframes with a hash (a SelaVPR++ -rerank model); this "
                         "model gives none: send float16 descriptors")
    hashes = np.stack([np.asarray(kf.hash, np.uint8) for kf in keyframes]).tobytes() if hashed else b""
    if send == "hash":
        globals_ = np.empty(0, _WIRE)
    else:
        globals_ = np.stack([kf.global_ for kf in keyframes]).astype(_WIRE)
    poses = None
    if any(kf.pose is not None for kf in keyframes):
        poses = np.stack([np.full((4, 4), np.nan) if kf.pose is None else np.asarray(kf.pose, np.float64)
                          for kf in keyframes])
    return DescriptorBatch(robot, session, model_id, dim, np.array([kf.id for kf in keyframes], np.uint64),
                           np.array([kf.stamp_ns for kf in keyframes], np.int64), globals_.tobytes(), poses,
                           features_service, NO_DESCRIPTORS if send == "hash" else WIRE_ENCODING, hashes,
                           HASH_ENCODING if hashes else "")


def check_batch(batch: DescriptorBatch, own_model_id: str, own_dim: int, first_pass: str = "float",
                hash_bytes: int = 0) -> npt.NDArray[np.float16] | None:
    """Every field of a received batch (core/fleet/validation.py); returns its (N, dim) descriptors, or
    None for a batch of hashes only.

    Raises :class:`~vpr_ros.core.fleet.validation.Refused` (a FleetError with a ``reason``): names,
    model and dimension, encoding, ids in [0, 2^63) and unique, stamps, sizes, NaN/Inf, poses, hashes
    (``hash_bytes``: the own model's, 0 unknown), and what the receiver's ``first_pass`` cannot index.
    """
    for name, what in ((batch.robot_id, "robot_id"), (batch.session_id, "session_id"),
                       (batch.model_id, "descriptor_model")):
        check_name(name, what)
    check_service_name(batch.features_service)
    what = f"robot {batch.robot_id!r} (session {batch.session_id!r})"
    try:
        check_model(batch.model_id, batch.dim, own_model_id, own_dim, what)
    except FleetError as exc:
        raise Refused("model_mismatch", str(exc)) from None
    n = len(batch.ids)
    if batch.encoding not in (WIRE_ENCODING, NO_DESCRIPTORS):
        raise Refused("malformed", f"{what} sent descriptors encoded as {_short(batch.encoding)}; only "
                      f"{WIRE_ENCODING!r} (or {NO_DESCRIPTORS!r} with hashes) is known")
    _check_hashes(batch, n, what, first_pass, hash_bytes)
    floats = batch.encoding == WIRE_ENCODING
    if (not 0 < n <= MAX_BATCH or len(batch.stamps_ns) != n
            or len(batch.descriptors) != (n * batch.dim * _WIRE.itemsize if floats else 0)):
        raise Refused("malformed", f"{what} sent a malformed batch: {n} ids (1-{MAX_BATCH}), {len(batch.stamps_ns)} "
                      f"stamps, {len(batch.descriptors)} descriptor bytes for {batch.dim}-d float16")
    check_ids(batch.ids, f"{what} keyframe ids")
    if np.any(np.asarray(batch.stamps_ns, np.int64) < 0):
        raise Refused("stamp", f"{what} sent a negative stamp")
    check_poses(batch.poses, n)
    if not floats:
        return None
    values = np.frombuffer(batch.descriptors, _WIRE).reshape(n, batch.dim)
    check_descriptors(values)
    return values


def _check_hashes(batch: DescriptorBatch, n: int, what: str, first_pass: str, hash_bytes: int) -> None:
    if batch.hashes or batch.hash_encoding:
        size = len(batch.hashes) // n if n else 0
        if (batch.hash_encoding != HASH_ENCODING or not 0 < size <= MAX_HASH_BYTES or size * n != len(batch.hashes)
                or (hash_bytes and size != hash_bytes)):
            raise Refused("malformed", f"{what} sent {len(batch.hashes)} hash bytes encoded as "
                          f"{_short(batch.hash_encoding)} for {n} keyframes; expected {HASH_ENCODING!r}, "
                          f"{hash_bytes or 'B/8'} bytes each")
    elif batch.encoding == NO_DESCRIPTORS:
        raise Refused("malformed", f"{what} sent neither descriptors nor hashes")
    if first_pass == "hash" and not batch.hashes:
        raise Refused("first_pass", f"{what} sent no hashes; this robot searches hashes first (index.first_pass "
                      "hash): run a hashing model (SelaVPR++ -rerank) with the same index.first_pass on every robot")
    if first_pass != "hash" and batch.encoding == NO_DESCRIPTORS:
        raise Refused("first_pass", f"{what} sent hashes only (fleet.send_descriptors hash); this robot searches "
                      "float descriptors: set index.first_pass hash here, or fleet.send_descriptors float16 there")


def head(batch: DescriptorBatch, k: int) -> DescriptorBatch:
    """The first ``k`` keyframes of ``batch`` (what a budget lets in)."""
    if k >= len(batch.ids):
        return batch
    per_hash = len(batch.hashes) // len(batch.ids)
    return dataclasses.replace(batch, ids=batch.ids[:k], stamps_ns=batch.stamps_ns[:k],
                               descriptors=batch.descriptors[:k * batch.dim * _WIRE.itemsize],
                               poses=None if batch.poses is None else batch.poses[:k],
                               hashes=batch.hashes[:k * per_hash])


def decode_batch(batch: DescriptorBatch, own_model_id: str, own_dim: int, first_pass: str = "float",
                 hash_bytes: int = 0) -> list[Keyframe]:
    """A received batch -> remote keyframes (``local`` None, globals re-normalised float32, ``hash`` where
    sent; a batch of hashes only gives keyframes with an empty ``global_``).

    Raises FleetError (:class:`Refused`, with its reason) when the model differs or any field is
    unusable (:func:`check_batch`).
    """
    values = check_batch(batch, own_model_id, own_dim, first_pass, hash_bytes)
    n = len(batch.ids)
    try:
        globals_ = l2_normalise(values) if values is not None else [np.empty(0, np.float32)] * n
    except InputError as exc:
        raise Refused("nonfinite", f"robot {batch.robot_id!r} sent unusable descriptors: {exc}") from None
    codes = np.frombuffer(batch.hashes, np.uint8).reshape(n, -1).copy() if batch.hashes else [None] * n
    poses = batch.poses
    return [Keyframe(id=int(i), stamp_ns=int(t), robot_id=batch.robot_id, session_id=batch.session_id,
                     global_=g, pose=None if poses is None or not np.all(np.isfinite(poses[k])) else poses[k].copy(),
                     hash=codes[k])
            for k, (i, t, g) in enumerate(zip(batch.ids, batch.stamps_ns, globals_))]


def encode_globals(keyframes: Iterable[Keyframe]) -> bytes:
    """The float descriptors of ``keyframes`` as float16 bytes, in order (GetKeyframeFeatures
    ``global_descriptors``: what a hash-first receiver fetches for its Hamming candidates)."""
    rows = [np.asarray(kf.global_, np.float32) for kf in keyframes]
    return np.stack(rows).astype(_WIRE).tobytes() if rows else b""


def decode_globals(ids: Sequence[int], data: bytes, dim: int) -> dict[int, npt.NDArray[np.float32]]:
    """The inverse of :func:`encode_globals` for the answered ``ids``: id -> (dim,) float32, L2-normalised.
    Raises Refused when the bytes do not fit or a descriptor is unusable (NaN/Inf, all zero)."""
    if len(data) != len(ids) * dim * _WIRE.itemsize:
        raise Refused("malformed", f"float descriptor answer has {len(data)} bytes for {len(ids)} keyframes of "
                      f"{dim} float16 values")
    if not ids:
        return {}
    values = np.frombuffer(data, _WIRE).reshape(len(ids), dim)
    check_descriptors(values)
    return {int(i): g for i, g in zip(ids, l2_normalise(values))}


def encode_locals(keyframes: Iterable[Keyframe]) -> tuple[list[int], list[int], bytes]:
    """Keyframes with local features -> (ids, flat (h, w, c) shapes, float16 bytes); others skipped."""
    ids: list[int] = []
    shapes: list[int] = []
    chunks: list[bytes] = []
    for kf in keyframes:
        if kf.local is None:
            continue
        ids.append(int(kf.id))
        shapes.extend(int(s) for s in kf.local.shape)
        chunks.append(np.ascontiguousarray(kf.local, np.float32).astype(_WIRE).tobytes())
    return ids, shapes, b"".join(chunks)


def decode_locals(ids: Sequence[int], shapes: Sequence[int], data: bytes) -> dict[int, npt.NDArray[np.float32]]:
    """The inverse of :func:`encode_locals`: id -> (h, w, c) float32; raises FleetError if malformed."""
    if len(shapes) != 3 * len(ids):
        raise FleetError(f"feature answer has {len(shapes)} shape values for {len(ids)} keyframes (3 each)")
    out: dict[int, npt.NDArray[np.float32]] = {}
    offset = 0
    buf = memoryview(data)
    for k, kid in enumerate(ids):
        shape = tuple(int(s) for s in shapes[3 * k:3 * k + 3])
        size = int(np.prod(shape)) * _WIRE.itemsize
        if offset + size > len(buf):
            raise FleetError(f"feature answer is truncated at keyframe {kid}: {len(buf)} bytes")
        local = np.frombuffer(buf[offset:offset + size], _WIRE).reshape(shape).astype(np.float32)
        if not np.all(np.isfinite(local)):
            raise FleetError(f"feature answer for keyframe {kid} contains NaN or inf")
        out[int(kid)] = local
        offset += size
    if offset != len(buf):
        raise FleetError(f"feature answer has {len(buf) - offset} bytes more than its shapes describe")
    return out


def decode_answer(ids: Sequence[int], shapes: Sequence[int], data: bytes, requested: Sequence[int],
                  channels: int | None) -> tuple[dict[int, npt.NDArray[np.float32]], list[Refused]]:
    """A peer's feature answer, checked (core/fleet/validation.py): id -> (h, w, c) float32 of the
    keyframes whose features are usable, and one Refused per keyframe that is not (an id not asked
    for or repeated, another channel count than the own model's ``channels``, NaN/Inf).

    Raises Refused when the answer as a whole cannot be read (ids, shapes and bytes disagree).
    """
    ids = check_ids(ids, "feature answer ids")
    maps = check_local_shapes(ids, shapes, len(data), _WIRE.itemsize)
    wanted = set(int(i) for i in requested)
    out: dict[int, npt.NDArray[np.float32]] = {}
    refused: list[Refused] = []
    offset = 0
    for kid, shape in zip(ids, maps):
        size = int(np.prod(shape)) * _WIRE.itemsize
        chunk, offset = data[offset:offset + size], offset + size
        try:
            if kid not in wanted:
                raise Refused("id", f"feature answer holds keyframe {kid}, which was not asked for")
            local = np.frombuffer(chunk, _WIRE).reshape(shape).astype(np.float32)
            check_local(local, channels, kid)
        except Refused as exc:
            refused.append(exc)
            continue
        out[kid] = local
    return out, refused


_KEYPOINT_DESCRIPTORS = {"uint8": np.dtype("u1"), "float32": np.dtype("<f4")}


def encode_geometry(geometry: KeyframeGeometry | None) -> dict[str, Any]:
    """A keyframe's keypoints -> the fields of vpr_ros_msgs/KeyframeGeometry ({"valid": False} for None)."""
    if geometry is None:
        return {"valid": False}
    desc = np.asarray(geometry.descriptors)
    if desc.dtype.name not in _KEYPOINT_DESCRIPTORS or desc.ndim != 2:
        raise InputError(f"keypoint descriptors must be (N, B) uint8 or float32, got {desc.dtype} {desc.shape}")
    return {"valid": True, "image_height": int(geometry.image_hw[0]), "image_width": int(geometry.image_hw[1]),
            "keypoints": np.asarray(geometry.keypoints, np.float32).reshape(-1),
            "descriptor_type": desc.dtype.name, "descriptor_size": int(desc.shape[1]),
            "descriptors": np.ascontiguousarray(desc, _KEYPOINT_DESCRIPTORS[desc.dtype.name]).tobytes(),
            "points3d": np.asarray(geometry.points3d, np.float32).reshape(-1),
            "k": np.asarray(geometry.K, np.float64).reshape(-1), "d": np.asarray(geometry.D, np.float64).reshape(-1),
            "distortion_model": geometry.distortion_model,
            "t_body_cam": np.asarray(geometry.T_body_cam, np.float64).reshape(-1),
            # the points' depth noise; -1: unknown (NaN here), what the message's default says
            "depth_sigma_coeff": float(geometry.depth_sigma_coeff) if np.isfinite(geometry.depth_sigma_coeff) else -1.0}


def decode_geometry(fields: Mapping[str, Any]) -> KeyframeGeometry | None:
    """The inverse of :func:`encode_geometry`; None when not valid; raises FleetError if malformed."""
    if not fields.get("valid"):
        return None
    kp = np.asarray(fields["keypoints"], np.float32)
    n, size = len(kp) // 2, int(fields["descriptor_size"])
    dtype = _KEYPOINT_DESCRIPTORS.get(str(fields["descriptor_type"]))
    pts = np.asarray(fields["points3d"], np.float32)
    k, t = np.asarray(fields["k"], np.float64), np.asarray(fields["t_body_cam"], np.float64)
    data = bytes(fields["descriptors"])
    noise = float(fields.get("depth_sigma_coeff", -1.0))  # absent (an older sender's fields) or < 0: unknown
    if not all(np.all(np.isfinite(v)) for v in (kp, k, t, np.asarray(fields["d"], np.float64))) or noise == np.inf:
        raise Refused("nonfinite", "keyframe geometry has NaN or inf keypoints, calibration or depth noise")
    if (dtype is None or len(kp) % 2 or len(pts) != 3 * n or len(data) != n * size * dtype.itemsize
            or k.size != 9 or t.size != 16):
        raise FleetError(f"malformed keyframe geometry: {len(kp)} keypoint values, {len(pts)} point values, "
                         f"{len(data)} descriptor bytes of {fields['descriptor_type']!r} x {size}")
    return KeyframeGeometry(keypoints=kp.reshape(n, 2), descriptors=np.frombuffer(data, dtype).reshape(n, size).copy(),
                            points3d=pts.reshape(n, 3),
                            image_hw=(int(fields["image_height"]), int(fields["image_width"])),
                            K=k.reshape(3, 3), D=np.asarray(fields["d"], np.float64).copy(),
                            distortion_model=str(fields["distortion_model"]), T_body_cam=t.reshape(4, 4),
                            depth_sigma_coeff=noise if noise >= 0.0 else float("nan"))
