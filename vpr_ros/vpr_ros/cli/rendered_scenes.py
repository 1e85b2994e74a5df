"""SIMULATED (RENDERED from real photographs) scenes: rooms built from the repository's real images,
query views at known 6-DoF offsets from map views, and look-alike rooms.

Photographs: the EuRoC V1_01 left frames and the toy street views (``vpr_ros/test/data/``, a source
checkout) and 2x2 mosaics of Corridor reference frames (``vpr_ros/data/corridor/``, installed). A
room is a closed box (6 m wide, 3 m high, 8 m deep) of six planes; each wall, floor and ceiling is a
grid of photographs drawn by the seed. A look-alike room shows the same photographs on the same box,
but each photograph is scrolled inside its cell by its own amount (0.4-1.0 m), so each one alone
looks like a small camera shift while no one rigid motion explains a view of several: a pose between
a view of the room and a view of its look-alike has no ground truth and must come out invalid.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.cli.corridor import corridor_dir
from vpr_ros.cli.rendered_rooms import (RENDERED_LABEL, RenderCamera, RenderedRoom, RenderedView, TexturedPlane,
                                        cast_rays, pose_from_euler, rendered_view, simulated_degradation)

__all__ = ["TEST_DATA_DIR", "real_photographs", "grid_texture", "each_cell", "simulated_room", "simulated_look_alike_room",
           "simulated_camera", "RenderedPair", "simulated_pairs", "render_pair", "relative_truth"]

F64 = npt.NDArray[np.float64]
TEST_DATA_DIR = Path(__file__).resolve().parents[2] / "test" / "data"
ROOM_SIZE_M = (6.0, 3.0, 8.0)  # x (width), y (height, down), z (depth)
PX_PER_M = 200
CELL_PX = 600  # each grid cell of a wall is CELL_PX x CELL_PX texture pixels


@functools.lru_cache(maxsize=2)
def real_photographs(data_dir: str | None = None) -> dict[str, npt.NDArray[np.uint8]]:
    """Real photographs by name (RGB uint8): EuRoC left frames, toy street views, Corridor mosaics."""
    base = Path(data_dir) if data_dir else TEST_DATA_DIR
    photos: dict[str, npt.NDArray[np.uint8]] = {}
    files = [base / "kimera_euroc" / f"left_img_{i}.png" for i in range(4)]
    files += [base / "toy_street" / f"db{i}.jpg" for i in (1, 7, 10)]
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"real photograph {f} is missing (the renderer needs a source checkout)")
        photos[f"{f.parent.name}/{f.name}"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ref = sorted((corridor_dir() / "ref").glob("*.jpg"))
    for k in range(0, min(len(ref), 96) - 3, 4):  # 24 mosaics of four neighbouring corridor frames
        tiles = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in ref[k:k + 4]]
        photos[f"corridor/ref/{ref[k].stem}-{ref[k + 3].stem}"] = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
    return photos


def grid_texture(photos: list[npt.NDArray[np.uint8]], cols: int, rows: int) -> npt.NDArray[np.uint8]:
    cells = [cv2.resize(p, (CELL_PX, CELL_PX), interpolation=cv2.INTER_AREA if p.shape[0] > CELL_PX
                        else cv2.INTER_CUBIC) for p in photos]
    return np.vstack([np.hstack(cells[r * cols:(r + 1) * cols]) for r in range(rows)])


# name, origin, axis_u, axis_v, (width, height) m, (cols, rows) of photographs
def _box_planes() -> list[tuple[str, F64, F64, F64, tuple[float, float], tuple[int, int]]]:
    W, H, D = ROOM_SIZE_M
    x0, y0 = -W / 2, -H / 2
    a = np.array
    return [("back", a([x0, y0, D]), a([1.0, 0, 0]), a([0, 1.0, 0]), (W, H), (2, 1)),
            ("front", a([-x0, y0, 0.0]), a([-1.0, 0, 0]), a([0, 1.0, 0]), (W, H), (2, 1)),
            ("left", a([x0, y0, 0.0]), a([0, 0, 1.0]), a([0, 1.0, 0]), (D, H), (3, 1)),
            ("right", a([-x0, y0, D]), a([0, 0, -1.0]), a([0, 1.0, 0]), (D, H), (3, 1)),
            ("floor", a([x0, -y0, D]), a([1.0, 0, 0]), a([0, 0, -1.0]), (W, D), (2, 3)),
            ("ceiling", a([x0, y0, 0.0]), a([1.0, 0, 0]), a([0, 0, 1.0]), (W, D), (2, 3))]


def simulated_room(seed: int, name: str | None = None, data_dir: str | None = None) -> RenderedRoom:
    """A SIMULATED box room whose six planes show grids of real photographs drawn by ``seed``
    (walls: EuRoC and street photographs first, then Corridor mosaics; floor and ceiling: Corridor)."""
    photos = real_photographs(data_dir)
    rng = np.random.default_rng(seed)
    names = list(photos)
    scenic = [n for n in names if not n.startswith("corridor")]
    corridor = [n for n in names if n.startswith("corridor")]
    rng.shuffle(scenic)
    rng.shuffle(corridor)
    walls = scenic + corridor[:10]
    floor = corridor[10:]
    planes = []
    for plane_name, origin, u, v, size, (cols, rows) in _box_planes():
        pool = walls if plane_name in ("back", "front", "left", "right") else floor
        chosen = [pool.pop(0) if pool else names[int(rng.integers(len(names)))] for _ in range(cols * rows)]
        planes.append(TexturedPlane(plane_name, origin, u, v, size,
                                    grid_texture([photos[n] for n in chosen], cols, rows), tuple(chosen)))
    W, H, D = ROOM_SIZE_M
    interior = (np.array([-W / 2 + 1.2, -0.4, 1.0]), np.array([W / 2 - 1.2, 0.4, D - 3.5]))
    return RenderedRoom(name or f"room{seed}", tuple(planes), interior)


def each_cell(room: RenderedRoom, change: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]]) -> tuple:
    """``room``'s planes with ``change`` applied to every photograph's grid cell of their textures (plane
    by plane, row by row: a seeded ``change`` draws in a fixed order)."""
    planes = []
    for pl in room.planes:
        tex = pl.texture.copy()
        for r in range(tex.shape[0] // CELL_PX):
            for c in range(tex.shape[1] // CELL_PX):
                cell = np.s_[r * CELL_PX:(r + 1) * CELL_PX, c * CELL_PX:(c + 1) * CELL_PX]
                tex[cell] = change(tex[cell])
        planes.append(dataclasses.replace(pl, texture=tex))
    return tuple(planes)


def simulated_look_alike_room(room: RenderedRoom, seed: int) -> RenderedRoom:
    """The same photographs on the same planes, each photograph scrolled inside its grid cell by its
    own amount (15-35 % of the cell, 0.4-1.0 m, along both axes, either way): a rigid motion can
    explain one photograph at most, never a view of several, so no pose relates the two rooms."""
    rng = np.random.default_rng(seed)

    def scroll(cell: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        shift = (rng.uniform(0.15, 0.35, 2) * rng.choice([-1, 1], 2) * CELL_PX).round().astype(int)
        return np.roll(cell, tuple(shift), axis=(0, 1))

    planes = each_cell(room, scroll)
    return dataclasses.replace(room, name=f"{room.name}-lookalike", planes=tuple(planes))


def simulated_camera(width: int = 640, height: int = 480, distorted: bool = False) -> RenderCamera:
    """A VGA-like pinhole camera (horizontal field of view ~63 deg), optionally with radial distortion."""
    f = 0.81 * width
    K = np.array([[f, 0.0, (width - 1) / 2 + 3.0], [0.0, f, (height - 1) / 2 - 2.0], [0.0, 0.0, 1.0]])
    D = np.array([-0.08, 0.02, 0.0005, -0.0003, 0.0]) if distorted else np.zeros(5)
    return RenderCamera(K, D, width, height)


@dataclasses.dataclass(frozen=True)
class RenderedPair:
    """A map view and a query view (``T_world_cam`` each) of SIMULATED rooms; ``truth`` is the
    exact T_match_query (None for a look-alike pair: no rigid relation); kind: offset, blurred or
    look-alike; ``degradation`` the query's simulated_degradation arguments."""

    name: str
    map_room: RenderedRoom
    query_room: RenderedRoom
    T_world_map: F64
    T_world_query: F64
    kind: str
    degradation: dict[str, float]
    label: str = RENDERED_LABEL

    @property
    def truth(self) -> F64 | None:
        return None if self.kind == "look-alike" else relative_truth(self.T_world_map, self.T_world_query)


