"""Configuration of the live pose graph (``pose_graph.*``, pose_graph_node, docs/pose_graph.md). Part of
:class:`vpr_ros.core.config.Config`."""

from __future__ import annotations

import dataclasses

from vpr_ros.core.config.checks import check_fields as _check_fields, meta as _meta

__all__ = ["PoseGraphConfig"]


@dataclasses.dataclass(frozen=True)
class PoseGraphConfig:
    """The live pose graph built from odometry and loop closures."""

    robust: str = dataclasses.field(default="cauchy", metadata=_meta(
        "Robust method on loop factors: cauchy, huber, gnc or none.", choices=("cauchy", "huber", "gnc", "none")))

    def __post_init__(self) -> None:
        _check_fields(self, "pose_graph")
