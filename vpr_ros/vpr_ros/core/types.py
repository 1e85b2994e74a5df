"""Plain data passed between the stages of the pipeline (numpy fields, shapes documented)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # types.py stays importable by models without pulling in OpenCV
    from vpr_ros.core.geometry.camera import PinholeCamera, StereoRig
    from vpr_ros.core.text.place_text import PlaceLabel, TextReading

__all__ = ["Frame", "Descriptors", "Keyframe", "KeyframeGeometry", "Candidate", "Verification", "LoopClosure"]

F32 = npt.NDArray[np.float32]


@dataclasses.dataclass(frozen=True)
class Frame:
    """One camera frame entering the pipeline.

    image: (H, W, 3) uint8 RGB. pose: optional (4, 4) float64 world_T_body from odometry.
    Geometry inputs (all optional): camera: the calibration of ``image``; depth: (H, W) aligned
    depth, uint16 millimetres (16UC1) or float32 metres (32FC1), 0/NaN = no depth; right: (H, W, 3)
    uint8 RGB right image of a stereo pair described by ``stereo``.
    """

    stamp_ns: int
    image: npt.NDArray[np.uint8]
    pose: npt.NDArray[np.float64] | None = None
    camera: PinholeCamera | None = None
    depth: npt.NDArray[np.generic] | None = None
    right: npt.NDArray[np.uint8] | None = None
    stereo: StereoRig | None = None


@dataclasses.dataclass(frozen=True)
class Descriptors:
    """Model output for a batch of N images.

    global_: (N, D) float32, L2-normalised rows.
    local: (N, h, w, c) float32, L2-normalised per location, or None when the model has no local head.
    hash: (N, B/8) uint8 packed binary codes of hashing models (SelaVPR++ ``-rerank``: (N, 64) for 512
    bits): bit k is 1 where the code's k-th value is >= 0, packed MSB first (``np.packbits`` order, as
    ``faiss.IndexBinaryFlat`` reads it); None for models without a hash.
    """

    global_: F32
    local: F32 | None = None
    hash: npt.NDArray[np.uint8] | None = None

    def __len__(self) -> int:
        return int(self.global_.shape[0])


@dataclasses.dataclass
class KeyframeGeometry:
    """Sparse keypoints of a keyframe for relative-pose estimation (plain arrays, easy to store).

    keypoints: (N, 2) float32 pixels of the original image (distorted, as detected).
    descriptors: (N, B) uint8 (binary) or (N, B) float32 keypoint descriptors.
    points3d: (N, 3) float32 in the keyframe's camera frame, metres; NaN rows have no depth.
    image_hw: (height, width) of the original image. K: (3, 3) float64; D: (k,) float64 distortion
    of ``distortion_model``; T_body_cam: (4, 4) float64 pose of the camera in the body frame.
    depth_sigma_coeff: the points' depth noise, sigma_z = coeff * z^2 (metres, z in metres): stereo
    sigma_disparity / (f * baseline), RGB-D ``geometry.depth_sigma_coeff``, 0 exact (rendered); NaN
    unknown (maps and peers from before the field: the estimator uses ``geometry.depth_sigma_coeff``).
    """

    keypoints: F32
    descriptors: npt.NDArray[np.generic]
    points3d: F32
    image_hw: tuple[int, int]
    K: npt.NDArray[np.float64]
    D: npt.NDArray[np.float64]
    distortion_model: str = "plumb_bob"
    T_body_cam: npt.NDArray[np.float64] = dataclasses.field(default_factory=lambda: np.eye(4))
    depth_sigma_coeff: float = 0.0

    @property
    def has_depth(self) -> bool:
        return bool(np.isfinite(self.points3d[:, 2]).sum()) if len(self.points3d) else False


@dataclasses.dataclass
class Keyframe:
    """A keyframe stored in the map.

    global_: (D,) float32, L2-normalised. local: (h, w, c) float32 or None.
    pose: (4, 4) float64 world_T_body or None. id is unique within (robot_id, session_id) and
    globally unique inside one index (the index assigns it). thumbnail: a small JPEG of the image
    for map tools (``map.thumbnails``), or None. text: what OCR read on it (core/text/place_text.py),
    None until OCR looked at it, () when it found nothing. labels: names given to the place.
    hash: (B/8,) uint8 packed binary code of hashing models (``Descriptors.hash``; SelaVPR++ ``-rerank``:
    64 bytes) or None. Another robot's keyframe received as its hash only (fleet ``send: hash``) has an
    empty ``global_`` (shape (0,)) until its float descriptor is fetched (core/hash_index.py).
    """

    id: int
    stamp_ns: int
    robot_id: str
    session_id: str
    global_: F32
    local: F32 | None = None
    pose: npt.NDArray[np.float64] | None = None
    geometry: KeyframeGeometry | None = None
    thumbnail: bytes | None = None
    text: tuple[TextReading, ...] | None = None
    labels: tuple[PlaceLabel, ...] = ()
    hash: npt.NDArray[np.uint8] | None = None


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A keyframe retrieved by global similarity for a query.

    keyframe_id: the keyframe's key in the detector's map (its position; not the published id).
    rank: 0-based rank by global similarity.
    """

    keyframe_id: int
    similarity: float
    rank: int


@dataclasses.dataclass(frozen=True)
class Verification:
    """Outcome of verifying one candidate.

    score: the value compared against the accept threshold (MNN count, inliers or similarity).
    matches0/matches1: (M, 2) int32 (row, col) grid coordinates of the MNN pairs in the query (0)
    and candidate (1) local maps, kept only when asked for (debug images, geometric checks).
    """

    candidate: Candidate
    local_matches: int
    local_features: int
    geometric_inliers: int
    score: float
    accepted: bool
    method: str
    matches0: npt.NDArray[np.int32] | None = None
    matches1: npt.NDArray[np.int32] | None = None


@dataclasses.dataclass(frozen=True)
class LoopClosure:
    """A verified loop closure: everything vpr_ros_msgs/LoopClosure carries, ROS-free.

    relative_pose: (4, 4) float64 T_match_query (query body in the match body frame) or None;
    covariance: (6, 6) float64 over (x, y, z, rot_x, rot_y, rot_z) of the perturbation
    T = T_est * exp(delta) in the query body frame, or None. translation_scale_known: False for
    monocular poses, whose translation is a unit direction. geometry_method: "pnp", "essential",
    "homography" or "" (no geometry ran); geometry_rejection: why the pose is missing ("" if none).
    """

    query_id: int
    query_stamp_ns: int
    query_robot_id: str
    query_session_id: str
    match_id: int
    match_stamp_ns: int
    match_robot_id: str
    match_session_id: str
    global_similarity: float
    retrieval_rank: int
    verification_method: str
    local_matches: int
    local_features: int
    geometric_inliers: int
    score: float
    consistent_keyframes: int
    descriptor_model: str
    descriptor_dim: int
    relative_pose: npt.NDArray[np.float64] | None = None
    covariance: npt.NDArray[np.float64] | None = None
    translation_scale_known: bool = True
    geometry_method: str = ""
    geometry_rejection: str = ""

    @property
    def relative_pose_valid(self) -> bool:
        return self.relative_pose is not None