def relative_truth(T_world_match: npt.ArrayLike, T_world_query: npt.ArrayLike) -> F64:
    """Exact T_match_query (the query camera in the match camera frame)."""
    return np.linalg.inv(np.asarray(T_world_match, np.float64)) @ np.asarray(T_world_query, np.float64)


def _random_offset(rng: np.random.Generator, t_range: tuple[float, float],
                   r_range: tuple[float, float]) -> F64:
    axis = rng.normal(size=3) * [0.35, 1.0, 0.2]  # mostly yaw, some pitch, little roll
    axis /= np.linalg.norm(axis)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(axis * np.radians(rng.uniform(*r_range)))[0]
    T[:3, 3] = direction * rng.uniform(*t_range)
    return T


def _overlap(room: RenderedRoom, camera: RenderCamera, T_map: F64, T_query: F64) -> float:
    """Share of the query's pixels (a coarse grid) that the map view sees too (the box is convex)."""
    u, v = np.meshgrid(np.linspace(0, camera.width - 1, 24), np.linspace(0, camera.height - 1, 18))
    z, _, _, _ = cast_rays(room, T_query, camera.undistort(np.stack([u.ravel(), v.ravel()], 1)))
    xn = camera.undistort(np.stack([u.ravel(), v.ravel()], 1))
    X_world = (np.c_[xn * z[:, None], z] @ T_query[:3, :3].T) + T_query[:3, 3]
    X_map = (X_world - T_map[:3, 3]) @ T_map[:3, :3]
    front = X_map[:, 2] > 0.1
    px = camera.project(X_map[front])
    ok = (px[:, 0] >= 0) & (px[:, 0] < camera.width) & (px[:, 1] >= 0) & (px[:, 1] < camera.height)
    return float(ok.sum()) / len(z)


