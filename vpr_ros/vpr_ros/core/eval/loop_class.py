"""One colour code for loop closures: correct / suspect / rejected, and how suspicious a loop is.

The HTML map report (cli/map_report.py), the trajectory plots (cli/report.py, cli/optimize.py) and
the RViz markers (nodes/markers.py) all take a loop's class and colour from here, so a colour means
the same everywhere. Pure data and arithmetic on what a ``LoopClosure`` carries; imports core.types
and core.config only (the default ``verify.min_matches``).

Classes (:func:`classify`), first rule that applies:

* **rejected** (red): a check rejected the loop (the optimiser down-weighted it, geometry or odometry
  dropped it) or the ground truth says it is wrong;
* **correct** (green): the ground truth says it is right;
* **suspect** (orange): no ground truth, and the evidence is weak: the MNN count is below
  ``SUSPECT_MNN_RATIO`` x ``verify.min_matches`` (close to the accept threshold), or geometry ran and
  found no valid relative pose (``geometry_rejection`` set);
* **correct** otherwise (accepted with clear evidence).

Suspicion order (:func:`suspicion_key`, most suspicious first): class (rejected, suspect, correct),
then the MNN count relative to ``verify.min_matches``, then the global similarity. The margin to the
second candidate would come next, but a loop does not store it (LoopClosure carries only its own
candidate); an appearance-only loop (no geometry configured) is not suspect for that alone.
"""

from __future__ import annotations

from vpr_ros.core.config import VerifyConfig
from vpr_ros.core.types import LoopClosure

__all__ = ["CORRECT", "SUSPECT", "REJECTED", "CLASSES", "COLOURS", "LABELS", "SUSPECT_MNN_RATIO",
           "DEFAULT_MIN_MATCHES", "classify", "is_suspect", "mnn_ratio", "suspicion_key", "hex_colour", "rgba"]

CORRECT, SUSPECT, REJECTED = "correct", "suspect", "rejected"
CLASSES = (CORRECT, SUSPECT, REJECTED)
#: RGBA in [0, 1] per class: matplotlib and RViz take it as it is, HTML through :func:`hex_colour`.
COLOURS: dict[str, tuple[float, float, float, float]] = {
    CORRECT: (0.17, 0.63, 0.17, 1.0),   # green
    SUSPECT: (1.0, 0.55, 0.0, 1.0),     # orange
    REJECTED: (0.84, 0.15, 0.16, 1.0),  # red
}
#: What each class means, for legends.
LABELS = {CORRECT: "correct", SUSPECT: "suspect (weak evidence)", REJECTED: "rejected or wrong"}
#: A loop with fewer MNN matches than this times verify.min_matches only just passed verification.
SUSPECT_MNN_RATIO = 1.25
DEFAULT_MIN_MATCHES = VerifyConfig().min_matches


def mnn_ratio(loop: LoopClosure, min_matches: int = DEFAULT_MIN_MATCHES) -> float:
    """MNN count relative to the accept threshold (1.0 = exactly at ``verify.min_matches``)."""
    return float(loop.local_matches) / max(int(min_matches), 1)


def is_suspect(loop: LoopClosure, min_matches: int = DEFAULT_MIN_MATCHES) -> bool:
    """Weak evidence: MNN count close to the threshold, or geometry that found no valid pose."""
    return mnn_ratio(loop, min_matches) < SUSPECT_MNN_RATIO or bool(loop.geometry_rejection)


def classify(loop: LoopClosure, min_matches: int = DEFAULT_MIN_MATCHES, *, rejected: bool = False,
             truth: bool | None = None) -> str:
    """The loop's class (module docstring). truth: the ground truth's verdict, None when unknown."""
    if rejected or truth is False:
        return REJECTED
    if truth is True:
        return CORRECT
    return SUSPECT if is_suspect(loop, min_matches) else CORRECT


def suspicion_key(loop: LoopClosure, min_matches: int = DEFAULT_MIN_MATCHES, *, rejected: bool = False,
                  truth: bool | None = None) -> tuple[int, float, float]:
    """Sort key, most suspicious first: class, MNN count / min_matches, global similarity."""
    rank = {REJECTED: 0, SUSPECT: 1, CORRECT: 2}[classify(loop, min_matches, rejected=rejected, truth=truth)]
    return rank, mnn_ratio(loop, min_matches), float(loop.global_similarity)


def rgba(cls: str) -> tuple[float, float, float, float]:
    return COLOURS[cls]


def hex_colour(cls: str) -> str:
    """``#rrggbb`` of the class, for HTML and SVG."""
    r, g, b, _ = COLOURS[cls]
    return "#" + "".join(f"{round(v * 255):02x}" for v in (r, g, b))
