"""Replaying one image bag through a :class:`LoopClosureDetector` and recording what happened.

Shared by ``vpr-ros replay``, ``vpr-ros demo`` and ``vpr-ros bench pipeline``. The result keeps, per
query keyframe, every verified candidate, so evaluation can sweep thresholds afterwards.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import sys
from pathlib import Path
from typing import Callable, Iterator, Mapping

from tqdm import tqdm

from vpr_ros.cli.frame_index import FRAME_INDEX_FILE, Key, load_frame_index, save_frame_index
from vpr_ros.core.detector import LoopClosureDetector, StepResult
from vpr_ros.core.errors import BagError, StampOrderError
from vpr_ros.core.eval.groundtruth import KeyframeRecord
from vpr_ros.core.pipeline import PipelinedDetector, fix_mmap_threshold, set_compute_threads
from vpr_ros.core.types import Frame, Keyframe, LoopClosure
from vpr_ros.io.bags import ImageBag, ReadStats
from vpr_ros.io.frame_sync import GeometryInputs

__all__ = ["CandidateOutcome", "QueryOutcome", "ReplayResult", "replay_bag", "save_frame_index",
           "load_frame_index", "FRAME_INDEX_FILE", "STAMP_POLICIES", "no_frames_error"]

logger = logging.getLogger(__name__)

#: What a replay does with a frame older than the previous one: skip and count it, or stop.
STAMP_POLICIES = ("skip", "abort")



@dataclasses.dataclass(frozen=True)
class CandidateOutcome:
    """One verified candidate of a query keyframe."""

    match: KeyframeRecord
    similarity: float
    rank: int
    score: float
    accepted: bool


@dataclasses.dataclass
class QueryOutcome:
    """One keyframe of the replayed stream; candidates best score first; database_size: map size then."""

    record: KeyframeRecord
    candidates: list[CandidateOutcome]
    database_size: int


@dataclasses.dataclass
class ReplayResult:
    """Everything a replay produced (``records`` = loaded map keyframes, then the new ones)."""

    records: list[KeyframeRecord]
    num_map_keyframes: int
    outcomes: list[QueryOutcome]
    loop_closures: list[LoopClosure]
    timings_ms: dict[str, list[float]]
    num_frames: int
    stats: ReadStats
    model_id: str
    descriptor_dim: int
    #: frames skipped because their stamp went backwards (not in num_frames); first few described
    stamps_backwards: int = 0
    stamps_backwards_examples: list[str] = dataclasses.field(default_factory=list)
    #: accepted loops whose relative pose was not valid, by reason (core/geometry/relative_pose.py REJECTION_REASONS),
    #: published without a pose or dropped (geometry.on_invalid)
    geometry_rejections: dict[str, int] = dataclasses.field(default_factory=dict)
    odometry_rejected: int = 0  # own-stream candidates the odometry gate dropped before verification
    #: the text rule's counters summed over the replay (core/text/rule.py COUNTERS); empty when it is off
    text_rule: dict[str, int] = dataclasses.field(default_factory=dict)
    _lookup: dict[Key, KeyframeRecord] = dataclasses.field(default_factory=dict, init=False, repr=False)

    def record(self, key: Key) -> KeyframeRecord:
        """The record of keyframe ``(robot_id, session_id, keyframe_id)``."""
        if len(self._lookup) != len(self.records):  # records only grow
            self._lookup = {r.key: r for r in self.records}
        return self._lookup[key]


def _record(kf: Keyframe, frame_index: int) -> KeyframeRecord:
    position = None if kf.pose is None else kf.pose[:3, 3].copy()
    return KeyframeRecord(kf.robot_id, kf.session_id, int(kf.id), int(kf.stamp_ns), int(frame_index),
                          position)


def no_frames_error(bag_path: str | Path, image_topic: str, messages: int, stats: ReadStats,
                    backwards: list[str]) -> BagError:
    """Why a replay processed no frame at all: a run that found nothing because it looked at nothing
    must not pass for one that found no loop (exit 2, not 0)."""
    why = []
    if stats.corrupt:
        why.append(f"{stats.corrupt} message(s) unreadable or unusable, e.g. {stats.corrupt_examples[0]}")
    if backwards:
        why.append(f"{len(backwards)} frame(s) skipped because their stamp went backwards, e.g. {backwards[0]}")
    if stats.lost_messages:
        why.append(f"{stats.lost_messages} image message(s) lost in the damaged bag")
    if not why:
        why.append("the topic holds no image message")
    return BagError(f"bag {bag_path}: no frame of {image_topic} could be replayed ({messages} message(s) on the "
                    f"topic; {'; '.join(why)}); no map was saved and no results were written — give the "
                    "right --image-topic, or convert the images to a supported encoding (docs/replay.md)")


def replay_bag(detector: LoopClosureDetector, bag_path: str | Path, image_topic: str,
               pose_topic: str | None = None, *, frame_index: Mapping[Key, int] | None = None,
               progress: bool = False, max_frames: int | None = None,
               on_stamp_backwards: str = "skip", inputs: GeometryInputs | None = None,
               pipeline: bool = True, on_frame: Callable[[int], None] | None = None,
               on_step: Callable[[Frame, StepResult], None] | None = None) -> ReplayResult:
    """Feed every frame of ``image_topic`` to ``detector`` in order and record the outcome.

    ``frame_index`` gives the bag frame index of keyframes already in the detector's map (a loaded
    map; see :func:`load_frame_index`). ``max_frames`` stops early (benchmarks).
    ``on_stamp_backwards``: a frame older than the previous one (a bag with reordered messages, a
    clock jump) is skipped and counted ("skip"), or stops the replay with StampOrderError ("abort").
    ``inputs``: calibration, depth or right images to read with the images (relative poses of loops).
    ``pipeline``: read, decode and run the model one frame ahead on a worker thread while this thread
    searches and verifies (core/pipeline.py); same results, in the same order, as without.
    ``on_frame(frames)``: called after each processed frame with the count so far (benchmarks sample memory).
    ``on_step(frame, step)``: called with each processed frame and its StepResult, in order (relocalisation).
    A bag of which no frame could be processed raises BagError (:func:`no_frames_error`).
    """
    if on_stamp_backwards not in STAMP_POLICIES:
        raise ValueError(f"on_stamp_backwards={on_stamp_backwards!r}; choose one of {STAMP_POLICIES}")
    # The CLI owns the process: explicit pools, so verification's BLAS/FAISS/OpenCV threads take one
    # core beside the model's instead of spinning on both (docs/benchmarks.md, "Thread counts").
    set_compute_threads()
    torch = sys.modules.get("torch")  # loaded with a model: preprocessing resizes with it
    if torch is not None:
        torch.set_num_threads(detector.config.model.threads)
    fix_mmap_threshold()  # RSS grows by what the map stores, not by heap fragmentation around it
    known = dict(frame_index or {})
    records = [_record(kf, known.get((kf.robot_id, kf.session_id, kf.id), -1)) for kf in detector.keyframes]
    num_map = len(records)
    by_key = {r.key: r for r in records}
    outcomes: list[QueryOutcome] = []
    loops: list[LoopClosure] = []
    timings: dict[str, list[float]] = {}
    frames = 0
    backwards: list[str] = []
    gated = 0
    rejections: dict[str, int] = {}
    text_rule: dict[str, int] = {}
    with ImageBag(bag_path, image_topic, pose_topic, inputs=inputs) as bag:
        bar = tqdm(total=bag.num_images if max_frames is None else min(max_frames, bag.num_images),
                   # None: tqdm draws only on a terminal, so CI logs stay readable.
                   disable=None if progress else True, unit="frame", desc=Path(bag_path).name,
                   leave=False)
        # The bag's position (and, for an early stop, its counters) travel with each frame: with the
        # pipeline the bag is read ahead on the worker thread.
        snapshot = max_frames is not None
        source = ((frame, (bag.message_index, copy.deepcopy(bag.stats) if snapshot else None)) for frame in bag)
        items: Iterator[tuple[Frame, tuple[int, ReadStats | None], Callable[[], StepResult]]]
        stream = PipelinedDetector(detector).stream(source) if pipeline else None
        if stream is not None:
            items = ((it.frame, it.tag, it.process) for it in stream)
        else:
            items = ((frame, tag, functools.partial(detector.process, frame)) for frame, tag in source)
        stats_at_stop = None
        try:
            for frame, (message_index, stats_then), process in items:
                if max_frames is not None and frames >= max_frames:
                    stats_at_stop = stats_then  # what the sequential loop had read when it stopped
                    break
                try:
                    step = process()
                except StampOrderError as exc:
                    if on_stamp_backwards == "abort":
                        raise StampOrderError(
                            f"bag {bag_path}, message {message_index} of {image_topic}: {exc}; "
                            "or replay with --on-stamp-backwards skip") from None
                    # One reordered message must not cost the whole replay; the stream goes on.
                    backwards.append(f"message {message_index}: stamp {frame.stamp_ns} ns")
                    if len(backwards) <= 5:
                        logger.warning("skipping frame %d of %s: %s", message_index, image_topic, exc)
                    bar.update(1)
                    continue
                frames += 1
                bar.update(1)
                if on_frame is not None:
                    on_frame(frames)
                if on_step is not None:
                    on_step(frame, step)
                gated += step.odometry_rejected
                for name, n in step.text_rule.items():
                    text_rule[name] = text_rule.get(name, 0) + n
                for stage, ms in step.timings_ms.items():
                    timings.setdefault(stage, []).append(ms)
                if step.keyframe is None:
                    continue
                candidates = []
                for v in step.verifications:
                    kf = detector.keyframe(v.candidate.keyframe_id)
                    candidates.append(CandidateOutcome(
                        by_key[(kf.robot_id, kf.session_id, kf.id)], v.candidate.similarity,
                        v.candidate.rank, float(v.score), bool(v.accepted)))
                record = _record(step.keyframe, message_index)
                outcomes.append(QueryOutcome(record, candidates, len(records)))
                records.append(record)
                by_key[record.key] = record
                loops.extend(step.loop_closures)
                if step.geometry_rejection:
                    rejections[step.geometry_rejection] = rejections.get(step.geometry_rejection, 0) + 1
        finally:
            if stream is not None:
                stream.close()  # before the bag closes under the worker
            bar.close()
        stats = bag.stats if stats_at_stop is None else stats_at_stop
        if frames == 0 and max_frames != 0:
            raise no_frames_error(bag_path, image_topic, bag.num_images, stats, backwards)
    return ReplayResult(records, num_map, outcomes, loops, timings, frames, stats,
                        detector.model_id, int(detector.model.global_dim), odometry_rejected=gated,
                        stamps_backwards=len(backwards), stamps_backwards_examples=backwards[:5],
                        geometry_rejections=rejections, text_rule=text_rule)
