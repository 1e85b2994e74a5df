"""The live pose graph: keyframes and loops arrive one by one, the estimate follows after each update.

The factors are those of the offline graph (``core/geometry/pose_graph.py``, same noise model and
robust kernel, so ``replay --optimize`` and the node agree): odometry ``T_i^-1 T_{i+1}`` between
consecutive keyframes of one stream (robot, session) with the drift model; one robust factor per loop
(the measured pose with its covariance; appearance-only loops as "same place"; unknown-scale loops keep
their rotation).

Frames. Every stream has its own odometry frame. Streams linked by loops form one *graph component*
with one map frame: the odometry frame of its **anchor** stream at that stream's first keyframe (a prior
there fixes the gauge). A lone robot's map frame is therefore its odometry frame at its first keyframe.
A loop between two components joins them: the anchor of the joined component is the stream of the
lowest robot id (then the earlier stream), so every robot that sees the same loops agrees on the
frame; the other component's prior is dropped and its poses move into the anchor's frame through the
loop (then the solver starts over from those guesses, :meth:`Solver.rebuild`).

Outputs: optimised keyframe poses per component, ``T_map_odom`` per robot at its newest keyframe
(``T_map_base_optimised @ T_odom_base^-1``), and :class:`GraphStats`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Iterable, Sequence

import gtsam
import numpy as np
import numpy.typing as npt

from vpr_ros.core.config.pose_graph import PoseGraphConfig
from vpr_ros.core.errors import InputError
from vpr_ros.core.geometry.live_pose_graph_solvers import BatchSolver, Isam2Solver
from vpr_ros.core.geometry.live_pose_graph_types import GraphStats, KeyframeKey, LoopInput, RobotFrame, StreamKey
# The offline graph's measurement and noise rules, used unchanged so both graphs are the same graph.
from vpr_ros.core.geometry.pose_graph import (LoopEdge, PoseGraphOptions, _kernel_weight, _loop_measurement, _noise,
                                              odometry_covariance)

__all__ = ["LivePoseGraph", "LoopInput", "GraphStats", "RobotFrame", "KeyframeKey", "pose_graph_options"]

logger = logging.getLogger(__name__)
F64 = npt.NDArray[np.float64]
_PRIOR_SIGMA = 1e-6                   # as the offline graph's prior on its first keyframe


def pose_graph_options(config: PoseGraphConfig) -> PoseGraphOptions:
    """The offline graph's options from the ``pose_graph.*`` section (defaults are equal)."""
    return PoseGraphOptions(odometry_translation_drift=config.odometry_translation_drift,
                            odometry_heading_deg_per_m=config.odometry_heading_deg_per_m,
                            same_place_sigma_m=config.same_place_sigma_m,
                            same_place_sigma_deg=config.same_place_sigma_deg,
                            robust=config.robust, kernel_width=config.kernel_width)


@dataclasses.dataclass
class _Stream:
    anchor_order: int                 # creation order: breaks anchor ties between streams of one robot
    nodes: list[int]
    odom_frame: str = ""


