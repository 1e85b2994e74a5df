"""Loop-closure and retrieval metrics: precision/recall/F1, PR curve, AUC, recall@N, latency stats.

Recall is always relative to ``num_positives``: the number of queries that have a true loop among
the keyframes they could have matched (see ``groundtruth.GroundTruth.has_true``).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["PRCurve", "precision_recall_f1", "pr_curve", "max_recall_at_full_precision",
           "average_precision", "recall_at_n", "latency_stats"]


@dataclasses.dataclass(frozen=True)
class PRCurve:
    """Precision and recall when accepting detections with score >= thresholds[k].

    All three are (K,) float64, thresholds strictly decreasing (one point per distinct score).
    """

    thresholds: npt.NDArray[np.float64]
    precision: npt.NDArray[np.float64]
    recall: npt.NDArray[np.float64]


def precision_recall_f1(true_positives: int, false_positives: int, num_positives: int,
                        recalled: int | None = None) -> tuple[float, float, float]:
    """(precision, recall, F1). Precision of no detections is 1.0 (nothing wrong was reported).

    ``recalled``: queries with a correct detection when it differs from ``true_positives`` (several
    detections per query); defaults to ``true_positives``.
    """
    recalled = true_positives if recalled is None else recalled
    detections = true_positives + false_positives
    precision = true_positives / detections if detections else 1.0
    recall = recalled / num_positives if num_positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(precision), float(recall), float(f1)


def pr_curve(scores: Sequence[float], correct: Sequence[bool], num_positives: int) -> PRCurve:
    """Sweep a threshold over detection ``scores`` (one detection per query, (N,) each).

    Detections tied at a score enter together. Empty input gives an empty curve.
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    if s.shape != c.shape:
        raise ValueError(f"scores {s.shape} and correct {c.shape} differ in shape")
    if s.size == 0:
        empty = np.zeros(0)
        return PRCurve(empty, empty.copy(), empty.copy())
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
    tp = np.cumsum(c)
    fp = np.cumsum(~c)
    # last index of each run of equal scores
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    precision = tp[ends] / (tp[ends] + fp[ends])
    recall = tp[ends] / num_positives if num_positives else np.zeros(len(ends))
    return PRCurve(s[ends], precision.astype(np.float64), recall.astype(np.float64))


def max_recall_at_full_precision(curve: PRCurve) -> float:
    """Largest recall at a threshold whose precision is exactly 1 (0.0 when there is none)."""
    full = curve.recall[curve.precision >= 1.0]
    return float(full.max()) if full.size else 0.0


def average_precision(curve: PRCurve) -> float:
    """Area under the PR curve as the step sum ``sum_k (R_k - R_{k-1}) * P_k`` with ``R_0 = 0``."""
    if curve.recall.size == 0:
        return 0.0
    recall = np.r_[0.0, curve.recall]
    return float(np.sum(np.diff(recall) * curve.precision))


def recall_at_n(correct: Sequence[Sequence[bool]], ns: Sequence[int] = (1, 5, 10),
                num_queries: int | None = None) -> dict[int, float]:
    """Fraction of queries with a correct candidate among their first N (retrieval order).

    correct: per query, the correctness of its ranked candidates (ragged). ``num_queries``
    (default ``len(correct)``) is the denominator, e.g. only queries that have a true match.
    """
    total = len(correct) if num_queries is None else num_queries
    if not total:
        return {int(n): 0.0 for n in ns}
    return {int(n): sum(any(list(row)[:n]) for row in correct) / total for n in ns}


def latency_stats(samples: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """Per stage: {"p50", "p95", "mean", "n"} of the samples in milliseconds (empty stages skipped)."""
    stats = {}
    for stage, values in samples.items():
        v = np.asarray(values, dtype=np.float64)
        if v.size:
            stats[stage] = {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
                            "mean": float(v.mean()), "n": int(v.size)}
    return stats
