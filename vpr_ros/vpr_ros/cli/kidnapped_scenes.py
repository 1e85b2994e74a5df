"""SIMULATED (RENDERED from real photographs) kidnapped-robot data: a mapped world of rooms and
corridors, one mapping path through it, and kidnapped starts with odometry that starts at identity.

Places: rooms (``rendered_scenes.simulated_room``) and corridors (:func:`simulated_corridor`, a long
box of the same real photographs), each at its own offset along the renderer's world x axis (20 m
apart, so no two overlap; each shows its photographs turned or mirrored its own way, see
:func:`distinct_variant`). Look-alike places (``simulated_look_alike_room``: the same photographs,
each scrolled in its cell) stand at offsets no mapped place uses: the map never saw them.

Frames. The renderer's world has OpenCV axes (x right, y down, z forward). The **map frame** is that
world turned to ROS axes (x forward, y left, z up: ``MAP_FROM_WORLD``), and the robot's base frame
carries the camera at ``BASE_FROM_CAMERA`` (the optical frame's usual rotation, 0.2 m ahead and
0.4 m above the base). The mapping session's odometry is exact and starts in the map frame, so the
map frame of the saved map *is* this frame: every true pose here is ``T_map_base``. A kidnapped
session's odometry is ``T_odom_base = inv(T_map_base(start)) T_map_base``: identity at its first
frame, its odom frame unknown to the map.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from vpr_ros.cli.rendered_rooms import RENDERED_LABEL, RenderedRoom, TexturedPlane, pose_from_euler
from vpr_ros.cli.rendered_scenes import (each_cell, grid_texture, real_photographs, simulated_look_alike_room,
                                         simulated_room)

__all__ = ["KIDNAPPED_LABEL", "MAP_FROM_WORLD", "BASE_FROM_CAMERA", "PLACE_SPACING_M", "Place", "Session",
           "simulated_corridor", "distinct_variant", "simulated_places", "map_pose", "mapping_path", "mapping_session",
           "kidnapped_sessions", "odometry_from_start"]

F64 = npt.NDArray[np.float64]
KIDNAPPED_LABEL = RENDERED_LABEL
PLACE_SPACING_M = 20.0
LOOK_ALIKE_OFFSET_M = 500.0  # look-alike places stand beyond every mapped place
#: map (ROS: x forward, y left, z up) from the renderer's world (OpenCV: x right, y down, z forward)
MAP_FROM_WORLD = np.array([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
#: the camera's optical frame in the base frame: same rotation, 0.2 m ahead, 0.4 m up
BASE_FROM_CAMERA = MAP_FROM_WORLD.copy()
BASE_FROM_CAMERA[:3, 3] = [0.2, 0.0, 0.4]
MAP_STEP_DEG = 22.5  # a mapping keyframe every 22.5 deg of turn (keyframes.min_rotation_deg 15)
CORRIDOR_STEP_M = 0.7  # or every 0.7 m along a corridor (keyframes.min_translation_m 0.5)


@dataclasses.dataclass(frozen=True)
class Place:
    """A room or corridor at ``T_world_place`` (a translation along world x); ``kind`` room,
    corridor, or look-alike (of ``source``, a mapped place: not in the map)."""

    name: str
    room: RenderedRoom
    T_world_place: F64
    kind: str
    source: str = ""


@dataclasses.dataclass(frozen=True)
class Session:
    """Frames of one session: the place each frame is rendered in, the camera pose in that place,
    and the true base pose in the map frame. ``mapped``: a kidnapped start the map saw (False: a
    look-alike place, which must give no fix)."""

    name: str
    places: tuple[Place, ...]
    T_place_cam: tuple[F64, ...]
    mapped: bool
    label: str = KIDNAPPED_LABEL

    @property
    def T_map_base(self) -> list[F64]:
        return [map_pose(p, T) for p, T in zip(self.places, self.T_place_cam)]


def map_pose(place: Place, T_place_cam: npt.ArrayLike) -> F64:
    """The true base pose in the map frame of a camera at ``T_place_cam`` in ``place``."""
    T_world_cam = place.T_world_place @ np.asarray(T_place_cam, np.float64)
    return MAP_FROM_WORLD @ T_world_cam @ np.linalg.inv(BASE_FROM_CAMERA)


def odometry_from_start(T_map_base: list[F64]) -> list[F64]:
    """A kidnapped session's odometry: identity at its first frame, exact relative motion after."""
    start = np.linalg.inv(T_map_base[0])
    return [start @ T for T in T_map_base]


