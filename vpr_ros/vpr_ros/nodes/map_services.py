"""The node's map I/O: ``~/save_map``, ``~/load_map``, ``~/reset``, periodic autosave, shutdown save.

With ``map.append`` (default) and ``map.save_path`` set, :meth:`MapKeeper.start` attaches a live map
there (core/map/live_map.py): every keyframe is on disk as it is made, autosave has nothing to do, and
``~/save_map`` to another path writes a snapshot (copy) of the live map.

Without a live map, the node owns ``map.save_path`` from start to shutdown (core/map/ownership.py): no
other node, replay or map tool may write that map meanwhile. ``~/reset`` starts a new session and keeps
every keyframe, in memory and on disk. While keyframes wait for a full disk (``store_pending``), the
processing thread retries every :data:`RETRY_SEC`.

ROS-free on purpose (the node turns results into service responses), so that every way a map
operation can fail ends here as ``MapResult(success=False, message)``: a service callback that
raises takes the whole executor, and with it every keyframe in memory, down.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from vpr_ros.core.config import MapConfig
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import VprError
from vpr_ros.core.map.ownership import DirLock
from vpr_ros.core.map.snapshot import check_save_target
from vpr_ros.core.types import Keyframe

__all__ = ["MapResult", "MapKeeper", "keyframe_bytes", "check_save_path", "RETRY_SEC"]

RETRY_SEC = 5.0  # how often keyframes waiting for the live map's disk are retried without new keyframes


@dataclasses.dataclass(frozen=True)
class MapResult:
    """Outcome of one map operation (what a service response carries)."""

    success: bool
    message: str
    num_keyframes: int = 0


def keyframe_bytes(kf: Keyframe) -> int:
    """Descriptor bytes one keyframe keeps in memory (global + dense local features)."""
    return int(kf.global_.nbytes) + (0 if kf.local is None else int(kf.local.nbytes))


def check_save_path(path: str) -> str | None:
    """Why ``path`` cannot be a save target (None when it can).

    ``.``, ``..``, ``/`` or a path ending in them names no map directory of its own: a save there
    would replace the current directory or a parent of it.
    """
    if not path.strip():
        return "the path is empty"
    if Path(path).name in ("", ".", ".."):
        return (f"{path!r} ({os.path.abspath(path)}) names no directory of its own; give a new or "
                "existing map directory such as 'maps/office'")
    return None


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, VprError) else f"{type(exc).__name__}: {exc}"


class MapKeeper:
    """Saves, loads and resets the detector's map under the node's detector lock; never raises.

    ``count(key)`` receives ``autosaves`` / ``autosave_failures`` (the node's diagnostics counters).
    """

    def __init__(self, detector: LoopClosureDetector, lock: threading.Lock, config: MapConfig,
                 logger: logging.Logger | object, count: Callable[[str], None]) -> None:
        self.detector = detector
        self.lock = lock
        self.config = config
        self.logger = logger
        self._count = count
        self._bytes = 0
        self._changed = False
        self._last_save = time.monotonic()
        self._last_retry = time.monotonic()
        self._owner: DirLock | None = None  # map.save_path while this node saves snapshots there
        self._recount()

    # -- memory --------------------------------------------------------------------------
    @property
    def map_bytes(self) -> int:
        """Descriptor bytes of every keyframe in the map (estimate of the map's memory)."""
        return self._bytes

    def over_budget(self) -> str | None:
        """A warning when ``map.memory_budget_mb`` is set and exceeded, else None."""
        budget = self.config.memory_budget_mb
        used = self._bytes / 1e6
        if budget > 0 and used > budget:
            return (f"map holds {used:.1f} MB of descriptors, over map.memory_budget_mb={budget:g}; "
                    "raise keyframes.min_gap_sec / min_translation_m or save and reset the map")
        return None

    def _recount(self) -> None:
        self._bytes = sum(keyframe_bytes(k) for k in self.detector.keyframes)

    def added(self, kf: Keyframe) -> None:
        """The processing thread made ``kf`` a keyframe."""
        # With a live map its local features stay on disk, not in memory.
        self._bytes += int(kf.global_.nbytes) if self.detector.store is not None else keyframe_bytes(kf)
        self._changed = True

    def changed(self) -> None:
        """Text or labels of a keyframe changed: the next autosave must write them (a live map has)."""
        self._changed = True

    # -- operations ----------------------------------------------------------------------
    def start(self) -> MapResult:
        """Attach the live map at ``map.save_path`` when ``map.append`` is on. Without it, check now that
        the snapshots (autosave, shutdown) may replace that path, rather than at the first autosave."""
        path = self.config.save_path
        if not path:
            return MapResult(True, "no live map (map.save_path empty)")
        refusal = check_save_path(path)
        if refusal is not None:
            return MapResult(False, f"refusing map.save_path: {refusal}")
        if not self.config.append:
            try:
                target = check_save_target(path)
                self._owner = DirLock(target) if target.is_dir() else DirLock.empty(target)
            except Exception as exc:  # noqa: BLE001
                return self._failed("use", path, exc)
            return MapResult(True, f"no live map (map.append false); snapshots go to {path}")
        try:
            with self.lock:
                try:
                    n = self.detector.attach_store(path)
                finally:
                    self._recount()
        except Exception as exc:  # noqa: BLE001
            return self._failed("open the live map", path, exc)
        return MapResult(True, f"appending keyframes to live map {path} ({n} keyframes continued from it)", n)

    def close(self) -> None:
        with self.lock:
            self.detector.detach_store()
        if self._owner is not None:
            self._owner.release()
            self._owner = None

    def retry_store(self, now: float | None = None) -> None:
        """Retry keyframes waiting for the live map's disk (processing thread, between frames)."""
        now = time.monotonic() if now is None else now
        if self.detector.store_pending and now - self._last_retry >= RETRY_SEC:
            self._last_retry = now
            with self.lock:
                self.detector.flush_store()

    def store_status(self) -> tuple[dict[str, str], str | None]:
        """Diagnostics of the live map's writes, and a warning while keyframes wait or were refused."""
        d = self.detector
        values = {"map_store_pending": str(d.store_pending), "map_store_failures": str(d.store_failures),
                  "map_store_refused": str(d.store_refused)}
        if d.store_pending:
            return values, (f"{d.store_pending} keyframes are not on disk ({d.store_error}); they are kept in "
                            "memory and retried — free disk space")
        if d.store_refused:
            return values, f"{d.store_refused} keyframes or loops could not be stored in the map (see the log)"
        return values, None
    def save(self, path: str) -> MapResult:
        refusal = check_save_path(path)
        if refusal is not None:
            return MapResult(False, f"refusing to save the map: {refusal}")
        try:
            with self.lock:
                owner = self._owner if self._owner is not None and path == self.config.save_path else None
                n = self.detector.save_map(path, owner=owner)
                self._changed = False
                self._last_save = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - any failure is an answer, never a dead node
            return self._failed("save the map to", path, exc)
        return MapResult(True, f"saved {n} keyframes to {path}", n)

    def load(self, path: str) -> MapResult:
        try:
            with self.lock:
                try:
                    n = self.detector.load_map(path)
                finally:
                    self._recount()  # whatever the detector holds now, even after a failure
                self._changed = True
        except Exception as exc:  # noqa: BLE001
            return self._failed("load the map from", path, exc)
        return MapResult(True, f"loaded {n} keyframes from {path}", n)

    def reset(self) -> MapResult:
        """A new session: the temporal state is cleared, every keyframe is kept (memory and disk)."""
        try:
            with self.lock:
                session = self.detector.new_session()
                self._changed = True
        except Exception as exc:  # noqa: BLE001
            return self._failed("reset", "the map", exc)
        return MapResult(True, f"temporal state cleared; new session {session!r} (the {self.detector.num_keyframes} "
                               "keyframes of the map are kept, in memory and on disk)", self.detector.num_keyframes)

    def autosave_due(self, now: float | None = None) -> bool:
        period = self.config.autosave_sec
        now = time.monotonic() if now is None else now
        return bool(self.config.save_path and period > 0 and self._changed and self.detector.store is None
                    and now - self._last_save >= period)

    def autosave(self) -> MapResult | None:
        """Save to ``map.save_path`` when due (called by the processing thread between frames)."""
        if not self.autosave_due():
            return None
        result = self.save(self.config.save_path)
        # A failing target is retried one period later, not on every frame.
        self._last_save = time.monotonic()
        self._count("autosaves" if result.success else "autosave_failures")
        return result

    def _failed(self, what: str, path: str, exc: BaseException) -> MapResult:
        message = f"could not {what} {path}: {_describe(exc)}"
        if not isinstance(exc, (VprError, OSError, ValueError)):
            # Not a failure the store foresaw: log the type so it can be reported as a bug.
            self.logger.error(f"unexpected {type(exc).__name__} during map I/O: {exc}")
        return MapResult(False, message)
