"""Correspondences for relative pose: MNN grid cells -> original-image pixels -> keypoint matches.

A dense local map of (h, w) cells covers the network input, which is the original image resized
(and, with ``keep_aspect``, centre-cropped or padded; ``models/preprocess.py``). :class:`GridLayout`
maps cell indices to pixels of the original image and back. An MNN pair of cells says "these two
image regions show the same thing" at cell accuracy (16 px on a 322-px input): keypoints (SIFT or
ORB) are matched by descriptor only among the keypoints that lie inside MNN-paired cells (plus
``cell_radius`` cells around them), which gives pixel-accurate correspondences without a search
over the whole image. docs/geometry.md has the measurements behind this choice.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import ConfigError, InputError

__all__ = ["GridLayout", "grid_layout", "detect_keypoints", "descriptor_distances", "match_keypoints_in_cells"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True)
class GridLayout:
    """Where the cells of an (h, w) local map lie in an original image of size image_hw.

    The image was resized to ``resized_hw`` and centre-cropped/padded to ``input_hw``; the grid
    divides ``input_hw`` evenly.
    """

    image_hw: tuple[int, int]
    grid_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    input_hw: tuple[int, int]

    def _offset(self, axis: int) -> int:
        # Same integer split as preprocess._center_fit: crop start, or minus the padding before.
        cur, size = self.resized_hw[axis], self.input_hw[axis]
        return (cur - size) // 2 if cur > size else -((size - cur) // 2)

    def cell_centres(self, flat: npt.ArrayLike) -> F64:
        """Flat cell indices (M,) -> (M, 2) pixel (x, y) of the cell centres in the original image."""
        rows, cols = np.divmod(np.asarray(flat, np.int64), self.grid_hw[1])
        u = (cols + 0.5) * self.input_hw[1] / self.grid_hw[1] + self._offset(1)
        v = (rows + 0.5) * self.input_hw[0] / self.grid_hw[0] + self._offset(0)
        # Continuous coordinates (pixel edges at integers) scale exactly; OpenCV's centres are at +0.5.
        x = u * self.image_hw[1] / self.resized_hw[1] - 0.5
        y = v * self.image_hw[0] / self.resized_hw[0] - 0.5
        return np.stack([x, y], axis=1)

    def cells_of(self, pixels: npt.ArrayLike) -> tuple[I64, I64]:
        """(N, 2) pixels -> (row, col) cell of each, -1 for pixels outside the grid (cropped away)."""
        p = np.asarray(pixels, np.float64).reshape(-1, 2)
        u = (p[:, 0] + 0.5) * self.resized_hw[1] / self.image_hw[1] - self._offset(1)
        v = (p[:, 1] + 0.5) * self.resized_hw[0] / self.image_hw[0] - self._offset(0)
        col = np.floor(u * self.grid_hw[1] / self.input_hw[1]).astype(np.int64)
        row = np.floor(v * self.grid_hw[0] / self.input_hw[0]).astype(np.int64)
        outside = (col < 0) | (col >= self.grid_hw[1]) | (row < 0) | (row >= self.grid_hw[0])
        row[outside] = -1
        col[outside] = -1
        return row, col


def grid_layout(image_hw: tuple[int, int], grid_hw: tuple[int, int], input_size: tuple[int, int] | None = None,
                patch_multiple: int = 1, keep_aspect: bool = False) -> GridLayout:
    """The layout of a model's local map on an image (the model's ``spec.input_size``,
    ``spec.patch_multiple`` and ``keep_aspect``). Without ``keep_aspect`` the grid spans the whole
    image whatever the input size, so ``input_size`` may be omitted."""
    h, w = int(image_hw[0]), int(image_hw[1])
    if not keep_aspect or input_size is None:
        if keep_aspect:
            raise ConfigError("keep_aspect needs the model's input_size to place the grid cells")
        return GridLayout((h, w), tuple(grid_hw), (h, w), (h, w))  # type: ignore[arg-type]
    scale = min(input_size) / min(h, w)
    resized = (max(1, round(h * scale)), max(1, round(w * scale)))
    m = max(1, patch_multiple)
    out = (max(m, (resized[0] // m) * m), max(m, (resized[1] // m) * m))
    return GridLayout((h, w), tuple(grid_hw), resized, out)  # type: ignore[arg-type]


def _grey(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    raise InputError(f"image of shape {image.shape} is neither grey nor RGB")


def detect_keypoints(image: npt.NDArray[np.uint8], kind: str = "sift", max_keypoints: int = 1000,
                     ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.generic]]:
    """Keypoints of an (H, W[, 3]) uint8 image: (N, 2) float32 pixels and (N, B) descriptors
    (float32 for SIFT, uint8 for ORB), strongest first."""
    grey = _grey(np.asarray(image))
    if kind == "sift":
        detector = cv2.SIFT_create(nfeatures=max_keypoints)
    elif kind == "orb":
        detector = cv2.ORB_create(nfeatures=max_keypoints, fastThreshold=10)
    else:
        raise ConfigError(f"keypoints={kind!r} is not allowed; choose sift or orb")
    kps, desc = detector.detectAndCompute(grey, None)
    if not kps or desc is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32 if kind == "orb" else 128),
                                                       np.uint8 if kind == "orb" else np.float32)
    order = np.argsort([-k.response for k in kps], kind="stable")[:max_keypoints]
    pts = np.array([kps[i].pt for i in order], np.float32).reshape(-1, 2)
    return pts, desc[order]


def descriptor_distances(desc0: npt.NDArray[np.generic], desc1: npt.NDArray[np.generic],
                         ) -> npt.NDArray[np.float32]:
    """(N0, N1) float32 distances: Hamming for uint8 (binary) descriptors, L2 otherwise."""
    if desc0.dtype == np.uint8:
        bits0 = np.unpackbits(desc0, axis=1).astype(np.float32)
        bits1 = np.unpackbits(desc1, axis=1).astype(np.float32)
        # Hamming = |a| + |b| - 2 a.b on bit vectors; a matrix product instead of a Python loop.
        return bits0.sum(1)[:, None] + bits1.sum(1)[None, :] - 2.0 * bits0 @ bits1.T
    d0 = desc0.astype(np.float32)
    d1 = desc1.astype(np.float32)
    sq = (d0 * d0).sum(1)[:, None] + (d1 * d1).sum(1)[None, :] - 2.0 * d0 @ d1.T
    return np.sqrt(np.maximum(sq, 0.0, out=sq), out=sq)


def _dilate(rows: I64, cols: I64, grid_hw: tuple[int, int], radius: int) -> I64:
    """(M,) cells -> (M, K) flat indices of the cells within ``radius`` (clipped at the border)."""
    off = np.arange(-radius, radius + 1)
    dr, dc = np.meshgrid(off, off, indexing="ij")
    r = np.clip(rows[:, None] + dr.reshape(-1), 0, grid_hw[0] - 1)
    c = np.clip(cols[:, None] + dc.reshape(-1), 0, grid_hw[1] - 1)
    return r * grid_hw[1] + c


def match_keypoints_in_cells(kp0: npt.ArrayLike, desc0: npt.NDArray[np.generic], layout0: GridLayout,
                             kp1: npt.ArrayLike, desc1: npt.NDArray[np.generic], layout1: GridLayout,
                             pairs0: npt.ArrayLike, pairs1: npt.ArrayLike, cell_radius: int = 1,
                             ratio: float = 0.85) -> tuple[I64, I64]:
    """Mutual best keypoint matches restricted to MNN-paired cells.

    kp0/kp1: (N0, 2)/(N1, 2) pixels; desc0/desc1 their descriptors; pairs0/pairs1: (M,) flat cell
    indices of the MNN pairs (``verification.mnn_pairs``). A keypoint of image 0 in a cell within
    ``cell_radius`` of pair cell a may match a keypoint of image 1 within ``cell_radius`` of b.
    Returns keypoint indices (K,) into kp0 and (K,) into kp1.
    """
    p0 = np.asarray(pairs0, np.int64)
    p1 = np.asarray(pairs1, np.int64)
    empty = np.zeros(0, np.int64)
    if len(p0) == 0 or len(desc0) == 0 or len(desc1) == 0:
        return empty, empty
    n_cells0 = layout0.grid_hw[0] * layout0.grid_hw[1]
    n_cells1 = layout1.grid_hw[0] * layout1.grid_hw[1]
    allowed = np.zeros((n_cells0, n_cells1), bool)
    near0 = _dilate(*np.divmod(p0, layout0.grid_hw[1]), layout0.grid_hw, cell_radius)
    near1 = _dilate(*np.divmod(p1, layout1.grid_hw[1]), layout1.grid_hw, cell_radius)
    allowed[near0[:, :, None], near1[:, None, :]] = True
    r0, c0 = layout0.cells_of(kp0)
    r1, c1 = layout1.cells_of(kp1)
    in0 = np.flatnonzero(r0 >= 0)
    in1 = np.flatnonzero(r1 >= 0)
    if len(in0) == 0 or len(in1) == 0:
        return empty, empty
    mask = allowed[(r0[in0] * layout0.grid_hw[1] + c0[in0])[:, None],
                   (r1[in1] * layout1.grid_hw[1] + c1[in1])[None, :]]
    # Only keypoints with at least one allowed partner need descriptor distances.
    keep0, keep1 = mask.any(axis=1), mask.any(axis=0)
    in0, in1, mask = in0[keep0], in1[keep1], mask[keep0][:, keep1]
    if len(in0) == 0 or len(in1) < 2:
        return empty, empty
    dist = np.where(mask, descriptor_distances(desc0[in0], desc1[in1]), np.float32(np.inf))
    top2 = np.argpartition(dist, 1, axis=1)[:, :2]  # the two smallest, unordered
    rows = np.arange(len(in0))
    d_a, d_b = dist[rows, top2[:, 0]], dist[rows, top2[:, 1]]
    best = np.where(d_a <= d_b, top2[:, 0], top2[:, 1])
    d_best, d_second = np.minimum(d_a, d_b), np.maximum(d_a, d_b)
    # Ratio among the allowed keypoints only: a repeated texture elsewhere in the image is no rival.
    ok = np.isfinite(d_best) & (d_best < ratio * d_second)
    back = np.argmin(dist, axis=0)
    ok &= back[best] == rows
    return in0[ok], in1[best[ok]]