def simulated_corridor(seed: int, name: str | None = None, length_m: float = 16.0,
                       width_m: float = 2.4, height_m: float = 3.0) -> RenderedRoom:
    """A SIMULATED corridor: a closed box ``width_m`` x ``height_m`` x ``length_m`` whose long walls
    are rows of real photographs (one per 2 m), floor and ceiling Corridor mosaics, drawn by ``seed``."""
    photos = real_photographs()
    rng = np.random.default_rng(seed)
    names = list(photos)
    rng.shuffle(names)
    W, H, L = width_m, height_m, length_m
    x0, y0 = -W / 2, -H / 2
    a = np.array
    cells = int(round(L / 2.0))
    layout = [("back", a([x0, y0, L]), a([1.0, 0, 0]), a([0, 1.0, 0]), (W, H), (1, 1)),
              ("front", a([-x0, y0, 0.0]), a([-1.0, 0, 0]), a([0, 1.0, 0]), (W, H), (1, 1)),
              ("left", a([x0, y0, 0.0]), a([0, 0, 1.0]), a([0, 1.0, 0]), (L, H), (cells, 1)),
              ("right", a([-x0, y0, L]), a([0, 0, -1.0]), a([0, 1.0, 0]), (L, H), (cells, 1)),
              ("floor", a([x0, -y0, L]), a([1.0, 0, 0]), a([0, 0, -1.0]), (W, L), (1, cells)),
              ("ceiling", a([x0, y0, 0.0]), a([1.0, 0, 0]), a([0, 0, 1.0]), (W, L), (1, cells))]
    planes, k = [], 0
    for plane_name, origin, u, v, size, (cols, rows) in layout:
        chosen = [names[(k + i) % len(names)] for i in range(cols * rows)]
        k += cols * rows
        planes.append(TexturedPlane(plane_name, origin, u, v, size,
                                    grid_texture([photos[n] for n in chosen], cols, rows), tuple(chosen)))
    interior = (np.array([-0.3, -0.3, 1.5]), np.array([0.3, 0.3, L - 1.5]))
    return RenderedRoom(name or f"corridor{seed}", tuple(planes), interior)


def _at(x_m: float) -> F64:
    T = np.eye(4)
    T[0, 3] = x_m
    return T


