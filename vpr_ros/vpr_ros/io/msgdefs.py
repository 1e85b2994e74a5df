"""Message definitions for rosbags: ROS 2 Jazzy types plus ``vpr_ros_msgs/msg/LoopClosure``.

The LoopClosure definition is read from ``vpr_ros/data/LoopClosure.msg``, a byte-identical copy of
``vpr_ros_msgs/msg/LoopClosure.msg`` (a test checks it), so bags written without ROS and messages
published by the node share one definition.
"""

from __future__ import annotations

import functools
from importlib import resources

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

__all__ = ["LOOP_CLOSURE_TYPE", "loop_closure_msgdef", "typestore"]

LOOP_CLOSURE_TYPE = "vpr_ros_msgs/msg/LoopClosure"


def loop_closure_msgdef() -> str:
    """The text of ``LoopClosure.msg`` as shipped inside the Python package."""
    return resources.files("vpr_ros").joinpath("data", "LoopClosure.msg").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """A rosbags typestore: ROS 2 Jazzy types with ``vpr_ros_msgs/msg/LoopClosure`` registered.

    Built on first use (not at import) and shared; do not register further types into it.
    """
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(loop_closure_msgdef(), LOOP_CLOSURE_TYPE))
    return store
