"""SIMULATED (RENDERED from real photographs) rooms: textured planes, exact depth, exact poses.

A room is a few planes (walls, floor, ceiling), each textured with real photographs from the
repository (EuRoC frames, toy street views, Corridor frames; ``rendered_photos.py``). A pinhole
camera (CameraInfo-style K, optional plumb_bob distortion) at a given 6-DoF pose is rendered by
casting one ray per pixel: the nearest plane hit gives the exact z-depth and, by a bilinear texture
lookup, the colour (averaged over ``supersample``^2 sub-pixel rays; the depth is the pixel centre's).
Degradations (motion/defocus blur, Gaussian + shot noise, gain/exposure) act on the colour only.

Frames: world and camera axes as OpenCV's (x right, y down, z forward); a pose is ``T_world_cam``.
Everything made here is labelled :data:`RENDERED_LABEL`. ROS-free (numpy + OpenCV): the measuring
instrument of ``vpr-ros bench geometry --rendered`` (``cli/bench/geometry_rendered.py``), kept in
``cli/`` beside ``simulated.py`` because it makes test and benchmark data, not user data (``io/``)
and no part of the estimator (``core/``).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["RENDERED_LABEL", "TexturedPlane", "RenderedRoom", "RenderCamera", "RenderedView",
           "rendered_view", "cast_rays", "simulated_degradation", "pose_from_euler"]

F64 = npt.NDArray[np.float64]
RENDERED_LABEL = "SIMULATED (RENDERED from real photographs)"


@dataclasses.dataclass(frozen=True)
class TexturedPlane:
    """A rectangle origin + s * axis_u + t * axis_v (s in [0, width], t in [0, height], metres)
    showing ``texture`` (H, W, 3) uint8 RGB: texture column = s / width * W - 0.5 (pixel centres)."""

    name: str
    origin: F64
    axis_u: F64
    axis_v: F64
    size_m: tuple[float, float]
    texture: npt.NDArray[np.uint8]
    photos: tuple[str, ...] = ()

    @property
    def normal(self) -> F64:
        return np.cross(self.axis_u, self.axis_v)

    def point(self, s: float, t: float) -> F64:
        return self.origin + s * self.axis_u + t * self.axis_v


@dataclasses.dataclass(frozen=True)
class RenderedRoom:
    """Planes plus the box in which cameras may stand (``interior``: (min xyz, max xyz))."""

    name: str
    planes: tuple[TexturedPlane, ...]
    interior: tuple[F64, F64]
    label: str = RENDERED_LABEL


@dataclasses.dataclass(frozen=True)
class RenderCamera:
    """A pinhole camera as sensor_msgs/CameraInfo gives it: K (3, 3), plumb_bob D (k1 k2 p1 p2 k3)."""

    K: F64
    D: F64
    width: int
    height: int

    def distort(self, xn: F64) -> F64:
        """Normalised undistorted (N, 2) -> pixels (N, 2) (the plumb_bob model, as OpenCV)."""
        k1, k2, p1, p2, k3 = np.asarray(self.D, np.float64).reshape(5)
        x, y = xn[:, 0], xn[:, 1]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([self.K[0, 0] * xd + self.K[0, 1] * yd + self.K[0, 2], self.K[1, 1] * yd + self.K[1, 2]], 1)

    def project(self, X_cam: F64) -> F64:
        """(N, 3) camera-frame points -> (N, 2) pixels (distorted)."""
        X = np.asarray(X_cam, np.float64).reshape(-1, 3)
        return self.distort(X[:, :2] / X[:, 2:3])

    def undistort(self, pixels: F64, iterations: int = 60) -> F64:
        """Pixels (N, 2) -> normalised undistorted coordinates (N, 2), fixed-point iteration of
        :meth:`distort`'s inverse (converged to < 1e-9 px for the mild distortions used here)."""
        p = np.asarray(pixels, np.float64).reshape(-1, 2)
        yd = (p[:, 1] - self.K[1, 2]) / self.K[1, 1]
        xd = (p[:, 0] - self.K[0, 2] - self.K[0, 1] * yd) / self.K[0, 0]
        k1, k2, p1, p2, k3 = np.asarray(self.D, np.float64).reshape(5)
        x, y = xd.copy(), yd.copy()
        for _ in range(iterations if np.any(self.D) else 0):
            r2 = x * x + y * y
            radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
            x = (xd - 2 * p1 * x * y - p2 * (r2 + 2 * x * x)) / radial
            y = (yd - p1 * (r2 + 2 * y * y) - 2 * p2 * x * y) / radial
        return np.stack([x, y], 1)