def distinct_variant(room: RenderedRoom, k: int) -> RenderedRoom:
    """``room`` with every photograph turned by the k-th symmetry of the square (k mod 8: rotations
    by 90 deg, then mirrored from 4 on) inside its cell: the same real photographs, but no view of one
    variant is a view of another (the descriptors and local features are not rotation or mirror
    invariant), so places built from one small set of photographs stop looking alike. k = 0: as is."""
    turns, mirror = k % 4, (k % 8) >= 4
    if not turns and not mirror:
        return room

    def turn(cell: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        turned = np.rot90(cell, turns)
        return turned[:, ::-1] if mirror else turned

    planes = [dataclasses.replace(pl, photos=tuple(f"{n} (variant {k % 8})" for n in pl.photos))
              for pl in each_cell(room, turn)]
    return dataclasses.replace(room, planes=tuple(planes))


def simulated_places(rooms: int, corridors: int, look_alikes: int, seed: int,
                     distinct: bool = True) -> tuple[list[Place], list[Place]]:
    """(mapped places, look-alike places): ``rooms`` rooms then ``corridors`` corridors, 20 m apart;
    look-alikes of the first mapped places in turn, where no mapped place stands. The repository has
    31 photographs, so places share them: ``distinct`` shows each place's photographs in its own
    :func:`distinct_variant` (place k: variant k), else as they are (places then partly look alike:
    the same photograph on the same wall of two rooms)."""
    built = [(f"room{r}", simulated_room(seed + r, f"room{r}"), "room") for r in range(rooms)]
    built += [(f"corridor{c}", simulated_corridor(seed + 100 + c, f"corridor{c}"), "corridor") for c in range(corridors)]
    mapped = [Place(name, distinct_variant(room, k) if distinct else room, _at(PLACE_SPACING_M * k), kind)
              for k, (name, room, kind) in enumerate(built)]
    looks = []
    for k in range(look_alikes if mapped else 0):
        src = mapped[k % len(mapped)]
        looks.append(Place(f"{src.name}-lookalike{k}", simulated_look_alike_room(src.room, seed + 1000 + k),
                           _at(LOOK_ALIKE_OFFSET_M + PLACE_SPACING_M * k), "look-alike", src.name))
    return mapped, looks


def mapping_path(place: Place) -> list[F64]:
    """Camera poses (in the place) of the mapping session: in a room a circle of radius 1 m around
    the middle of its free space, looking along the way, one pose per 22.5 deg (a full turn); in a
    corridor down its middle looking ahead, then back looking the other way, one per 0.7 m."""
    lo, hi = place.room.interior
    if place.kind == "corridor":
        zs = np.arange(lo[2], hi[2] + 1e-9, CORRIDOR_STEP_M)
        out = [pose_from_euler([0.0, 0.0, z], 0.0) for z in zs]
        return out + [pose_from_euler([0.0, 0.0, z], 180.0) for z in zs[::-1]]
    centre = (lo + hi) / 2
    out = []
    for k in range(int(round(360 / MAP_STEP_DEG))):
        theta = np.radians(k * MAP_STEP_DEG)
        position = centre + np.array([np.sin(theta), 0.0, np.cos(theta)])
        out.append(pose_from_euler(position, np.degrees(theta) + 90.0))  # heading along the circle
    return out


def mapping_session(places: list[Place]) -> Session:
    """One session through every mapped place in turn (a teleport between places is just a jump of
    the exact odometry)."""
    legs = [(p, T) for p in places for T in mapping_path(p)]
    return Session("mapping", tuple(p for p, _ in legs), tuple(T for _, T in legs), True)


def _perturbed(T: F64, rng: np.random.Generator, t_max_m: float, yaw_max_deg: float) -> F64:
    d = rng.normal(size=3) * [1.0, 0.3, 1.0]
    offset = pose_from_euler(d / np.linalg.norm(d) * rng.uniform(0.05, t_max_m), rng.uniform(-yaw_max_deg, yaw_max_deg),
                             rng.uniform(-3, 3), rng.uniform(-2, 2))
    return T @ offset


def kidnapped_sessions(mapped: list[Place], looks: list[Place], starts: int, look_alike_starts: int,
                       frames: int, seed: int, t_max_m: float = 0.3, yaw_max_deg: float = 3.5) -> list[Session]:
    """``starts`` sessions that start at a mapping pose (perturbed by up to ``t_max_m`` and
    ``yaw_max_deg``) of a mapped place and follow the mapping path from there, one way or the other,
    for ``frames`` frames (each pose perturbed the same way, motion exact; consecutive poses >= 15.5 deg
    or >= 0.8 m apart, so every frame is a keyframe with the default keyframes.*); then
    ``look_alike_starts`` sessions along the same kind of path in look-alike places (never mapped)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(starts + look_alike_starts):
        looking_alike = k >= starts
        pool = looks if looking_alike else mapped
        if not pool:
            break
        place = pool[int(rng.integers(len(pool)))]
        source = next((p for p in mapped if p.name == place.source), place)
        path = mapping_path(source)
        i, step = int(rng.integers(len(path))), int(rng.choice([-1, 1]))
        if source.kind == "corridor":  # stay on one leg of the corridor, facing one way
            half = len(path) // 2
            leg = path[:half] if i < half else path[half:]
            i = int(rng.integers(0, max(1, len(leg) - 2 * frames)))
            poses = [leg[min(i + 2 * j, len(leg) - 1)] for j in range(frames)]  # 1.4 m apart
        else:
            poses = [path[(i + step * j) % len(path)] for j in range(frames)]
        poses = [_perturbed(T, rng, t_max_m, yaw_max_deg) for T in poses]
        name = f"{'lookalike' if looking_alike else 'kidnapped'}{k:03d}_{place.name}"
        out.append(Session(name, tuple([place] * frames), tuple(poses), not looking_alike))
    return out
