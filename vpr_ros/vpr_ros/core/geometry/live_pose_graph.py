"""The live pose graph: keyframes and loops arrive one by one, the estimate follows after each update.

The factors are those of the offline graph (``core/geometry/pose_graph.py``, same noise model and
robust kernel, so ``replay --optimize`` and the node agree): odometry ``T_i^-1 T_{i+1}`` between
consecutive keyframes of one stream (robot, session) with the drift model; one robust factor per loop
(the measured pose with its covariance; appearance-only loops as "same place"; unknown-scale loops keep
their rotation).

Frames. Every stream has its own odometry frame. Streams linked by loops form one *graph component*
with one map frame: the odometry frame of its **anchor** stream at that stream's first keyframe (a prior
there fixes the gauge). A lone robot's map frame is therefore its odometry frame at its first keyframe.

Loaded maps. The keyframes of a map loaded into the session (:meth:`add_map_keyframe`, announced by the
loop-closure node) form a *map stream* per (robot, session) of the map, all in one component: the
**map frame** of the loaded map (core/map/map_poses.py: its frame session's odometry frame, or its
optimised frame). Each map keyframe gets a prior at its map pose with its covariance, and no odometry
chain: the map poses already hold the map's structure (and a loop between two map keyframes adds
nothing the map does not know, but is used like any loop). The map component is anchored by the map
stream first received and outranks every robot: a robot joined to it by loops has its poses, and its
``T_map_odom``, in the map's frame (a relocalisation the pose graph keeps). Map streams are no robots:
they have no ``T_map_odom`` (:meth:`robot_frames`).

Joins. Loops between two components join them (core/geometry/live_pose_graph_joins.py: once
``join_min_loops`` loops agree on where one lies in the other; loops wait until then). The anchor of the
joined component is the map stream if one of them holds the map, else the stream of the lowest robot
id (then the earlier stream), so every robot that sees the same loops agrees on the frame; the other
component's prior is dropped and its poses move into the anchor's frame through the agreeing loop that
proposed the join (then the solver starts over from those guesses, :meth:`Solver.rebuild`).

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
from vpr_ros.core.geometry.live_pose_graph_joins import JoinGuard, WaitingLoop, placement
from vpr_ros.core.geometry.live_pose_graph_types import GraphStats, KeyframeKey, LoopInput, RobotFrame, StreamKey
# The offline graph's measurement and noise rules, used unchanged so both graphs are the same graph.
from vpr_ros.core.geometry.pose_graph import (LoopEdge, PoseGraphOptions, kernel_weight, loop_measurement, noise_model,
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
    is_map: bool = False              # a loaded map's keyframes: priors at map poses, no odometry chain


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
        c = self.config
        self._joins = JoinGuard(c.join_min_loops, c.join_max_position_m, c.join_max_rotation_deg,
                                c.join_max_waiting_loops)
        self._map_root: StreamKey | None = None      # the first map stream: the map component's anchor
        self._count = collections.Counter()
        self._last_ms = 0.0
        self._rebuild = False
        self._frames: list[RobotFrame] | None = None

    # -- input -----------------------------------------------------------------------------
    def add_keyframe(self, key: KeyframeKey, stamp_ns: int, odom_pose: F64, odom_frame: str = "") -> bool:
        """Add keyframe ``key`` with its odometry pose (4, 4) world_T_body; False when refused
        (duplicate, or older than its stream's newest keyframe). Pending loops of it follow."""
        pose = _checked_pose(key, odom_pose, "odometry")
        stream = self._refuse(key, is_map=False)
        if stream is False:
            return False
        if stream is not None and key[2] < self._keys[stream.nodes[-1]][2]:
            self._count["keyframes_out_of_order"] += 1
            return False
        stream_key = (key[0], key[1])
        node = self._new_node(key, stamp_ns, pose)
        if stream is None:
            stream = self._streams[stream_key] = _Stream(len(self._streams), [])
            self._parent[stream_key] = stream_key
            self._prior_of[stream_key] = self._add_factor("prior", gtsam.PriorFactorPose3(
                node, gtsam.Pose3(pose), gtsam.noiseModel.Isotropic.Sigma(6, _PRIOR_SIGMA)))
            self._guesses[node] = pose
        else:
            prev = stream.nodes[-1]
            step = np.linalg.solve(self._odom[prev], pose)
            noise = noise_model(self.options, odometry_covariance(self.options, step), robust=False)
            self._add_factor("odometry", gtsam.BetweenFactorPose3(prev, node, gtsam.Pose3(step), noise))
            self._guesses[node] = self._estimate(prev) @ step
        stream.nodes.append(node)
        stream.odom_frame = odom_frame or stream.odom_frame
        self._take_pending(key)
        return True

    def add_map_keyframe(self, key: KeyframeKey, stamp_ns: int, map_pose: F64, covariance: F64 | None = None) -> bool:
        """Add keyframe ``key`` of a loaded map at its map pose (4, 4) T_map_base with its covariance (6, 6)
        in the ROS layout (position in the map frame, rotation about the map's axes; None: one odometry
        step's noise). False when refused: a duplicate, or its stream holds odometry keyframes."""
        pose = _checked_pose(key, map_pose, "map")
        cov = odometry_covariance(self.options, np.eye(4)) if covariance is None else np.asarray(covariance, float)
        if cov.shape != (6, 6) or not np.all(np.isfinite(cov)) or np.linalg.eigvalsh((cov + cov.T) / 2).min() <= 0:
            raise InputError(f"map keyframe {key}: the covariance must be a finite positive definite (6, 6) "
                             "matrix (ROS layout); leave it out for one odometry step's noise")
        stream = self._refuse(key, is_map=True)
        if stream is False:
            return False
        node = self._new_node(key, stamp_ns, pose)
        if stream is None:
            stream_key = (key[0], key[1])
            stream = self._streams[stream_key] = _Stream(len(self._streams), [], is_map=True)
            self._map_root = self._map_root or stream_key  # all map streams: one component, in the map frame
            self._parent[stream_key] = self._map_root
        # GTSAM's Pose3 prior is in the body frame [rot, trans]: rotate the map-frame covariance into it.
        J = np.kron(np.eye(2), pose[:3, :3])
        body = (J.T @ cov @ J)[np.ix_([3, 4, 5, 0, 1, 2], [3, 4, 5, 0, 1, 2])]
        self._add_factor("map_prior", gtsam.PriorFactorPose3(node, gtsam.Pose3(pose),
                                                             gtsam.noiseModel.Gaussian.Covariance((body + body.T) / 2)))
        self._guesses[node] = pose
        stream.nodes.append(node)
        self._take_pending(key)
        return True

    def add_loop(self, loop: LoopInput) -> str:
        """Add a loop; returns "added", "pending" (a keyframe not yet received), "waiting" (between graphs
        not yet joined: for agreeing loops), "refused" (it disagreed with the loops that joined its two
        graphs), "duplicate" or "invalid"."""
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
        measured, cov = loop_measurement(self.options, LoopEdge(q, m, loop.relative_pose, loop.covariance,
                                                                loop.translation_scale_known))
        a, b = self._node_root(m), self._node_root(q)
        if a != b and self.config.join_min_loops > 1:  # the join guard (live_pose_graph_joins.py)
            waiting = WaitingLoop(m, q, measured, cov, loop.relative_pose is not None and loop.translation_scale_known)
            self._joins.add(waiting, self._node_root)
            return self._joins.settle(frozenset((a, b)), waiting, self._node_root, self._estimate, self._join,
                                      self._add_loop_factor)
        if a != b:
            self._join(m, q, measured)
        self._add_loop_factor(m, q, measured, cov)
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
            if stream.is_map:
                continue
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
        return np.array([kernel_weight(f[1], values) for f in self._factors if f is not None and f[0] == "loop"])

    def stats(self, with_weights: bool = True) -> GraphStats:
        """Statistics; ``with_weights`` evaluates every loop's kernel weight (O(loops))."""
        kinds = collections.Counter(f[0] for f in self._factors if f is not None)
        rejected = int((self.loop_weights() < 0.5).sum()) if with_weights and kinds["loop"] else 0
        c = self._count
        return GraphStats(self._solver.name, len(self._keys), len(self._streams),
                          len({self._root(s) for s in self._streams}), kinds["odometry"], kinds["loop"], rejected,
                          len(self._pending), c["loops_dropped"], c["loops_duplicate"], c["loops_invalid"],
                          c["keyframes_duplicate"], c["keyframes_out_of_order"], c["joins"], c["updates"],
                          self._last_ms, map_keyframes=kinds["map_prior"],
                          keyframes_map_conflict=c["keyframes_map_conflict"], loops_join_waiting=len(self._joins),
                          loops_join_refused=self._joins.refused, loops_join_dropped=self._joins.dropped)

    def is_map(self, key: KeyframeKey) -> bool:
        """Whether ``key`` is a keyframe of a loaded map (:meth:`add_map_keyframe`)."""
        stream = self._streams.get((key[0], key[1]))
        return stream is not None and stream.is_map and key in self._node

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

    def _node_root(self, node: int) -> StreamKey:
        return self._root(self._stream_of(node))

    def _refuse(self, key: KeyframeKey, is_map: bool) -> _Stream | None | bool:
        """False (counted) when ``key`` cannot be added: a duplicate, or its stream is of the other kind;
        else its stream (None: a new one)."""
        stream = self._streams.get((key[0], key[1]))
        if key in self._node:
            self._count["keyframes_duplicate"] += 1
            return False
        if stream is not None and stream.is_map != is_map:
            self._count["keyframes_map_conflict"] += 1
            return False
        return stream

    def _new_node(self, key: KeyframeKey, stamp_ns: int, pose: F64) -> int:
        node = len(self._keys)
        self._frames = None
        self._keys.append(key)
        self._node[key] = node
        self._odom.append(pose)
        self._stamp.append(int(stamp_ns))
        self._new_keyframes += 1
        return node

    def _take_pending(self, key: KeyframeKey) -> None:
        for pair in [p for p in self._pending if key in p]:
            self.add_loop(self._pending.pop(pair))

    def _add_loop_factor(self, m: int, q: int, measured: F64, cov: F64) -> None:
        self._add_factor("loop", gtsam.BetweenFactorPose3(m, q, gtsam.Pose3(measured),
                                                          noise_model(self.options, cov, robust=True)))

    def _root(self, stream: StreamKey) -> StreamKey:
        while self._parent[stream] != stream:
            self._parent[stream] = self._parent[self._parent[stream]]
            stream = self._parent[stream]
        return stream

    def _rank(self, anchor: StreamKey) -> tuple[bool, str, int]:
        stream = self._streams[anchor]
        return not stream.is_map, anchor[0], stream.anchor_order

    def _join(self, m: int, q: int, measured: F64) -> None:
        """Join the components of match node ``m`` and query node ``q`` through T_match_query ``measured``."""
        keep, drop = sorted((self._node_root(m), self._node_root(q)), key=self._rank)
        current = self._current()
        t_join = placement(m, q, measured, keep, self._node_root, current.__getitem__)[0]  # drop into keep's frame
        moved = {s for s in self._streams if self._root(s) == drop}
        for node, key in enumerate(self._keys):
            if (key[0], key[1]) in moved:
                current[node] = t_join @ current[node]
        self._factors[self._prior_of.pop(drop)] = None  # never a map's: the map always keeps its frame
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


def _checked_pose(key: KeyframeKey, pose: F64, what: str) -> F64:
    T = np.asarray(pose, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(f"keyframe {key}: the {what} pose must be a finite (4, 4) matrix")
    return T
