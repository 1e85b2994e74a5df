"""A SIMULATED plated Corridor: room-number plates pasted into the frames, for the text rule's evaluation.

The embedded Corridor frames (160x120) carry no readable text, and nothing in a real corridor we
have tells its look-alike doors apart except their numbers. This module makes a labelled SIMULATED
variant: each frame is upscaled by ``scale`` (default 4, to 640x480, bicubic) so an OCR model can
read text at all, then door plates are pasted in (white plate, black border, black digits, the
plate's outer edge shortened as on a wall seen at an angle, seeded jitter of position and size).

Places come from the ground truth: reference frame j is place j; query frame i is the place in the
middle of its VPR-Bench ground-truth window (``ground_truth_new.npy``: ref i-2..i+2, so place i).
Consecutive places are grouped into doors of ``frames_per_plate`` places; door k has its own number
(ascending by 2 from a seeded start, like real doors: neighbours differ in one digit, "214" vs
"216"), on the left wall for even k and the right wall for odd k. So the same place shows the same
number in both traversals and different places along the corridor show different numbers.

Boundaries between doors: with ``boundary="both"`` (default) the last place of a door already shows
the next door's plate, small near the vanishing point, and the first place of a door still shows the
previous one, large at the image edge: approaching a door you see the next, as in a real corridor.
Any two places within the ground truth's +-2 window then share a plate, so a correct loop never sees
a conflict made by where we drew the boundary. ``boundary="none"`` instead leaves those two places
without any plate (a door visible only from some frames); the rule then cannot judge loops that
involve them. docs/place_text.md compares both.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError

__all__ = ["PlatedCorridor", "simulated_plated_corridor", "door_numbers", "visible_doors",
           "SIMULATED_PLATES_LABEL", "BOUNDARIES"]

U8 = npt.NDArray[np.uint8]
SIMULATED_PLATES_LABEL = "SIMULATED plates"
BOUNDARIES = ("both", "none")


@dataclasses.dataclass(frozen=True)
class PlatedCorridor:
    """ref / query: (120*scale, 160*scale, 3) uint8 RGB frames with plates; ref_plates / query_plates:
    the numbers pasted into each frame (what a perfect reader would read), in frame order."""

    ref: list[U8]
    query: list[U8]
    ref_plates: list[tuple[str, ...]]
    query_plates: list[tuple[str, ...]]
    scale: int
    frames_per_plate: int
    boundary: str
    label: str = SIMULATED_PLATES_LABEL


def door_numbers(num_doors: int, seed: int = 0) -> list[str]:
    """Distinct door numbers, ascending by 2 from a seeded start in 102..698 (3 digits)."""
    start = 100 + 2 * int(np.random.default_rng(seed).integers(1, 150))
    if start + 2 * (num_doors - 1) > 999:
        raise InputError(f"{num_doors} doors do not fit in three-digit numbers; use more frames_per_plate")
    return [str(start + 2 * k) for k in range(num_doors)]


def visible_doors(place: int, frames_per_plate: int, boundary: str = "both") -> list[tuple[int, float]]:
    """(door, t) of the plates visible at ``place``; t in [-1, frames_per_plate]: how far the camera has
    come along the door (-1: the door ahead, seen from the previous door's last place)."""
    if boundary not in BOUNDARIES:
        raise InputError(f"boundary={boundary!r}; choose one of {', '.join(BOUNDARIES)}")
    door, t = divmod(place, frames_per_plate)
    last = frames_per_plate - 1
    if boundary == "none":
        return [] if t in (0, last) and frames_per_plate > 2 else [(door, float(t))]
    out = [(door, float(t))]
    if t == last:
        out.append((door + 1, -1.0))
    if t == 0 and door > 0:
        out.append((door - 1, float(frames_per_plate)))
    return out


def _plate_image(number: str, height: int) -> U8:
    """White plate with a black border and black digits, (height, ~1.7 height, 3)."""
    width = int(round(height * (0.55 + 0.38 * len(number))))
    plate = np.full((height, width, 3), 250, np.uint8)
    border = max(2, height // 12)
    cv2.rectangle(plate, (0, 0), (width - 1, height - 1), (20, 20, 20), border)
    scale = height / 40.0
    thick = max(2, int(round(height / 14)))
    (tw, th), _ = cv2.getTextSize(number, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.putText(plate, number, ((width - tw) // 2, (height + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (10, 10, 10), thick, cv2.LINE_AA)
    return plate


def _paste(image: U8, plate: U8, cx: float, cy: float, left_wall: bool, rng: np.random.Generator) -> None:
    """Warp ``plate`` onto ``image`` around (cx, cy): the edge farther from the centre is shortened,
    as a plate on a side wall looks; corners jittered by up to 2 % of the plate height."""
    h, w = plate.shape[:2]
    near, far = 1.0, 0.85  # height ratio of the plate's inner and outer edge
    inner_x, outer_x = (cx + w / 2, cx - w / 2) if left_wall else (cx - w / 2, cx + w / 2)
    dst = np.array([[outer_x, cy - far * h / 2], [inner_x, cy - near * h / 2],
                    [inner_x, cy + near * h / 2], [outer_x, cy + far * h / 2]], np.float32)
    if not left_wall:
        dst = dst[[1, 0, 3, 2]]
    dst += rng.uniform(-0.02 * h, 0.02 * h, dst.shape).astype(np.float32)
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    H = cv2.getPerspectiveTransform(src, dst)
    size = (image.shape[1], image.shape[0])
    warped = cv2.warpPerspective(plate, H, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), H, size, flags=cv2.INTER_LINEAR)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    image[:] = (image * (1 - alpha) + warped * alpha).astype(np.uint8)


def _plated(frame: U8, place: int, numbers: Sequence[str], scale: int, frames_per_plate: int,
            boundary: str, rng: np.random.Generator) -> tuple[U8, tuple[str, ...]]:
    big = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_CUBIC)
    H, W = big.shape[:2]
    shown = []
    for door, t in visible_doors(place, frames_per_plate, boundary):
        if door >= len(numbers):
            continue
        f = (t + 1) / (frames_per_plate + 1)  # 0: far ahead, 1: passing it
        left = door % 2 == 0
        height = int(round(H * (0.075 + 0.055 * f) * rng.uniform(0.95, 1.05)))
        dx = W * (0.13 + 0.27 * f) * rng.uniform(0.97, 1.03)
        cy = H * (0.40 - 0.06 * f) * rng.uniform(0.98, 1.02)
        _paste(big, _plate_image(numbers[door], height), W / 2 - dx if left else W / 2 + dx, cy, left, rng)
        shown.append(numbers[door])
    return big, tuple(shown)


def _query_place(pairs: Mapping[int, frozenset[int]] | Mapping[int, Sequence[int]], q: int) -> int:
    refs = sorted(pairs.get(q, ()))
    if not refs:
        raise InputError(f"query frame {q} has no ground-truth reference frames; cannot give it a place")
    return int(refs[len(refs) // 2])


def simulated_plated_corridor(ref: Sequence[U8], query: Sequence[U8],
                              pairs: Mapping[int, frozenset[int]] | Mapping[int, Sequence[int]], *,
                              scale: int = 4, frames_per_plate: int = 5, boundary: str = "both",
                              seed: int = 0) -> PlatedCorridor:
    """SIMULATED plated Corridor from its frames and ground truth ``pairs`` (query -> ref frames)."""
    if frames_per_plate < 1 or scale < 1:
        raise InputError("frames_per_plate and scale must be at least 1")
    num_places = len(ref)
    numbers = door_numbers(-(-num_places // frames_per_plate), seed)
    rng = np.random.default_rng(seed + 1)
    ref_out = [_plated(f, j, numbers, scale, frames_per_plate, boundary, rng) for j, f in enumerate(ref)]
    query_out = [_plated(f, _query_place(pairs, i), numbers, scale, frames_per_plate, boundary, rng)
                 for i, f in enumerate(query)]
    return PlatedCorridor([f for f, _ in ref_out], [f for f, _ in query_out], [p for _, p in ref_out],
                          [p for _, p in query_out], scale, frames_per_plate, boundary)
