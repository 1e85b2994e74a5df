"""Loop-closure metrics on hand-computed cases."""

import numpy as np
import pytest

from vpr_ros.core.eval.metrics import (average_precision, latency_stats, max_recall_at_full_precision,
                                       pr_curve, precision_recall_f1, recall_at_n)


def test_precision_recall_f1_by_hand():
    # 3 correct, 1 wrong, 6 queries with a true loop: P = 3/4, R = 3/6, F1 = 2*.75*.5/1.25 = 0.6
    p, r, f1 = precision_recall_f1(3, 1, 6)
    assert (p, r) == (0.75, 0.5) and f1 == pytest.approx(0.6)


def test_precision_recall_edge_cases():
    assert precision_recall_f1(0, 0, 5) == (1.0, 0.0, 0.0)   # nothing reported: nothing wrong
    assert precision_recall_f1(0, 4, 0) == (0.0, 0.0, 0.0)
    # two correct loops of the same query recall it once
    assert precision_recall_f1(2, 0, 4, recalled=1)[1] == 0.25


def test_pr_curve_by_hand():
    # scores sorted: 9 T, 8 T, 7 F, 6 T, 5 F; 4 positives
    curve = pr_curve([7, 9, 5, 8, 6], [False, True, False, True, True], 4)
    assert curve.thresholds.tolist() == [9, 8, 7, 6, 5]
    np.testing.assert_allclose(curve.precision, [1, 1, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(curve.recall, [0.25, 0.5, 0.5, 0.75, 0.75])
    assert max_recall_at_full_precision(curve) == 0.5
    # AP = .25*1 + .25*1 + 0*(2/3) + .25*.75 + 0 = 0.6875
    assert average_precision(curve) == pytest.approx(0.6875)


def test_pr_curve_ties_enter_together():
    curve = pr_curve([5, 5, 3], [True, False, True], 2)
    assert curve.thresholds.tolist() == [5, 3]
    np.testing.assert_allclose(curve.precision, [0.5, 2 / 3])
    np.testing.assert_allclose(curve.recall, [0.5, 1.0])
    assert max_recall_at_full_precision(curve) == 0.0


def test_perfect_and_empty_curves():
    perfect = pr_curve([3, 2, 1], [True, True, True], 3)
    assert average_precision(perfect) == pytest.approx(1.0)
    assert max_recall_at_full_precision(perfect) == 1.0
    empty = pr_curve([], [], 3)
    assert empty.recall.size == 0 and average_precision(empty) == 0.0
    assert max_recall_at_full_precision(empty) == 0.0
    with pytest.raises(ValueError, match="shape"):
        pr_curve([1, 2], [True], 1)


def test_recall_at_n_by_hand():
    rows = [[True, False], [False, False, True], [False], [False, True]]
    assert recall_at_n(rows, (1, 2, 3)) == {1: 0.25, 2: 0.5, 3: 0.75}
    assert recall_at_n(rows, (3,), num_queries=6) == {3: 0.5}
    assert recall_at_n([], (1,)) == {1: 0.0}


def test_latency_stats():
    stats = latency_stats({"extract": list(range(1, 101)), "empty": []})
    assert set(stats) == {"extract"}
    assert stats["extract"]["p50"] == pytest.approx(50.5)
    assert stats["extract"]["p95"] == pytest.approx(95.05)
    assert stats["extract"]["mean"] == pytest.approx(50.5) and stats["extract"]["n"] == 100
