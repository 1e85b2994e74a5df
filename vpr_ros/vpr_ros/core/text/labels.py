"""Place labels from a YAML file: names or addresses for keyframes, given by id or by a pose region.

The file is a list of entries, each a ``label`` and exactly one of ``keyframe`` or ``region``::

    - label: "Room 214"
      keyframe: {robot: robot_a, session: s1, id: 12}   # robot/session may be left out when the id is unique
    - label: "Kitchen"
      region: {center: [4.0, -1.5, 0.0], radius_m: 2.5} # every keyframe whose position is within 2.5 m
    - label: "Loading dock"
      region: {center: [30.0, 8.0], radius_m: 5}        # two numbers: horizontal distance only

Positions are the translation of ``Keyframe.pose`` (world frame of the map); keyframes without a pose
never fall in a region. An entry that names no keyframe is an error (a label silently attached to
nothing is worse than a refused file); the message names the file and the entry.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vpr_ros.core.errors import InputError
from vpr_ros.core.text.place_text import MAX_LABEL_CHARS, PlaceLabel
from vpr_ros.core.types import Keyframe

__all__ = ["LabelEntry", "read_labels_yaml", "labels_for_keyframes", "load_labels", "find_keyframe"]

_ENTRY_KEYS = {"label", "keyframe", "region"}
_KEYFRAME_KEYS = {"robot", "session", "id"}
_REGION_KEYS = {"center", "radius_m"}


@dataclasses.dataclass(frozen=True)
class LabelEntry:
    """One entry of a labels file: ``label`` for a keyframe (robot, session, id) or a region.

    where: the file and entry, for messages. keyframe: (robot or None, session or None, id).
    center: (x, y[, z]) metres; radius_m: metres.
    """

    label: str
    where: str
    keyframe: tuple[str | None, str | None, int] | None = None
    center: tuple[float, ...] | None = None
    radius_m: float | None = None


def _check_keys(got: Mapping[str, Any], allowed: set[str], what: str, where: str) -> None:
    unknown = sorted(set(map(str, got)) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown} in {what}; allowed: {sorted(allowed)}")


def _entry(item: Any, where: str) -> LabelEntry:
    if not isinstance(item, Mapping):
        raise InputError(f"{where} is not a mapping; write it as `- label: ...` with keyframe: or region:")
    _check_keys(item, _ENTRY_KEYS, "the entry", where)
    label = item.get("label")
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        label = str(label)  # `label: 214` is a room number, not an error
    if not isinstance(label, str) or not label.strip():
        raise InputError(f"{where}: label must be non-empty text (got {label!r})")
    if len(label) > MAX_LABEL_CHARS:
        raise InputError(f"{where}: label has {len(label)} characters; keep it to {MAX_LABEL_CHARS}")
    where = f"{where} ({label!r})"
    if ("keyframe" in item) == ("region" in item):
        raise InputError(f"{where}: give exactly one of keyframe: {{robot, session, id}} or "
                         "region: {center: [x, y, z], radius_m: r}")
    if "keyframe" in item:
        kf = item["keyframe"]
        if not isinstance(kf, Mapping):
            raise InputError(f"{where}: keyframe must be a mapping {{robot, session, id}} (got {kf!r})")
        _check_keys(kf, _KEYFRAME_KEYS, "keyframe", where)
        kid = kf.get("id")
        if not isinstance(kid, int) or isinstance(kid, bool):
            raise InputError(f"{where}: keyframe id must be an integer (got {kid!r})")
        robot, session = kf.get("robot"), kf.get("session")
        for name, value in (("robot", robot), ("session", session)):
            if value is not None and not isinstance(value, (str, int)):
                raise InputError(f"{where}: keyframe {name} must be text (got {value!r})")
        return LabelEntry(label, where, keyframe=(None if robot is None else str(robot),
                                                  None if session is None else str(session), kid))
    region = item["region"]
    if not isinstance(region, Mapping):
        raise InputError(f"{where}: region must be a mapping {{center: [x, y, z], radius_m: r}} (got {region!r})")
    _check_keys(region, _REGION_KEYS, "region", where)
    center, radius = region.get("center"), region.get("radius_m")
    if (not isinstance(center, Sequence) or isinstance(center, str) or len(center) not in (2, 3)
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in center)):
        raise InputError(f"{where}: region center must be [x, y, z] or [x, y] in metres (got {center!r})")
    if not isinstance(radius, (int, float)) or isinstance(radius, bool) or not (0 < radius < math.inf):
        raise InputError(f"{where}: region radius_m must be a positive number of metres (got {radius!r})")
    return LabelEntry(label, where, center=tuple(float(c) for c in center), radius_m=float(radius))


#: Largest labels file read (a labels YAML of 100k entries is about 8 MiB).
MAX_LABELS_BYTES = 16 * 2**20


def _check_regular(st: os.stat_result, path: Path) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"labels file {path} cannot be read: it is a directory; give a YAML file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"labels file {path} cannot be read: it is not a regular file (a FIFO, socket or "
                         "device, which may never end); write the labels to a YAML file and give its path")


def read_labels_yaml(path: str | Path) -> list[LabelEntry]:
    """The entries of a labels file, checked. Raises InputError naming the file (and entry)."""
    import yaml  # PyYAML (base.txt); imported here so core stays light for the detector

    path = Path(path).expanduser()
    try:
        # A FIFO, socket or device is refused before it is opened (opening a FIFO blocks until a writer
        # comes); O_NONBLOCK and the fstat below cover one swapped in between.
        _check_regular(os.stat(path), path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as f:  # bounded: a huge file must not fill the memory
            _check_regular(os.fstat(f.fileno()), path)
            raw = f.read(MAX_LABELS_BYTES + 1)
    except OSError as exc:
        raise InputError(f"labels file {path} cannot be read ({exc.strerror or exc}); check the path") from None
    if len(raw) > MAX_LABELS_BYTES:
        raise InputError(f"labels file {path} is larger than {MAX_LABELS_BYTES // 2**20} MiB; is it the right "
                         "file? (a labels YAML is a short list of `- label: ...` entries)")
    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"labels file {path} is not UTF-8 text (byte {exc.start}); give a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"labels file {path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise InputError(f"labels file {path} must be a list of entries (`- label: ...`), not a "
                         f"{type(doc).__name__}; see docs/place_text.md")
    return [_entry(item, f"labels file {path} entry {i + 1}") for i, item in enumerate(doc)]


def find_keyframe(keyframes: Sequence[Keyframe], kid: int, robot: str | None = None, session: str | None = None,
                  where: str = "") -> int:
    """The map key of keyframe ``kid`` (of ``robot``/``session`` when given; else the id must be unique).

    Raises:
        InputError: no such keyframe, or the id is ambiguous (the message lists robot/session choices).
    """
    hits = [key for key, k in enumerate(keyframes) if int(k.id) == int(kid)
            and (robot is None or k.robot_id == robot) and (session is None or k.session_id == session)]
    prefix = f"{where}: " if where else ""
    named = f"keyframe id {kid}" + (f" of robot {robot!r}" if robot is not None else "") + (
        f" session {session!r}" if session is not None else "")
    if not hits:
        ids = [int(k.id) for k in keyframes]
        span = f"ids {min(ids)}..{max(ids)}" if ids else "no keyframes"
        raise InputError(f"{prefix}the map has no {named} (it holds {span}); check the id, robot and session "
                         "with vpr-ros map export")
    if len(hits) > 1:
        choices = sorted({(keyframes[k].robot_id, keyframes[k].session_id) for k in hits})
        raise InputError(f"{prefix}{named} is in {len(hits)} robot/session pairs {choices}; give robot and "
                         "session too")
    return hits[0]


def _in_region(keyframes: Sequence[Keyframe], entry: LabelEntry) -> list[int]:
    c = np.asarray(entry.center)
    radius = float(entry.radius_m or 0.0)
    keys, dists = [], []
    for key, k in enumerate(keyframes):
        if k.pose is None:
            continue
        d = float(np.linalg.norm(np.asarray(k.pose)[:len(c), 3] - c))
        dists.append(d)
        if d <= radius:
            keys.append(key)
    if not keys:
        nearest = f"the nearest keyframe is {min(dists):.2f} m away" if dists else "no keyframe has a pose"
        raise InputError(f"{entry.where}: no keyframe lies within {radius:g} m of {list(entry.center or ())} "
                         f"({nearest}); widen radius_m or check the frame of the center")
    return keys


def labels_for_keyframes(entries: Sequence[LabelEntry], keyframes: Sequence[Keyframe], source: str = "yaml",
                         stamp_ns: int = 0) -> dict[int, list[PlaceLabel]]:
    """Map key -> labels the entries give it (file order; one label once per keyframe)."""
    out: dict[int, list[PlaceLabel]] = {}
    for entry in entries:
        if entry.keyframe is not None:
            robot, session, kid = entry.keyframe
            keys = [find_keyframe(keyframes, kid, robot, session, entry.where)]
        else:
            keys = _in_region(keyframes, entry)
        for key in keys:
            got = out.setdefault(key, [])
            if all(lb.label != entry.label for lb in got):
                got.append(PlaceLabel(entry.label, source, stamp_ns))
    return out


def load_labels(path: str | Path, keyframes: Sequence[Keyframe], source: str = "yaml",
                stamp_ns: int = 0) -> dict[int, list[PlaceLabel]]:
    """:func:`read_labels_yaml` then :func:`labels_for_keyframes`."""
    return labels_for_keyframes(read_labels_yaml(path), keyframes, source, stamp_ns)
