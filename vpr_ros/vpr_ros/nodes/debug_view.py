"""The ``debug_image`` of the node: query | match with MNN correspondences, one per loop closure.

Keeps thumbnails of the most recent keyframes (bounded) so a match can be drawn next to its query.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Sequence

from sensor_msgs.msg import Image

from vpr_ros.core.types import Keyframe, LoopClosure
from vpr_ros.core.matching.verification import mnn_pairs
from vpr_ros.nodes import conversions as conv

__all__ = ["DebugView"]

_THUMBNAILS = 256


class DebugView:
    """Renders debug images; ``publish`` sends one sensor_msgs/Image."""

    def __init__(self, publish: Callable[[Image], None], frame_id: str) -> None:
        self._publish = publish
        self._frame_id = frame_id
        self._thumbnails: collections.OrderedDict[tuple[str, str, int], Any] = collections.OrderedDict()

    def clear(self) -> None:
        self._thumbnails.clear()

    def remember(self, kf: Keyframe, image: Any) -> None:
        self._thumbnails[(kf.robot_id, kf.session_id, kf.id)] = image
        while len(self._thumbnails) > _THUMBNAILS:
            self._thumbnails.popitem(last=False)

    def show(self, loop: LoopClosure, kf: Keyframe, image: Any, keyframes: Sequence[Keyframe]) -> None:
        key = (loop.match_robot_id, loop.match_session_id, loop.match_id)
        match = next((k for k in reversed(keyframes) if (k.robot_id, k.session_id, k.id) == key), None)
        pairs = grid0 = grid1 = None
        if match is not None and kf.local is not None and match.local is not None:
            pairs, grid0, grid1 = mnn_pairs(kf.local, match.local), kf.local.shape[:2], match.local.shape[:2]
        text = f"kf {loop.query_id} <-> {loop.match_id}  score {loop.score:.0f}"
        canvas = conv.render_debug_image(image, self._thumbnails.get(key), pairs, grid0, grid1, text)
        self._publish(conv.rgb_to_image_msg(canvas, loop.query_stamp_ns, self._frame_id))