class LivePoseGraph:
    """Keyframes (with odometry poses) and loops in, optimised poses out; see the module docstring.

    Not thread-safe: one caller (a node's callbacks on one executor thread) adds and updates.
    """

    def __init__(self, config: PoseGraphConfig | None = None) -> None:
        self.config = config or PoseGraphConfig()
        self.options = pose_graph_options(self.config)
        self._solver = (Isam2Solver(self.config.relinearize_threshold, self.config.loop_iterations)
                        if self.config.solver == "isam2" else
                        BatchSolver(self.config.batch_every, self.config.robust, self.options.gnc_inlier_probability))
        self._keys: list[KeyframeKey] = []           # node index -> key
        self._node: dict[KeyframeKey, int] = {}
        self._odom: list[F64] = []                   # node index -> world_T_body in its odometry frame
        self._stamp: list[int] = []
        self._streams: dict[StreamKey, _Stream] = {}
        self._parent: dict[StreamKey, StreamKey] = {}  # union-find over streams; root = anchor
        # Every factor ever added (kind, gtsam factor); a dropped prior becomes None.
        self._factors: list[tuple[str, gtsam.NonlinearFactor] | None] = []
        self._prior_of: dict[StreamKey, int] = {}    # component anchor -> index of its prior in _factors
        self._new: list[int] = []                    # factor indices not yet given to the solver
        self._guesses: dict[int, F64] = {}
        self._new_keyframes = 0
        self._loop_pairs: set[frozenset[KeyframeKey]] = set()
        self._pending: collections.OrderedDict[frozenset[KeyframeKey], LoopInput] = collections.OrderedDict()
        self._count = collections.Counter()
        self._last_ms = 0.0
        self._rebuild = False
        self._frames: list[RobotFrame] | None = None

    # -- input -----------------------------------------------------------------------------
    def add_keyframe(self, key: KeyframeKey, stamp_ns: int, odom_pose: F64, odom_frame: str = "") -> bool:
        """Add keyframe ``key`` with its odometry pose (4, 4) world_T_body; False when refused
        (duplicate, or older than its stream's newest keyframe). Pending loops of it follow."""
        pose = np.asarray(odom_pose, np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise InputError(f"keyframe {key}: the odometry pose must be a finite (4, 4) matrix")
        if key in self._node:
            self._count["keyframes_duplicate"] += 1
            return False
        stream_key = (key[0], key[1])
        stream = self._streams.get(stream_key)
        if stream is not None and key[2] < self._keys[stream.nodes[-1]][2]:
            self._count["keyframes_out_of_order"] += 1
            return False
        node = len(self._keys)
        self._frames = None
        self._keys.append(key)
        self._node[key] = node
        self._odom.append(pose)
        self._stamp.append(int(stamp_ns))
        self._new_keyframes += 1
        if stream is None:
            stream = self._streams[stream_key] = _Stream(len(self._streams), [])
            self._parent[stream_key] = stream_key
            self._prior_of[stream_key] = self._add_factor("prior", gtsam.PriorFactorPose3(
                node, gtsam.Pose3(pose), gtsam.noiseModel.Isotropic.Sigma(6, _PRIOR_SIGMA)))
            self._guesses[node] = pose
        else:
            prev = stream.nodes[-1]
            step = np.linalg.solve(self._odom[prev], pose)
            noise = _noise(self.options, odometry_covariance(self.options, step), robust=False)
            self._add_factor("odometry", gtsam.BetweenFactorPose3(prev, node, gtsam.Pose3(step), noise))
            self._guesses[node] = self._estimate(prev) @ step
        stream.nodes.append(node)
        stream.odom_frame = odom_frame or stream.odom_frame
        for pair in [p for p in self._pending if key in p]:
            self.add_loop(self._pending.pop(pair))
        return True

    def add_loop(self, loop: LoopInput) -> str:
        """Add a loop; returns "added", "pending" (a keyframe not yet received), "duplicate" or "invalid"."""
        pair = frozenset((loop.query, loop.match))
        if len(pair) < 2:
            self._count["loops_invalid"] += 1
            return "invalid"
        if pair in self._loop_pairs or pair in self._pending:
            self._count["loops_duplicate"] += 1
            return "duplicate"
        q, m = self._node.get(loop.query), self._node.get(loop.match)
        if q is None or m is None:
            if self.config.max_pending_loops == 0:
                self._count["loops_dropped"] += 1
                return "pending"
            self._pending[pair] = loop
            while len(self._pending) > self.config.max_pending_loops:
                self._pending.popitem(last=False)
                self._count["loops_dropped"] += 1
            return "pending"
        self._loop_pairs.add(pair)
        measured, cov = _loop_measurement(self.options, LoopEdge(q, m, loop.relative_pose, loop.covariance,
                                                                 loop.translation_scale_known))
        a, b = self._root(self._stream_of(m)), self._root(self._stream_of(q))
        if a != b:
            self._join(a, b, m, q, measured)
        self._add_factor("loop", gtsam.BetweenFactorPose3(m, q, gtsam.Pose3(measured),
                                                          _noise(self.options, cov, robust=True)))
        return "added"

    def add_loops(self, loops: Iterable[LoopInput]) -> list[str]:
        return [self.add_loop(loop) for loop in loops]

    def update(self, force: bool = False) -> bool:
        """Hand what was added since the last update to the solver; True when the estimate changed.
        ``force``: the batch solver optimises now if anything changed since its last optimisation
        (iSAM2 solves at every update anyway)."""
        if not self._new and not self._rebuild and not force:
            return False
        t0 = time.perf_counter()
        new = [self._factors[k] for k in self._new]
        loops_added = any(f is not None and f[0] == "loop" for f in new)
        if self._rebuild:
            live = [f for f in self._factors if f is not None]
            self._solver.rebuild([f[1] for f in live], self._guesses, inliers=[f[0] != "loop" for f in live])
            changed = True
        else:
            live_new = [f for f in new if f is not None]
            changed = self._solver.update([f[1] for f in live_new], self._guesses, loops_added, self._new_keyframes,
                                          inliers=[f[0] != "loop" for f in live_new], force=force)
        self._new, self._guesses, self._new_keyframes, self._rebuild = [], {}, 0, False
        self._frames = None
        self._last_ms = (time.perf_counter() - t0) * 1e3
        self._count["updates"] += 1
        return changed

    # -- output ----------------------------------------------------------------------------
    def keys(self) -> list[KeyframeKey]:
        """Keyframe keys in node order (the order they were added)."""
        return list(self._keys)

    def poses(self) -> F64:
        """(N, 4, 4) optimised world_T_body of every keyframe, node order, each in its component's
        map frame (:meth:`anchor_of`); call :meth:`update` first."""
        values = self._solver.values()
        return np.stack([values.atPose3(i).matrix() for i in range(len(self._keys))]) if self._keys \
            else np.zeros((0, 4, 4))

    def odometry_poses(self) -> F64:
        """(N, 4, 4) the keyframes' odometry poses, node order."""
        return np.stack(self._odom) if self._odom else np.zeros((0, 4, 4))

    def stamps(self) -> list[int]:
        return list(self._stamp)

    def marginal_covariances(self, nodes: Sequence[int]) -> F64:
        """(len(nodes), 6, 6) marginal covariances in GTSAM's Pose3 tangent order [rot, trans] (right
        perturbation, body frame); NaN where the solver cannot give one. Costly: ~0.15 ms per node at
        1k keyframes (iSAM2), so callers ask at a low rate."""
        out = np.full((len(nodes), 6, 6), np.nan)
        for k, node in enumerate(nodes):
            try:
                out[k] = self._solver.marginal(node)
            except RuntimeError as exc:  # an indeterminate system (cannot happen with the priors): no covariance
                logger.debug("no marginal for node %d: %s", node, exc)
        return out

    def nodes_of(self, anchor: StreamKey) -> list[int]:
        """Node indices (ascending) of every keyframe in the component anchored at ``anchor``."""
        return [n for n, key in enumerate(self._keys) if self._root((key[0], key[1])) == anchor]

    def anchor_of(self, key: KeyframeKey) -> StreamKey:
        """The anchor stream (robot, session) whose map frame keyframe ``key``'s pose is in."""
        return self._root((key[0], key[1]))

    def _newest_streams(self) -> dict[str, StreamKey]:
        newest: dict[str, StreamKey] = {}
        for skey, stream in self._streams.items():
            last = stream.nodes[-1]
            if skey[0] not in newest or self._stamp[last] >= self._stamp[self._streams[newest[skey[0]]].nodes[-1]]:
                newest[skey[0]] = skey
        return newest

    def robot_anchor(self, robot_id: str) -> StreamKey | None:
        """The anchor of robot ``robot_id``'s newest stream (None before its first keyframe)."""
        stream = self._newest_streams().get(robot_id)
        return None if stream is None else self._root(stream)

    def robot_frames(self) -> list[RobotFrame]:
        """Per robot (its newest stream): its map frame's anchor and ``T_map_odom`` at its newest keyframe
        (kept until the next keyframe or update)."""
        if self._frames is None:
            self._frames = self._robot_frames()
        return self._frames

    def _robot_frames(self) -> list[RobotFrame]:
        frames = []
        for robot, skey in sorted(self._newest_streams().items()):
            stream = self._streams[skey]
            node = stream.nodes[-1]
            t_map_odom = self._estimate(node) @ np.linalg.inv(self._odom[node])
            frames.append(RobotFrame(robot, skey[1], self._root(skey), stream.odom_frame, self._stamp[node],
                                     t_map_odom))
        return frames

    def loop_weights(self) -> F64:
        """Final robust-kernel weight of every loop factor (1 = used fully, < 0.5 = rejected)."""
        values = self._solver.values()
        return np.array([_kernel_weight(f[1], values) for f in self._factors if f is not None and f[0] == "loop"])

    def stats(self, with_weights: bool = True) -> GraphStats:
        """Statistics; ``with_weights`` evaluates every loop's kernel weight (O(loops))."""
        kinds = collections.Counter(f[0] for f in self._factors if f is not None)
        rejected = int((self.loop_weights() < 0.5).sum()) if with_weights and kinds["loop"] else 0
        c = self._count
        return GraphStats(self._solver.name, len(self._keys), len(self._streams),
                          len({self._root(s) for s in self._streams}), kinds["odometry"], kinds["loop"], rejected,
                          len(self._pending), c["loops_dropped"], c["loops_duplicate"], c["loops_invalid"],
                          c["keyframes_duplicate"], c["keyframes_out_of_order"], c["joins"], c["updates"],
                          self._last_ms)

    # -- internals -------------------------------------------------------------------------
    def _add_factor(self, kind: str, factor: gtsam.NonlinearFactor) -> int:
        self._factors.append((kind, factor))
        self._new.append(len(self._factors) - 1)
        return len(self._factors) - 1

    def _estimate(self, node: int) -> F64:
        guess = self._guesses.get(node)
        return guess if guess is not None else self._solver.pose(node)

    def _stream_of(self, node: int) -> StreamKey:
        return self._keys[node][0], self._keys[node][1]

    def _root(self, stream: StreamKey) -> StreamKey:
        while self._parent[stream] != stream:
            self._parent[stream] = self._parent[self._parent[stream]]
            stream = self._parent[stream]
        return stream

    def _rank(self, anchor: StreamKey) -> tuple[str, int]:
        return anchor[0], self._streams[anchor].anchor_order

    def _join(self, anchor_m: StreamKey, anchor_q: StreamKey, m: int, q: int, measured: F64) -> None:
        """Join the components of match node ``m`` and query node ``q`` through T_match_query ``measured``."""
        keep, drop = sorted((anchor_m, anchor_q), key=self._rank)
        current = self._current()
        if drop == anchor_q:   # move q's component so that pose_q = pose_m @ measured
            t_join = current[m] @ measured @ np.linalg.inv(current[q])
        else:                  # move m's component so that pose_m = pose_q @ measured^-1
            t_join = current[q] @ np.linalg.inv(measured) @ np.linalg.inv(current[m])
        moved = {s for s in self._streams if self._root(s) == drop}
        for node, key in enumerate(self._keys):
            if (key[0], key[1]) in moved:
                current[node] = t_join @ current[node]
        self._factors[self._prior_of.pop(drop)] = None
        self._parent[drop] = keep
        self._guesses = current
        self._rebuild = True
        self._frames = None
        self._count["joins"] += 1

    def _current(self) -> dict[int, F64]:
        """Every node's current estimate: the solver's, or the guess of one not yet solved."""
        solved = self._solver.values()
        return {node: self._guesses[node] if node in self._guesses else solved.atPose3(node).matrix()
                for node in range(len(self._keys))}
