"""Keyframe geometry in the map store: keypoints, descriptors and 3-D points, one SQLite row per keyframe.

Table ``geometry`` of ``map.sqlite`` (so the manifest's checksum of ``map.sqlite`` covers it); keyframes
without geometry (no camera) have no row. All arrays little-endian, C order::

    key                  keyframes.key of the keyframe
    num_points           N (keypoints)
    image_h, image_w     size of the original image, pixels
    keypoints            N x 2 float32 pixels (distorted, as detected)
    descriptor_encoding  "uint8" (binary, e.g. ORB; loaded as uint8), "float32" (as-is) or
                         "float32-as-uint8" (float32 descriptors whose values are all integers 0..255,
                         as OpenCV's SIFT gives them: stored as uint8, loaded as the identical float32)
    descriptor_dim       B
    descriptors          N x B in the encoding above
    points3d             N x 3 float32 metres in the keyframe's camera frame; NaN rows have no depth
    K, D                 9 float64 (3x3 row-major), k float64 (0..14) distortion
    distortion_model     a model core/geometry/camera.py undistorts (plumb_bob, equidistant, ...)
    T_body_cam           16 float64 (4x4 row-major), the camera's pose in the body frame

Maps saved before this table existed (meta ``geometry`` absent) load with ``geometry = None``; vpr_ros
versions that predate it read maps that have it and ignore the table.

Table ``geometry_noise`` (since issue 21; in ``map.sqlite`` and a live map's ``log.sqlite``, a row
committed with its keyframe's geometry row)::

    key                  keyframes.key of the keyframe (it has a geometry row)
    depth_sigma_coeff    REAL >= 0: its points' depth noise, sigma_z = coeff * z^2 (metres; 0 exact)

A keyframe with geometry but no row (maps written before the table, or by versions that predate it,
which ignore it) loads with ``depth_sigma_coeff`` NaN: unknown, the estimator then uses
``geometry.depth_sigma_coeff`` (a real sensor's noise rather than none). A row naming a keyframe
without geometry, or a negative or non-finite value, is damage.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from vpr_ros.core.geometry.camera import EQUIDISTANT, RADTAN
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.types import Keyframe, KeyframeGeometry

__all__ = ["TABLE", "NOISE_TABLE", "create_table", "geometry_rows", "check_geometry", "read_geometry", "read_one",
           "geometry_keys", "attach", "LazyGeometry", "write_noise", "append_rows"]

TABLE = "geometry"
_COLUMNS = ("key, num_points, image_h, image_w, keypoints, descriptor_encoding, descriptor_dim, descriptors, "
            "points3d, K, D, distortion_model, T_body_cam")
# Bounds a crafted row cannot exceed (config allows max_keypoints <= 20000; OpenCV models have <= 14 coefficients).
MAX_POINTS = 100_000
MAX_DESCRIPTOR_DIM = 1024
MAX_DISTORTION = 14
_ENCODINGS = {"uint8": (np.dtype("<u1"), np.dtype(np.uint8)), "float32": (np.dtype("<f4"), np.dtype(np.float32)),
              "float32-as-uint8": (np.dtype("<u1"), np.dtype(np.float32))}  # stored dtype, loaded dtype
_MODELS = frozenset(RADTAN + EQUIDISTANT)
NOISE_TABLE = "geometry_noise"
_CREATE_NOISE = f"CREATE TABLE IF NOT EXISTS {NOISE_TABLE} (key INTEGER PRIMARY KEY, depth_sigma_coeff REAL NOT NULL)"


def create_table(db: sqlite3.Connection) -> None:
    db.execute(f"CREATE TABLE {TABLE} (key INTEGER PRIMARY KEY, num_points INTEGER NOT NULL, "
               "image_h INTEGER NOT NULL, image_w INTEGER NOT NULL, keypoints BLOB NOT NULL, "
               "descriptor_encoding TEXT NOT NULL, descriptor_dim INTEGER NOT NULL, descriptors BLOB NOT NULL, "
               "points3d BLOB NOT NULL, K BLOB NOT NULL, D BLOB NOT NULL, distortion_model TEXT NOT NULL, "
               "T_body_cam BLOB NOT NULL)")


def _encode_descriptors(desc: np.ndarray) -> tuple[str, bytes]:
    if desc.dtype == np.uint8:
        return "uint8", np.ascontiguousarray(desc).tobytes()
    as_u8 = desc.astype(np.uint8)
    # OpenCV's SIFT gives integers 0..255 in float32: a lossless uint8 copy is a quarter of the size.
    if np.array_equal(as_u8.astype(np.float32), desc):
        return "float32-as-uint8", as_u8.tobytes()
    return "float32", desc.astype("<f4").tobytes()


def check_geometry(kf: Keyframe) -> None:
    """Raise MapStoreError (nothing saved) when ``kf.geometry`` cannot be stored as the table says."""
    g = kf.geometry
    if g is None:
        return
    kp, desc, pts = (np.asarray(a) for a in (g.keypoints, g.descriptors, g.points3d))
    n = kp.shape[0] if kp.ndim == 2 else -1
    problems = [what for what, ok in (
        ("keypoints must be (N, 2)", kp.ndim == 2 and kp.shape[1] == 2),
        (f"descriptors must be (N, B) uint8 or float32 with 1 <= B <= {MAX_DESCRIPTOR_DIM}",
         desc.ndim == 2 and desc.shape[0] == n and 0 < desc.shape[1] <= MAX_DESCRIPTOR_DIM
         and desc.dtype in (np.uint8, np.float32)),
        ("points3d must be (N, 3)", pts.shape == (n, 3)),
        (f"at most {MAX_POINTS} keypoints", n <= MAX_POINTS),
        ("image_hw must be two positive integers", len(g.image_hw) == 2 and all(int(v) > 0 for v in g.image_hw)),
        ("K must be 3x3", np.shape(g.K) == (3, 3)),
        (f"D must have at most {MAX_DISTORTION} values", np.asarray(g.D).ndim == 1 and len(g.D) <= MAX_DISTORTION),
        (f"distortion_model must be one of {sorted(_MODELS)}", g.distortion_model in _MODELS),
        ("T_body_cam must be 4x4", np.shape(g.T_body_cam) == (4, 4)),
        ("depth_sigma_coeff must be >= 0 or NaN (unknown)", _noise_ok(g.depth_sigma_coeff))) if not ok]
    if problems:
        raise MapStoreError(f"keyframe {kf.id} has geometry that cannot be stored ({'; '.join(problems)}); "
                            "nothing was saved")


def geometry_rows(keyframes: Sequence[Keyframe]) -> Iterator[tuple]:
    """Rows of the table for ``keyframes`` (list position = key), lazily: a big map is not copied at once."""
    for key, kf in enumerate(keyframes):
        g = kf.geometry
        if g is None:
            continue
        encoding, desc = _encode_descriptors(np.asarray(g.descriptors))
        yield (key, len(g.keypoints), int(g.image_hw[0]), int(g.image_hw[1]),
               np.asarray(g.keypoints, "<f4").tobytes(), encoding, int(np.shape(g.descriptors)[1]), desc,
               np.asarray(g.points3d, "<f4").tobytes(), np.asarray(g.K, "<f8").tobytes(),
               np.asarray(g.D, "<f8").tobytes(), str(g.distortion_model), np.asarray(g.T_body_cam, "<f8").tobytes())


def _noise_ok(coeff: object) -> bool:
    return isinstance(coeff, (int, float, np.floating)) and (np.isnan(coeff) or 0.0 <= coeff < np.inf)


def _noise_rows(keyframes: Sequence[Keyframe], first_key: int = 0) -> list[tuple[int, float]]:
    return [(first_key + k, float(kf.geometry.depth_sigma_coeff)) for k, kf in enumerate(keyframes)
            if kf.geometry is not None and np.isfinite(kf.geometry.depth_sigma_coeff)]


def write_noise(db: sqlite3.Connection, keyframes: Sequence[Keyframe]) -> None:
    """Snapshot: the ``geometry_noise`` table and a row per keyframe with geometry and a known coefficient."""
    db.execute(_CREATE_NOISE)
    db.executemany(f"INSERT INTO {NOISE_TABLE} VALUES (?, ?)", _noise_rows(keyframes))


def append_rows(db: sqlite3.Connection, key: int, kf: Keyframe) -> None:
    """Live map: keyframe ``key``'s geometry and noise rows inside the caller's transaction (the noise
    table is created when missing, so live maps written before it existed continue)."""
    db.executemany(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * 13)})",
                   [(key, *row[1:]) for row in geometry_rows([kf])])
    rows = _noise_rows([kf], int(key))
    if rows:
        db.execute(_CREATE_NOISE)
        db.executemany(f"INSERT INTO {NOISE_TABLE} VALUES (?, ?)", rows)


def _read_noise(db: sqlite3.Connection, path: Path, keys: set[int], key: int | None = None) -> dict[int, float]:
    """key -> depth_sigma_coeff (all rows, or ``key``'s); {} without the table; damage names the map."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (NOISE_TABLE,)).fetchone():
        return {}
    sql = f"SELECT key, depth_sigma_coeff FROM {NOISE_TABLE}" + ("" if key is None else " WHERE key = ?")
    rows = db.execute(sql, () if key is None else (int(key),)).fetchall()
    bad = [k for k, c in rows if not (isinstance(k, int) and k in keys and isinstance(c, (int, float))
                                      and not isinstance(c, bool) and 0.0 <= c < np.inf)]
    if bad:
        raise MapStoreError(f"map {path}: map.sqlite {NOISE_TABLE} has {len(bad)} rows (keys {bad[:5]}) naming no "
                            "keyframe with geometry or holding a negative or non-finite coefficient; the map is "
                            "damaged — re-create it or load another")
    return {k: float(c) for k, c in rows}


def geometry_keys(db: sqlite3.Connection) -> set[int]:
    """Keys of the keyframes with a geometry row (without reading the rows)."""
    return {key for (key,) in db.execute(f"SELECT key FROM {TABLE}") if isinstance(key, int)}


def read_one(db: sqlite3.Connection, path: Path, key: int, num_keyframes: int) -> KeyframeGeometry | None:
    """Keyframe ``key``'s geometry, checked like :func:`read_geometry`; None when it has no row."""
    row = db.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE key = ?", (int(key),)).fetchone()
    if row is None:
        return None
    g = _geometry(path, row, num_keyframes)
    g.depth_sigma_coeff = _read_noise(db, path, {int(key)}, key).get(int(key), float("nan"))
    return g


def read_geometry(db: sqlite3.Connection, path: Path, num_keyframes: int) -> dict[int, KeyframeGeometry]:
    """key -> KeyframeGeometry of every row, each checked; MapStoreError names map.sqlite and the row."""
    rows = db.execute(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY key").fetchall()
    out = {row[0]: _geometry(path, row, num_keyframes) for row in rows}
    noise = _read_noise(db, path, set(out))
    for key, g in out.items():
        g.depth_sigma_coeff = noise.get(key, float("nan"))
    return out


def _array(blob: object, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
    """The blob as an array of exactly ``shape``, or None when its length does not fit."""
    if not isinstance(blob, bytes) or len(blob) != int(np.prod(shape)) * dtype.itemsize:
        return None
    return np.frombuffer(blob, dtype).reshape(shape).copy()


def _finite_or_nan_rows(pts: np.ndarray) -> bool:
    finite = np.isfinite(pts).all(axis=1)
    return bool(np.all(finite | np.isnan(pts).all(axis=1)))


def _geometry(path: Path, row: tuple, num_keyframes: int) -> KeyframeGeometry:
    key, n, h, w, kp, encoding, dim, desc, pts, K, D, model, T = row

    def bad(what: str) -> MapStoreError:
        return MapStoreError(f"map {path}: map.sqlite {TABLE} row of keyframe key {key} {what}; the map is "
                             "damaged — re-create it or load another")

    ints = (key, n, h, w, dim)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        raise bad("has a field of the wrong type")
    if not 0 <= key < num_keyframes:
        raise bad(f"names no keyframe (keys run 0..{num_keyframes - 1})")
    if not (0 <= n <= MAX_POINTS and 0 < h < 2**16 and 0 < w < 2**16 and 0 < dim <= MAX_DESCRIPTOR_DIM):
        raise bad(f"has out-of-range sizes (N={n}, image {w}x{h}, descriptor length {dim})")
    if encoding not in _ENCODINGS:
        raise bad(f"has descriptor encoding {encoding!r}, expected one of {sorted(_ENCODINGS)}")
    if model not in _MODELS:
        raise bad(f"has distortion model {model!r}")
    stored, loaded = _ENCODINGS[encoding]
    arrays = {"keypoints": _array(kp, np.dtype("<f4"), (n, 2)), "descriptors": _array(desc, stored, (n, dim)),
              "points3d": _array(pts, np.dtype("<f4"), (n, 3)), "K": _array(K, np.dtype("<f8"), (3, 3)),
              "T_body_cam": _array(T, np.dtype("<f8"), (4, 4))}
    d_len = len(D) // 8 if isinstance(D, bytes) and len(D) % 8 == 0 and len(D) <= 8 * MAX_DISTORTION else -1
    arrays["D"] = _array(D, np.dtype("<f8"), (d_len,)) if d_len >= 0 else None
    wrong = [name for name, arr in arrays.items() if arr is None]
    if wrong:
        raise bad(f"has {', '.join(wrong)} of the wrong size for N={n} keypoints and descriptor length {dim}")
    a = arrays
    if not (np.isfinite(a["keypoints"]).all() and np.isfinite(a["descriptors"]).all()):
        raise bad("has NaN or inf keypoints or descriptors")
    if not _finite_or_nan_rows(a["points3d"]):
        raise bad("has 3-D points that are neither finite nor an all-NaN row (no depth)")
    if not (np.isfinite(a["K"]).all() and a["K"][0, 0] > 0 and a["K"][1, 1] > 0 and np.isfinite(a["D"]).all()):
        raise bad("has a camera matrix without positive focal lengths or a non-finite distortion")
    if not (np.isfinite(a["T_body_cam"]).all() and np.allclose(a["T_body_cam"][3], [0, 0, 0, 1])):
        raise bad("has a T_body_cam that is not a finite rigid transform")
    return KeyframeGeometry(keypoints=a["keypoints"].astype(np.float32), descriptors=a["descriptors"].astype(loaded),
                            points3d=a["points3d"].astype(np.float32), image_hw=(h, w), K=a["K"].astype(np.float64),
                            D=a["D"].astype(np.float64), distortion_model=model,
                            T_body_cam=a["T_body_cam"].astype(np.float64))


def attach(keyframes: Iterable[Keyframe], geometry: dict[int, KeyframeGeometry]) -> None:
    """Set ``keyframe.geometry`` from :func:`read_geometry` (list position = key)."""
    for key, kf in enumerate(keyframes):
        kf.geometry = geometry.get(key)


class LazyGeometry:
    """Geometry of a live map's keyframes read one row at a time, for the detector: a keyframe's
    keypoints (150-500 kB with SIFT) stay on disk until a loop needs its relative pose, instead of in
    RAM for every keyframe. Its own read-only connection (WAL: it sees every committed append) so any
    thread may read while the writer appends; rows are checked as :func:`read_geometry` checks them.
    """

    def __init__(self, db_path: Path, keys: set[int]) -> None:
        self._path = db_path
        self._keys = set(keys)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __contains__(self, key: int) -> bool:
        return key in self._keys

    def add(self, key: int) -> None:
        self._keys.add(int(key))

    def read(self, key: int) -> KeyframeGeometry | None:
        if key not in self._keys:
            return None
        with self._lock:
            try:
                if self._db is None:
                    self._db = sqlite3.connect(self._path.as_uri() + "?mode=ro", uri=True, check_same_thread=False)
                return read_one(self._db, self._path.parent, key, 2**62)
            except sqlite3.Error as exc:
                raise MapStoreError(f"map {self._path.parent}: cannot read keyframe key {key}'s geometry from "
                                    f"{self._path.name} ({exc}); re-create the map or load another") from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
