"""The detector's geometry step: an accepted loop in, the loop with its measured pose (or None) out.

Kept apart from ``detector.py`` so the detector makes one call per accepted loop:
``LoopGeometry.estimate`` (MNN cells -> keypoints -> PnP/essential) then ``LoopGeometry.apply``
(fill the LoopClosure's pose fields, or drop the loop when ``geometry.on_invalid`` is "reject").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vpr_ros.core.config import GeometryConfig
from vpr_ros.core.geometry.correspondences import GridLayout, grid_layout
from vpr_ros.core.geometry.relative_pose import PoseEstimate, relative_pose
from vpr_ros.core.types import Keyframe, KeyframeGeometry, LoopClosure
from vpr_ros.core.matching.verification import mnn_pairs

__all__ = ["LoopGeometry", "model_layout"]


def model_layout(model: Any, geometry: KeyframeGeometry, grid_hw: tuple[int, int]) -> GridLayout:
    """Grid layout of a keyframe's local map, from the model's preprocessing (``VprModel.spec``,
    ``keep_aspect``); models without them stretch the image to the grid (no crop)."""
    spec = getattr(model, "spec", None)
    keep_aspect = bool(getattr(model, "keep_aspect", False))
    input_size = getattr(spec, "input_size", None)
    multiple = int(getattr(spec, "patch_multiple", 1))
    return grid_layout(geometry.image_hw, grid_hw, input_size, multiple, keep_aspect)


class LoopGeometry:
    """Relative pose for the loops one detector accepts."""

    def __init__(self, config: GeometryConfig, model: Any) -> None:
        self.config = config
        self.model = model

    def estimate(self, query: Keyframe, match: Keyframe) -> PoseEstimate | None:
        """The pose estimate of query vs match; None when geometry is off or either lacks inputs."""
        if self.config.method == "off" or query.geometry is None or match.geometry is None:
            return None
        if query.local is None or match.local is None:
            return None
        cells0, cells1 = mnn_pairs(query.local, match.local)
        layout0 = model_layout(self.model, query.geometry, query.local.shape[:2])
        layout1 = model_layout(self.model, match.geometry, match.local.shape[:2])
        # Seeded by the pair so that replaying a bag gives the same poses.
        seed = (int(query.id) * 1_000_003 + int(match.id)) % (2 ** 31)
        return relative_pose(query.geometry, match.geometry, layout0, layout1, cells0, cells1, self.config, seed)

    def apply(self, loop: LoopClosure, estimate: PoseEstimate | None) -> LoopClosure | None:
        """The loop with its pose fields set; None when the pose is invalid and on_invalid is reject."""
        if estimate is None:
            return loop
        if not estimate.valid:
            if self.config.on_invalid == "reject":
                return None
            return dataclasses.replace(loop, geometry_method=estimate.method,
                                       geometry_rejection=estimate.reason,
                                       translation_scale_known=estimate.scale_known)
        return dataclasses.replace(
            loop, relative_pose=np.asarray(estimate.T_match_query, np.float64),
            covariance=np.asarray(estimate.covariance, np.float64), geometric_inliers=int(estimate.inliers),
            translation_scale_known=estimate.scale_known, geometry_method=estimate.method,
            geometry_rejection="")