@dataclasses.dataclass(frozen=True)
class RenderedView:
    """image (H, W, 3) uint8 RGB; depth (H, W) float32 z-depth in metres (NaN: no plane);
    plane (H, W) int8 index of the plane seen (-1: none); T_world_cam (4, 4)."""

    image: npt.NDArray[np.uint8]
    depth: npt.NDArray[np.float32]
    plane: npt.NDArray[np.int8]
    T_world_cam: F64
    camera: RenderCamera
    room: str
    label: str = RENDERED_LABEL


def pose_from_euler(position: npt.ArrayLike, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                    roll_deg: float = 0.0) -> F64:
    """T_world_cam: yaw about the world y (down) axis, then pitch about x, then roll about z."""
    def rot(axis: int, deg: float) -> F64:
        v = np.zeros(3)
        v[axis] = np.radians(deg)
        return cv2.Rodrigues(v)[0]
    T = np.eye(4)
    T[:3, :3] = rot(1, yaw_deg) @ rot(0, pitch_deg) @ rot(2, roll_deg)
    T[:3, 3] = np.asarray(position, np.float64)
    return T


def cast_rays(room: RenderedRoom, T_world_cam: F64, xn: F64) -> tuple[F64, npt.NDArray[np.int64], F64, F64]:
    """Rays through normalised points (N, 2): z-depth (inf: no hit), plane index, texture x, y."""
    R, c = T_world_cam[:3, :3], T_world_cam[:3, 3]
    x, y = xn[:, 0], xn[:, 1]
    # World directions with camera z = 1, by components: a (N, 3) @ (3, 3) product goes to a
    # multithreaded BLAS that is ~5x slower than this on a busy machine (threads spin).
    d = [R[i, 0] * x + R[i, 1] * y + R[i, 2] for i in range(3)]
    best = np.full(len(xn), np.inf)
    which = np.full(len(xn), -1, np.int64)
    tex_x, tex_y = np.zeros(len(xn)), np.zeros(len(xn))
    for k, pl in enumerate(room.planes):
        dn, du, dv = (d[0] * a[0] + d[1] * a[1] + d[2] * a[2] for a in (pl.normal, pl.axis_u, pl.axis_v))
        oc = c - pl.origin
        with np.errstate(divide="ignore", invalid="ignore"):
            z = -(oc @ pl.normal) / dn
        s, t = oc @ pl.axis_u + z * du, oc @ pl.axis_v + z * dv
        hit = (z > 1e-6) & (z < best) & (s >= 0) & (s <= pl.size_m[0]) & (t >= 0) & (t <= pl.size_m[1])
        best[hit], which[hit] = z[hit], k
        h, w = pl.texture.shape[:2]
        tex_x[hit] = s[hit] / pl.size_m[0] * w - 0.5
        tex_y[hit] = t[hit] / pl.size_m[1] * h - 0.5
    return best, which, tex_x, tex_y


