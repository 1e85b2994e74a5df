"""``relocalization.png`` of a replay: the fixes over the loaded map's keyframe trajectory (top view,
map frame x-y), each fix joined to its true pose and coloured correct / wrong, as the loop plot of
``cli/report.py`` colours loops. The title leads with what is simulated about the data, if anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from vpr_ros.core.eval.relocalization import WRONG_POSITION_M, WRONG_ROTATION_DEG, FixEvaluation

__all__ = ["plot_fixes"]

COLOURS = {"correct": "tab:green", "wrong": "tab:red", "unknown": "tab:blue"}


def plot_fixes(path: Path, map_poses: Sequence[Any], fixes: Sequence[Any], rows: Sequence[FixEvaluation],
               truth: Sequence[Any | None], data_label: str = "") -> Figure:
    """Map keyframes (grey), the session's true path (dashed), fixes (dots, a line to the truth).
    ``truth``: the true pose of each keyframe of the session (None where unknown); ``rows[i].keyframe``
    indexes it."""
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot()
    if len(map_poses):
        xy = np.array([np.asarray(T)[:2, 3] for T in map_poses])
        ax.plot(xy[:, 0], xy[:, 1], ".", color="0.6", markersize=3, label="map keyframes (map frame)")
    known = [T for T in truth if T is not None]
    if known:
        txy = np.array([np.asarray(T)[:2, 3] for T in known])
        ax.plot(txy[:, 0], txy[:, 1], "--", color="0.2", linewidth=0.8, label="this session, true path")
    seen = set()
    for fix, row in zip(fixes, rows):
        cls = "unknown" if row.position_error_m is None else ("wrong" if row.wrong else "correct")
        p = np.asarray(fix.T_map_base)[:2, 3]
        ax.plot([p[0]], [p[1]], "o", color=COLOURS[cls], markersize=4,
                label=None if cls in seen else f"fix: {cls}")
        seen.add(cls)
        if 0 <= row.keyframe < len(truth) and truth[row.keyframe] is not None and row.position_error_m is not None:
            t = np.asarray(truth[row.keyframe])[:2, 3]
            ax.plot([p[0], t[0]], [p[1], t[1]], color=COLOURS[cls], linewidth=0.6)
    title = (f"relocalisation: {len(fixes)} fixes over the map "
             f"(wrong: > {WRONG_POSITION_M} m or > {WRONG_ROTATION_DEG:.0f} deg)")
    ax.set(xlabel="x [m] (map)", ylabel="y [m] (map)", title=f"{data_label}: {title}" if data_label else title)
    ax.title.set_fontsize(9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return fig
