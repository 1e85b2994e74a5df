"""Geometry building blocks on synthetic data: grid cells <-> pixels, cell-restricted keypoint
matching, essential matrix (unit translation), pure rotation, RGB-D points."""

import cv2
import numpy as np
import pytest
import torch

from vpr_ros.core.geometry.camera import PinholeCamera
from vpr_ros.core.config import GeometryConfig
from vpr_ros.core.geometry.correspondences import grid_layout, match_keypoints_in_cells
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.geometry.relative_pose import estimate_essential, relative_pose
from vpr_ros.core.geometry.keyframe_geometry import depth_points
from vpr_ros.core.types import KeyframeGeometry
from vpr_ros.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_images

K = np.array([[450.0, 0, 376], [0, 450.0, 240], [0, 0, 1]])
HW = (480, 752)


@pytest.mark.parametrize("keep_aspect, size", [(False, (322, 322)), (True, (322, 322)), (True, (224, 224))])
@pytest.mark.parametrize("image_hw", [(480, 752), (120, 160), (500, 300)])
def test_cell_centres_land_on_the_pixels_the_network_saw(keep_aspect, size, image_hw):
    # An image whose red channel encodes x and green encodes y: after the real preprocessing, the
    # network input at a cell centre must show the colour of the pixel cell_centres() names.
    h, w = image_hw
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.stack([xs * 255.0 / (w - 1), ys * 255.0 / (h - 1), np.zeros_like(xs, float)], axis=2)
    x = preprocess_images([img.round().astype(np.uint8)], "imagenet-bilinear", size, 32, keep_aspect)[0]
    rgb = x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    in_h, in_w = x.shape[1:]
    grid = (in_h // 16, in_w // 16)
    layout = grid_layout(image_hw, grid, size, 32, keep_aspect)
    flat = np.arange(grid[0] * grid[1])
    px = layout.cell_centres(flat)
    rows, cols = np.divmod(flat, grid[1])
    seen = rgb[:2, rows * 16 + 8, cols * 16 + 8].numpy().T * 255  # input pixel just right/below the centre
    half_px = 0.5 * np.array([w / layout.resized_hw[1], h / layout.resized_hw[0]])  # that offset in image px
    expected = (px + half_px) * [255.0 / (w - 1), 255.0 / (h - 1)]
    assert np.abs(seen - expected).max() < 255.0 / min(h, w) + 1.0
    # cells_of inverts cell_centres
    r, c = layout.cells_of(px)
    assert (r * grid[1] + c).tolist() == flat.tolist()


def test_keep_aspect_layout_needs_the_input_size():
    with pytest.raises(ConfigError, match="input_size"):
        grid_layout((480, 640), (10, 14), None, 32, True)
    layout = grid_layout((480, 640), (10, 13), (322, 322), 32, True)  # cropped sides
    r, _ = layout.cells_of([[0.0, 240.0], [639.0, 240.0]])
    assert r.tolist() == [-1, -1]  # the crop removed the image's left and right edges


def test_keypoints_match_only_inside_mnn_cells():
    rng = np.random.default_rng(0)
    layout = grid_layout((100, 100), (10, 10))
    kp0 = np.array([[15, 15], [55, 55], [85, 15]], np.float32)
    kp1 = kp0 + 2  # same cells
    desc = rng.normal(size=(3, 128)).astype(np.float32)
    # MNN paired the cells of keypoints 0 and 1 only: keypoint 2's cell has no pair.
    cells = np.array([1 * 10 + 1, 5 * 10 + 5])
    i0, i1 = match_keypoints_in_cells(kp0, desc, layout, kp1, desc + 0.01, layout, cells, cells, 0, 0.9)
    assert sorted(zip(i0.tolist(), i1.tolist())) == [(0, 0), (1, 1)]
    # Cell (1, 1) paired with (8, 8), where image 1 has no keypoint: no match although the
    # descriptors of keypoint 0 are identical in both images.
    i0, _ = match_keypoints_in_cells(kp0, desc, layout, kp1, desc, layout, cells[:1], [88], 1, 0.9)
    assert len(i0) == 0


def _geometry(kp: np.ndarray) -> KeyframeGeometry:
    return KeyframeGeometry(kp.astype(np.float32), np.zeros((len(kp), 1), np.float32),
                            np.full((len(kp), 3), np.nan, np.float32), HW, K, np.zeros(0))


def _views(T_m_q: np.ndarray, n: int = 150, seed: int = 0, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    pq = np.column_stack([rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(3, 10, n)])
    pm = pq @ T_m_q[:3, :3].T + T_m_q[:3, 3]
    keep = pm[:, 2] > 0.5
    proj = lambda p: p[:, :2] / p[:, 2:] * 450 + [376, 240] + rng.normal(0, noise, (len(p), 2))  # noqa: E731
    return proj(pm[keep]), proj(pq[keep])


def _T(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rotvec, float))[0]
    T[:3, 3] = t
    return T


def _angle(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def test_essential_gives_rotation_and_unit_direction_without_a_scale():
    T = _T([0.02, 0.35, -0.05], [0.8, 0.1, 0.3])
    pm, pq = _views(T)
    est = estimate_essential(pm, pq, _geometry(pm), _geometry(pq), GeometryConfig())
    assert est.valid and est.method == "essential" and not est.scale_known
    assert _angle(est.T_match_query[:3, :3].T @ T[:3, :3]) < 0.5
    t = est.T_match_query[:3, 3]
    assert np.linalg.norm(t) == pytest.approx(1.0)  # never a made-up scale
    assert np.degrees(np.arccos(t @ T[:3, 3] / np.linalg.norm(T[:3, 3]))) < 3.0
    # The covariance says the length of t is unknown, the rotation is known well.
    assert est.covariance[:3, :3] @ (est.T_match_query[:3, :3].T @ t) @ (est.T_match_query[:3, :3].T @ t) > 1e4
    assert np.sqrt(np.diag(est.covariance)[3:]).max() < np.radians(0.5)


def test_pure_rotation_is_low_parallax_with_the_rotation_kept():
    T = _T([0.1, -0.2, 0.05], [0, 0, 0])
    pm, pq = _views(T)
    est = estimate_essential(pm, pq, _geometry(pm), _geometry(pq), GeometryConfig())
    assert not est.valid and est.reason == "low_parallax"
    assert _angle(est.T_match_query[:3, :3].T @ T[:3, :3]) < 0.2


def test_random_correspondences_give_no_valid_pose():
    rng = np.random.default_rng(5)
    pm = rng.uniform([0, 0], [752, 480], (200, 2))
    pq = rng.uniform([0, 0], [752, 480], (200, 2))
    est = estimate_essential(pm, pq, _geometry(pm), _geometry(pq), GeometryConfig())
    assert not est.valid and est.reason in ("too_few_inliers", "low_inlier_ratio", "low_parallax")


def test_non_rigid_pair_is_invalid():
    # Two halves of the scene moved differently (a look-alike: no one rigid motion explains both).
    pm1, pq1 = _views(_T([0.02, 0.35, -0.05], [0.8, 0.1, 0.3]), n=100, seed=1)
    pm2, pq2 = _views(_T([-0.1, -0.2, 0.1], [-0.5, 0.4, 0.2]), n=100, seed=2)
    pm, pq = np.r_[pm1, pm2], np.r_[pq1, pq2]
    est = estimate_essential(pm, pq, _geometry(pm), _geometry(pq), GeometryConfig())
    assert not est.valid and est.reason in ("low_inlier_ratio", "degenerate", "low_parallax")


def test_depth_points_from_16uc1_and_32fc1():
    cam = PinholeCamera(K, np.zeros(0), 752, 480)
    kp = np.array([[376.0, 240.0], [476.0, 290.0], [10.0, 10.0]])
    mm = np.full(HW, 2000, np.uint16)
    mm[10, 10] = 0  # no depth there
    pts = depth_points(cam, kp, mm, 40.0)
    np.testing.assert_allclose(pts[0], [0, 0, 2.0])
    np.testing.assert_allclose(pts[1], [100 / 450 * 2, 50 / 450 * 2, 2.0], rtol=1e-6)
    assert np.isnan(pts[2]).all()
    np.testing.assert_allclose(depth_points(cam, kp[:2], mm.astype(np.float32) / 1000, 40.0), pts[:2])
    assert np.isnan(depth_points(cam, kp[:1], mm.astype(np.float32), 40.0)).all()  # 2000 m > max depth


@pytest.mark.parametrize("with_depth", [200, 3])
def test_auto_takes_pnp_with_depth_and_falls_back_to_essential(with_depth):
    # Keypoints with unique descriptors seen from two poses; MNN paired exactly their cells.
    T = _T([0.02, 0.3, -0.05], [0.6, 0.1, 0.2])
    rng = np.random.default_rng(2)
    pq = np.column_stack([rng.uniform(-3, 3, 200), rng.uniform(-2, 2, 200), rng.uniform(3, 10, 200)])
    pm = pq @ T[:3, :3].T + T[:3, 3]
    proj = lambda p: (p[:, :2] / p[:, 2:] * 450 + [376, 240]).astype(np.float32)  # noqa: E731
    desc = rng.normal(size=(200, 128)).astype(np.float32)
    points = pm.astype(np.float32)
    points[with_depth:] = np.nan
    match = KeyframeGeometry(proj(pm), desc, points, HW, K, np.zeros(0))
    query = KeyframeGeometry(proj(pq), desc, np.full((200, 3), np.nan, np.float32), HW, K, np.zeros(0))
    layout = grid_layout(HW, (12, 19))
    rq, cq = layout.cells_of(query.keypoints)
    rm, cm = layout.cells_of(match.keypoints)
    inside = (rq >= 0) & (rm >= 0)
    est = relative_pose(query, match, layout, layout, (rq * 19 + cq)[inside], (rm * 19 + cm)[inside],
                        GeometryConfig())
    assert est.valid, est
    assert est.method == ("pnp" if with_depth == 200 else "essential")
    assert est.scale_known == (with_depth == 200)
    assert _angle(est.T_match_query[:3, :3].T @ T[:3, :3]) < 0.2


@pytest.mark.parametrize("n", [0, 3, 7, 8, 9, 12, 25])
def test_few_or_random_correspondences_never_raise(n):
    # A callback must not lose a frame to an OpenCV error on a degenerate loop.
    from vpr_ros.core.geometry.relative_pose import estimate_pnp
    rng = np.random.default_rng(n)
    pm, pq = rng.uniform([0, 0], [752, 480], (n, 2)), rng.uniform([0, 0], [752, 480], (n, 2))
    X = rng.uniform([-2, -2, 2], [2, 2, 8], (n, 3))
    # min_inliers=6 lets the small sets reach the estimators (the point: no exception) ...
    loose = GeometryConfig(min_inliers=6)
    estimate_essential(pm, pq, _geometry(pm), _geometry(pq), loose)
    estimate_pnp(X, pq, _geometry(pq), np.eye(4), loose)
    # ... and with the default threshold none of them is a valid pose.
    assert not estimate_essential(pm, pq, _geometry(pm), _geometry(pq), GeometryConfig()).valid
    assert not estimate_pnp(X, pq, _geometry(pq), np.eye(4), GeometryConfig()).valid