def simulated_pairs(room: RenderedRoom, camera: RenderCamera, count: int, seed: int, *,
                    blurred: int = 0, look_alike: RenderedRoom | None = None,
                    t_range: tuple[float, float] = (0.1, 1.0), r_range: tuple[float, float] = (2.0, 20.0),
                    min_overlap: float = 0.5) -> list[RenderedPair]:
    """``count`` SIMULATED pairs in ``room``: a random map pose, the query at a random 6-DoF offset
    (translation ``t_range`` m, rotation ``r_range`` deg), at least ``min_overlap`` of the query seen
    by the map view. The last ``blurred`` queries are strongly blurred (motion 14-22 px or defocus
    4-6 px). With ``look_alike`` the query views are rendered in that room instead (no relation)."""
    rng = np.random.default_rng(seed)
    lo, hi = room.interior
    pairs: list[RenderedPair] = []
    while len(pairs) < count:
        T_map = pose_from_euler(rng.uniform(lo, hi), rng.uniform(-55, 55), rng.uniform(-10, 10), rng.uniform(-5, 5))
        T_query = T_map @ _random_offset(rng, t_range, r_range)
        margin = 0.4
        if np.any(T_query[:3, 3] < lo - [0.8, margin, 0.8]) or np.any(T_query[:3, 3] > hi + [0.8, margin, 0.8]):
            continue
        if _overlap(room, camera, T_map, T_query) < min_overlap:
            continue
        deg = {"gain": float(rng.uniform(0.8, 1.2)), "offset": float(rng.uniform(-10, 10)),
               "read_noise": 2.0, "shot_noise": 0.5}
        kind = "look-alike" if look_alike is not None else "offset"
        if len(pairs) >= count - blurred:
            kind = "blurred"
            if rng.random() < 0.6:
                deg.update(motion_blur_px=float(rng.uniform(14, 22)), motion_angle_deg=float(rng.uniform(0, 180)))
            else:
                deg.update(defocus_px=float(rng.uniform(4, 6)))
        pairs.append(RenderedPair(f"{room.name}/{len(pairs)}", room, look_alike or room, T_map, T_query, kind, deg))
    return pairs


def render_pair(pair: RenderedPair, camera: RenderCamera, seed: int,
                supersample: int = 2) -> tuple[RenderedView, RenderedView]:
    """(map view, query view) of ``pair``; the map view gets mild gain and noise, the query its own
    degradation (both seeded)."""
    rng = np.random.default_rng(seed)
    views = []
    for room, T, deg in ((pair.map_room, pair.T_world_map, {"read_noise": 2.0, "shot_noise": 0.5}),
                         (pair.query_room, pair.T_world_query, pair.degradation)):
        view = rendered_view(room, camera, T, supersample)
        views.append(dataclasses.replace(view, image=simulated_degradation(view.image, rng, **deg)))
    return views[0], views[1]
