"""Places with names in the node (issue 13, docs/place_text.md "In the node").

``~/label_place`` attaches a label to a keyframe (the newest one by default), ``~/find_place`` ranks
the map's keyframes by a text query over their labels and OCR text, and ``place`` tells where the
robot is when its current keyframe matched a labelled one, with the evidence. With ``text.ocr``
background, a worker reads every new keyframe after it is stored and the text joins the map; with
inline, the detector reads it before verification (the text rule sees it at once).

One :class:`PlaceServices` per LoopClosureNode. Every service answer is a success flag and a message:
a bad request or a failing map write never raises into the executor, and the node keeps running.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from rclpy.node import Node
from vpr_ros_msgs.msg import Place, PlaceMatch as PlaceMatchMsg
from vpr_ros_msgs.srv import FindPlace, LabelPlace

from vpr_ros.core.config import Config
from vpr_ros.core.detector import LoopClosureDetector, StepResult
from vpr_ros.core.errors import ConfigError, VprError
from vpr_ros.core.keyframes import find_key
from vpr_ros.core.text.labels import load_labels
from vpr_ros.core.text.place_text import PlaceLabel
from vpr_ros.core.text.query import Embedder, PlaceMatch, find_places
from vpr_ros.core.text.rule import COUNTERS as TEXT_RULE_COUNTERS
from vpr_ros.core.types import Keyframe, LoopClosure, Verification
from vpr_ros.nodes.conversions import matrix_to_pose_msg, ns_to_stamp
from vpr_ros.nodes.node_ocr import Identity, NodeOcr, keyframe_identity as _identity

__all__ = ["PlaceServices", "place_msg"]

_DEFAULT_LIMIT = 10


def place_msg(query: Keyframe, match: Keyframe, best: Verification, loops: Sequence[LoopClosure],
              frame_id: str) -> Place | None:
    """The ``place`` message when ``match``, the query's best accepted match (``best``), carries labels."""
    if not match.labels:
        return None
    msg = Place(labels=[lb.label for lb in match.labels], query_keyframe_id=query.id,
                query_robot_id=query.robot_id, query_session_id=query.session_id, match_keyframe_id=match.id,
                match_robot_id=match.robot_id, match_session_id=match.session_id, score=float(best.score),
                global_similarity=float(best.candidate.similarity), verification_method=best.method)
    msg.header.stamp = ns_to_stamp(query.stamp_ns)
    msg.header.frame_id = frame_id
    msg.match_stamp = ns_to_stamp(match.stamp_ns)
    msg.loop_closure = any((lc.match_robot_id, lc.match_session_id, lc.match_id) == _identity(match)[:3]
                           for lc in loops)
    return msg


