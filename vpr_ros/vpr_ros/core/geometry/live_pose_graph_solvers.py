"""The two solvers behind :class:`vpr_ros.core.geometry.live_pose_graph.LivePoseGraph`.

Both hold every factor and a current estimate of every keyframe pose, keyed by the graph's node
index; the graph hands them new factors and initial guesses and asks for estimates.

* :class:`Isam2Solver` (default): GTSAM iSAM2, one incremental update per call (plus
  ``loop_iterations`` extra iterations when loops were added, so robust kernels settle).
* :class:`BatchSolver`: Levenberg-Marquardt over the whole graph (the offline graph's optimiser),
  every ``batch_every`` keyframes (loops wait for it) or when forced; keyframes in between keep the
  guess they were given (the last estimate chained on odometry).

``rebuild`` starts over from a full factor list and guesses (after two graphs were joined, whose
poses all moved into one map frame).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import gtsam
import numpy as np
import numpy.typing as npt

__all__ = ["Isam2Solver", "BatchSolver", "Solver"]

F64 = npt.NDArray[np.float64]


class Isam2Solver:
    """Incremental smoothing and mapping (iSAM2) over the graph."""

    name = "isam2"

    def __init__(self, relinearize_threshold: float = 0.01, loop_iterations: int = 2) -> None:
        self._threshold = relinearize_threshold
        self._loop_iterations = loop_iterations
        self._isam = self._new()

    def _new(self) -> gtsam.ISAM2:
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(self._threshold)
        params.relinearizeSkip = 1
        params.enablePartialRelinearizationCheck = True  # only cliques an update touched: O(1) on a chain
        return gtsam.ISAM2(params)

    def update(self, factors: Sequence[gtsam.NonlinearFactor], guesses: Mapping[int, F64], loops_added: bool,
               keyframes_added: int, inliers: Sequence[bool] = (), force: bool = False) -> bool:
        """Add ``factors`` and initial ``guesses`` (node -> (4, 4)); returns whether the estimate changed.
        ``inliers`` (GNC's known inliers) and ``force`` are not used: every update solves."""
        if not factors and not guesses:
            return False
        graph = gtsam.NonlinearFactorGraph()
        for factor in factors:
            graph.add(factor)
        values = gtsam.Values()
        for node, pose in guesses.items():
            values.insert(node, gtsam.Pose3(pose))
        self._isam.update(graph, values)
        if loops_added:
            for _ in range(self._loop_iterations):
                self._isam.update()
        return True

    def rebuild(self, factors: Sequence[gtsam.NonlinearFactor], guesses: Mapping[int, F64],
                inliers: Sequence[bool] = ()) -> None:
        self._isam = self._new()
        self.update(factors, guesses, loops_added=True, keyframes_added=len(guesses))

    def pose(self, node: int) -> F64:
        return self._isam.calculateEstimatePose3(node).matrix()

    def values(self) -> gtsam.Values:
        return self._isam.calculateEstimate()

    def marginal(self, node: int) -> F64:
        """(6, 6) marginal covariance of ``node`` in GTSAM's tangent order [rot, trans], body frame."""
        return np.asarray(self._isam.marginalCovariance(node), np.float64)


class BatchSolver:
    """Levenberg-Marquardt over the whole graph at a bounded interval."""

    name = "batch"

    def __init__(self, batch_every: int = 50, robust: str = "cauchy", gnc_inlier_probability: float = 0.99) -> None:
        self._every = batch_every
        self._robust = robust
        self._gnc_probability = gnc_inlier_probability
        self._graph = gtsam.NonlinearFactorGraph()
        self._values = gtsam.Values()
        self._since = 0
        self._dirty = False
        self._known_inliers: list[int] = []

    def update(self, factors: Sequence[gtsam.NonlinearFactor], guesses: Mapping[int, F64], loops_added: bool,
               keyframes_added: int, inliers: Sequence[bool] = (), force: bool = False) -> bool:
        """Add factors and guesses; optimise once ``batch_every`` keyframes came since the last time, or
        with ``force`` when anything did. ``inliers``: per factor, True for the prior and odometry (GNC's
        known inliers). Returns whether the estimate was optimised."""
        for k, factor in enumerate(factors):
            if k < len(inliers) and inliers[k]:
                self._known_inliers.append(self._graph.size())
            self._graph.add(factor)
        for node, pose in guesses.items():
            self._values.insert(node, gtsam.Pose3(pose))
        self._since += keyframes_added
        self._dirty = self._dirty or bool(factors)
        if not self._dirty or not (force or self._since >= self._every):
            return False
        self._since, self._dirty = 0, False
        self._optimise()
        return True

    def _optimise(self) -> None:
        params = gtsam.LevenbergMarquardtParams()
        params.setMaxIterations(100)
        if self._robust == "gnc" and len(self._known_inliers) < self._graph.size():
            gnc = gtsam.GncLMParams(params)
            gnc.setLossType(gtsam.GncLossType.TLS)
            gnc.setKnownInliers(self._known_inliers)
            optimizer = gtsam.GncLMOptimizer(self._graph, self._values, gnc)
            self._values = optimizer.optimize()
        else:
            self._values = gtsam.LevenbergMarquardtOptimizer(self._graph, self._values, params).optimize()

    def rebuild(self, factors: Sequence[gtsam.NonlinearFactor], guesses: Mapping[int, F64],
                inliers: Sequence[bool] = ()) -> None:
        self._graph = gtsam.NonlinearFactorGraph()
        self._values = gtsam.Values()
        self._known_inliers = []
        self.update(factors, guesses, loops_added=True, keyframes_added=len(guesses), inliers=inliers, force=True)

    def pose(self, node: int) -> F64:
        return self._values.atPose3(node).matrix()

    def values(self) -> gtsam.Values:
        return self._values

    def marginal(self, node: int) -> F64:
        """(6, 6) marginal covariance of ``node`` in GTSAM's tangent order [rot, trans], body frame."""
        if getattr(self, "_marginals_of", None) is not self._values:
            self._marginals = gtsam.Marginals(self._graph, self._values)
            self._marginals_of = self._values
        return np.asarray(self._marginals.marginalCovariance(node), np.float64)


Solver = Isam2Solver | BatchSolver