def _shade(room: RenderedRoom, which: npt.NDArray[np.int64], tex_x: F64, tex_y: F64) -> F64:
    """Bilinear texture lookup (OpenCV remap, edges replicated) of every ray; black without a plane."""
    out = np.zeros((len(which), 3))
    for k, pl in enumerate(room.planes):
        idx = np.flatnonzero(which == k)
        if not len(idx):
            continue
        rows = -(-len(idx) // 1024)  # remap's maps must stay below 32767 columns
        mx, my = (np.resize(a[idx], rows * 1024).astype(np.float32).reshape(rows, 1024) for a in (tex_x, tex_y))
        looked_up = cv2.remap(pl.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[idx] = looked_up.reshape(-1, 3)[:len(idx)]
    return out


_RAYS: dict[tuple[bytes, bytes, int, int, float, float], F64] = {}


def _pixel_rays(camera: RenderCamera, dx: float, dy: float) -> F64:
    """Normalised undistorted coordinates of every pixel centre + (dx, dy), row-major (cached)."""
    key = (camera.K.tobytes(), np.asarray(camera.D, np.float64).tobytes(), camera.width, camera.height, dx, dy)
    if key not in _RAYS:
        if len(_RAYS) > 32:
            _RAYS.clear()
        u, v = np.meshgrid(np.arange(camera.width, dtype=np.float64), np.arange(camera.height, dtype=np.float64))
        _RAYS[key] = camera.undistort(np.stack([u.ravel() + dx, v.ravel() + dy], 1))
    return _RAYS[key]


def rendered_view(room: RenderedRoom, camera: RenderCamera, T_world_cam: npt.ArrayLike,
                  supersample: int = 2) -> RenderedView:
    """Render ``room`` seen by ``camera`` at ``T_world_cam``: colour, exact depth, plane index."""
    T = np.asarray(T_world_cam, np.float64)
    h, w = camera.height, camera.width
    depth, which, _, _ = cast_rays(room, T, _pixel_rays(camera, 0.0, 0.0))
    colour = np.zeros((h * w, 3))
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    for dy in offsets:
        for dx in offsets:
            _, wk, tx, ty = cast_rays(room, T, _pixel_rays(camera, float(dx), float(dy)))
            colour += _shade(room, wk, tx, ty)
    colour /= supersample ** 2
    image = np.clip(np.rint(colour), 0, 255).astype(np.uint8).reshape(h, w, 3)
    z = np.where(np.isfinite(depth), depth, np.nan).astype(np.float32).reshape(h, w)
    return RenderedView(image, z, which.astype(np.int8).reshape(h, w), T, camera, room.name)


def _motion_kernel(length_px: float, angle_deg: float) -> npt.NDArray[np.float32]:
    size = int(np.ceil(length_px)) | 1
    k = np.zeros((size, size), np.float32)
    c = size // 2
    a = np.radians(angle_deg)
    for s in np.linspace(-length_px / 2, length_px / 2, 4 * size):
        k[int(round(c + s * np.sin(a))), int(round(c + s * np.cos(a)))] += 1.0
    return k / k.sum()


def _disk_kernel(radius_px: float) -> npt.NDArray[np.float32]:
    r = int(np.ceil(radius_px))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    k = (x * x + y * y <= radius_px ** 2).astype(np.float32)
    return k / k.sum()


def simulated_degradation(image: npt.NDArray[np.uint8], rng: np.random.Generator, *,
                          motion_blur_px: float = 0.0, motion_angle_deg: float = 0.0, defocus_px: float = 0.0,
                          gain: float = 1.0, offset: float = 0.0, read_noise: float = 0.0,
                          shot_noise: float = 0.0) -> npt.NDArray[np.uint8]:
    """A camera's degradations of a rendered image: linear motion blur (length px, angle), defocus
    (disk radius px), exposure ``gain`` and ``offset`` (grey levels), Gaussian read noise (std,
    grey levels) and shot noise (std = sqrt(shot_noise * signal)), then 8-bit quantisation."""
    x = image.astype(np.float32)
    if motion_blur_px >= 1.0:
        x = cv2.filter2D(x, -1, _motion_kernel(motion_blur_px, motion_angle_deg), borderType=cv2.BORDER_REFLECT)
    if defocus_px >= 0.5:
        x = cv2.filter2D(x, -1, _disk_kernel(defocus_px), borderType=cv2.BORDER_REFLECT)
    x = x * gain + offset
    std = np.sqrt(read_noise ** 2 + shot_noise * np.clip(x, 0, None))
    x = x + rng.standard_normal(x.shape).astype(np.float32) * std
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