class PlaceServices:
    """Services, topic, OCR and counters of places for one node.

    ``lock`` is the node's detector lock: held by the processing thread around ``detector.process``
    and :meth:`keyframe`, taken here by the services and by OCR results. ``changed()`` is called after
    a label or text changed the map, so that autosave writes a snapshot map even when no keyframe came.
    """

    def __init__(self, node: Node, detector: LoopClosureDetector, lock: threading.Lock, config: Config,
                 warn: Callable[[str, str], None], changed: Callable[[], None] = lambda: None) -> None:
        self._node = node
        self._detector = detector
        self._lock = lock
        self._config = config
        self._frame_id = config.detector.map_frame
        self._changed = changed
        self._current: tuple[int, Identity] | None = None  # the newest keyframe this node made
        self._counts_lock = threading.Lock()
        self.counters = {"places_published": 0, "labels_added": 0}
        self.text_rule = dict.fromkeys(TEXT_RULE_COUNTERS, 0) if config.text.rule else {}
        self._text_embedder: Embedder | None = None
        self._embedder_error = ""
        self.ocr = NodeOcr(config.text, detector, lock, node.get_logger(), warn, changed)
        self._apply_labels_yaml()
        self._pub = node.create_publisher(Place, "place", 10)
        node.create_service(LabelPlace, "~/label_place", self._on_label_place)
        node.create_service(FindPlace, "~/find_place", self._on_find_place)

    # -- processing thread ---------------------------------------------------------------
    def keyframe(self, result: StepResult, image: Any) -> None:
        """The processing thread made ``result.keyframe`` (detector lock held): OCR, counters, ``place``."""
        kf = result.keyframe
        if kf is None:
            return
        key = find_key(self._detector.keyframes, kf.robot_id, kf.session_id, kf.id)  # the last one, usually
        if key is not None:
            self._current = (key, _identity(kf))
            self.ocr.submit(key, _identity(kf), image)
        with self._counts_lock:
            for name, n in result.text_rule.items():
                self.text_rule[name] = self.text_rule.get(name, 0) + int(n)
        # Verifications are sorted best first (after the text rule, when on): the first accepted one is
        # the match the detector stands behind, published as a loop once temporal consistency holds.
        best = next((v for v in result.verifications if v.accepted), None)
        if best is None:
            return
        msg = place_msg(kf, self._detector.keyframe(best.candidate.keyframe_id), best, result.loop_closures,
                        self._frame_id)
        if msg is not None:
            self._pub.publish(msg)
            self._count("places_published")

    # -- services (executor thread) ------------------------------------------------------
    def _on_label_place(self, request: LabelPlace.Request, response: LabelPlace.Response) -> LabelPlace.Response:
        label = request.label.strip()
        if not label:
            return self._answer(response, False, "label is empty; give the place's name, e.g. 'Room 214'")
        try:
            with self._lock:
                key, message = self._label_target(request)
                if key is None:
                    return self._answer(response, False, message)
                kf = self._detector.keyframe(key)
                stamp = self._node.get_clock().now().nanoseconds
                self._detector.add_label(key, PlaceLabel(label, request.source.strip() or "user", stamp))
                self._changed()
        except (VprError, OSError, ValueError) as exc:
            return self._answer(response, False, f"could not store the label {label!r}: {exc}")
        self._count("labels_added")
        response.keyframe_id, response.robot_id, response.session_id = kf.id, kf.robot_id, kf.session_id
        self._node.get_logger().info(f"labelled keyframe {kf.id} ({kf.robot_id}/{kf.session_id}) {label!r}")
        return self._answer(response, True, f"labelled keyframe {kf.id} of {kf.robot_id}/{kf.session_id} "
                                            f"{label!r}")

    def _label_target(self, request: LabelPlace.Request) -> tuple[int | None, str]:
        """Map key the request names (detector lock held), or None and why."""
        keyframes = self._detector.keyframes
        if request.keyframe_id == -1:
            current = self._current
            if current is None:
                return None, ("this node has made no keyframe yet (or the map was reset); wait for camera "
                              "images or give keyframe_id")
            key, ident = current
            if key >= len(keyframes) or _identity(keyframes[key]) != ident:
                return None, ("the newest keyframe is no longer in the map (reset or load_map since); "
                              "give keyframe_id")
            return key, ""
        if request.keyframe_id < 0:
            return None, f"keyframe_id {request.keyframe_id} is invalid; give an id >= 0, or -1 for the newest"
        det = self._config.detector
        robot = request.robot_id or det.robot_id
        session = request.session_id or det.session_id
        key = find_key(keyframes, robot, session, request.keyframe_id)
        if key is None:
            ids = [kf.id for kf in keyframes if (kf.robot_id, kf.session_id) == (robot, session)]
            held = f"ids {min(ids)}..{max(ids)}" if ids else "none"
            return None, (f"no keyframe {request.keyframe_id} of robot {robot!r} session {session!r} in the "
                          f"map ({len(keyframes)} keyframes; of that robot and session: {held})")
        return key, ""

    def _on_find_place(self, request: FindPlace.Request, response: FindPlace.Response) -> FindPlace.Response:
        text = request.text.strip()
        if not text:
            return self._answer(response, False, "text is empty; give what to look for, e.g. 'room 214'")
        limit = int(request.limit) or _DEFAULT_LIMIT
        with self._lock:  # the list, not the keyframes: their text and labels are read without the lock
            keyframes = self._detector.keyframes
        embedder, note = self._embedder()
        try:  # off the detector lock: embedding a large map's text the first time takes seconds
            found = find_places(keyframes, text, limit=limit, embedder=embedder,
                                min_confidence=self._config.text.min_confidence)
        except (VprError, ValueError) as exc:
            shown = text if len(text) <= 80 else text[:80] + "..."
            return self._answer(response, False, f"query {shown!r} failed: {exc}")
        response.matches = [self._match_msg(keyframes[m.key], m) for m in found]
        # Say first when nothing matches exactly; another number never is a match (core/text/query.py).
        exact = "" if any(m.exact for m in found) else f"no exact match for {text!r}; "
        return self._answer(response, True, f"{exact}{len(found)} of {len(keyframes)} keyframes match {text!r}{note}")

    def _embedder(self) -> tuple[Embedder | None, str]:
        """The sentence embedder (loaded at the first query), or None and a note why tokens only."""
        if not self._config.text.query_embedding:
            return None, ""
        if self._embedder_error:
            return None, f" (token matching only: {self._embedder_error})"
        if self._text_embedder is None:
            try:
                from vpr_ros.models.text_embedding import TextEmbedder  # torch and ~90 MB only when used

                self._text_embedder = TextEmbedder()
            except VprError as exc:
                self._embedder_error = str(exc)
                self._node.get_logger().error(f"text.query_embedding: {exc}; find_place matches tokens only")
                return None, f" (token matching only: {exc})"
        return self._text_embedder, ""

    @staticmethod
    def _match_msg(kf: Keyframe, match: PlaceMatch) -> PlaceMatchMsg:
        msg = PlaceMatchMsg(keyframe_id=kf.id, robot_id=kf.robot_id, session_id=kf.session_id,
                            stamp=ns_to_stamp(kf.stamp_ns), score=float(match.score), how=match.how,
                            evidence=match.evidence, labels=[lb.label for lb in kf.labels])
        if kf.pose is not None:
            msg.pose_valid = True
            msg.pose = matrix_to_pose_msg(kf.pose)
        return msg

    # -- labels YAML, diagnostics, shutdown ----------------------------------------------------
    def _apply_labels_yaml(self) -> None:
        """Labels of ``text.labels_yaml`` onto the map loaded at startup; a bad file stops startup."""
        path = self._config.text.labels_yaml
        if not path:
            return
        with self._lock:
            try:
                labels = load_labels(path, self._detector.keyframes)
            except VprError as exc:  # names the file and the entry; the node exits with it
                raise ConfigError(f"text.labels_yaml: {exc}") from exc
            for key, items in sorted(labels.items()):
                for item in items:  # a restart on a live map must not repeat them
                    if all(lb.label != item.label for lb in self._detector.keyframe(key).labels):
                        self._detector.add_label(key, item)
                        self._changed()
        self._node.get_logger().info(f"text.labels_yaml: {sum(map(len, labels.values()))} labels on "
                                     f"{len(labels)} keyframes from {path}")

    def _count(self, name: str) -> None:
        with self._counts_lock:
            self.counters[name] += 1

    def diagnostics(self) -> dict[str, str]:
        """Key/values for the node's diagnostics: labels, places published, OCR and text rule counters."""
        keyframes = self._detector.keyframes  # a tuple copy; counting needs no lock
        out = {"labels": str(sum(len(kf.labels) for kf in keyframes)),
               "labelled_keyframes": str(sum(1 for kf in keyframes if kf.labels)),
               "text_keyframes": str(sum(1 for kf in keyframes if kf.text))}
        with self._counts_lock:
            out.update({k: str(v) for k, v in self.counters.items()})
            out.update({f"text_rule.{k}": str(v) for k, v in sorted(self.text_rule.items())})
        out.update(self.ocr.diagnostics())
        return out

    def close(self) -> None:
        """Stop the OCR worker (results still queued are dropped)."""
        self.ocr.close()

    @staticmethod
    def _answer(response: Any, success: bool, message: str) -> Any:
        response.success, response.message = success, message
        return response
