"""``vpr-ros map optimize MAP [--out MAP2]``: optimise a saved map's pose graph and store the optimised
keyframe poses with their marginal covariances in the map (core/map/map_poses.py).

The graph (cli/map_graph.py): each session's keyframes joined by odometry, the stored loops, a prior
on the first keyframe of the map-frame session (the session of the map's first keyframe, whose odometry
frame the optimised frame keeps). Sessions joined to it by loops are optimised with it (their first
guess placed through the first joining loop); sessions without such a loop are left out (their poses
are in a frame nothing relates to the map's) and keep no optimised pose. Loop factors carry the robust
kernel of ``core/geometry/pose_graph.py`` (Cauchy by default), odometry and prior are Gaussian: for a
single-session map this is exactly the graph ``optimize_pose_graph`` solves (a test checks equal
results). Covariances: GTSAM ``Marginals`` at the solution, turned into the ROS convention and floored
at one odometry step's noise, as odometry-source map poses are.

Only the table ``optimized_poses`` changes (replaced); keyframes, their odometry poses and loops stay.
In place only when no other writer owns MAP; with ``--out`` MAP is not touched.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from vpr_ros.cli.map_access import check_out_path, open_map
from vpr_ros.cli.map_graph import MapGraph, map_graph
from vpr_ros.cli.terminal import say
from vpr_ros.core.errors import InputError
from vpr_ros.core.map.map_poses import MapPose, OdometryDrift, covariance_from_tangent, write_optimized_poses
from vpr_ros.core.map.ownership import probe

__all__ = ["add_parser", "run_optimize", "optimize_map"]

F64 = npt.NDArray[np.float64]


def add_parser(cmds: argparse._SubParsersAction) -> None:
    p = cmds.add_parser("optimize", help="pose-graph optimise the map; store optimised keyframe poses in it",
                        description="Optimise the map's pose graph (odometry per session + stored loops, robust "
                        "Cauchy kernel on loops) and store each keyframe's optimised pose with its marginal covariance "
                        "in the map. What changes: only the map's table of optimised poses (replaced; the map frame "
                        "becomes the optimised frame). Keyframes, their odometry poses and loops stay as they are. In "
                        "place only when no other writer (a node, a map tool) owns MAP; with --out MAP is not touched.")
    p.add_argument("map", help="map directory (snapshot or live map)")
    p.add_argument("--out", help="write a copy of the map with the optimised poses here instead of changing MAP "
                                 "in place (a new path, an empty directory or a map)")
    p.set_defaults(func=run_optimize)


def _find(parent: list[int], a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def _joined_sessions(graph: MapGraph) -> set[int]:
    """Sessions joined to the map-frame session by loops (union-find over sessions)."""
    parent = list(range(len(graph.sessions)))
    for e in graph.loops:
        parent[_find(parent, graph.session[e.query])] = _find(parent, graph.session[e.match])
    root = _find(parent, graph.frame)
    return {s for s in range(len(graph.sessions)) if _find(parent, s) == root}


def _first_guess(graph: MapGraph, joined: set[int]) -> F64:
    """Initial poses in the map frame: each joined session's odometry moved by the first loop that ties
    it to a session already placed (the map-frame session is placed as it is)."""
    offset = {graph.frame: np.eye(4)}
    changed = True
    while changed:
        changed = False
        for i, j, T_ij, _ in graph.loop_edges:  # i = match, j = query
            for a, b, T_ab in ((i, j, T_ij), (j, i, np.linalg.inv(T_ij))):
                sa, sb = graph.session[a], graph.session[b]
                if sa in offset and sb not in offset and sb in joined:
                    T_map_b = offset[sa] @ graph.odometry[a] @ T_ab
                    offset[sb] = T_map_b @ np.linalg.inv(graph.odometry[b])
                    changed = True
    return np.stack([offset.get(s, np.eye(4)) @ T for s, T in zip(graph.session, graph.odometry)])  # unjoined: unused


def _gtsam_cov(cov_ros: F64) -> F64:
    order = [3, 4, 5, 0, 1, 2]  # ROS [x y z rx ry rz] -> GTSAM Pose3 tangent [rx ry rz x y z]
    return np.asarray(cov_ros, np.float64)[np.ix_(order, order)]


def optimize_map(graph: MapGraph, options: Any = None) -> dict[str, Any]:
    """Optimise ``graph``; returns nodes (optimised node indices), poses (N, 4, 4) and covariances
    (N, 6, 6, ROS order, map frame) of those nodes, weights (final kernel weight per loop edge used),
    iterations, errors and time."""
    import gtsam  # noqa: PLC0415 - only this command needs GTSAM
    from vpr_ros.core.geometry.pose_graph import PoseGraphOptions  # noqa: PLC0415

    options = options or PoseGraphOptions()
    if options.robust == "gnc":
        raise InputError("map optimize runs an M-estimator kernel (cauchy, huber) or none; gnc is replay --optimize's")
    if graph.frame < 0:
        raise InputError("the map's first session has no keyframe with an odometry pose; map optimize needs "
                         "odometry (replay or run the node with an odometry topic)")
    joined = _joined_sessions(graph)
    nodes = [i for i, s in enumerate(graph.session) if s in joined]
    guess = _first_guess(graph, joined)
    fg, initial = gtsam.NonlinearFactorGraph(), gtsam.Values()
    for i in nodes:
        initial.insert(i, gtsam.Pose3(guess[i]))
    fg.add(gtsam.PriorFactorPose3(nodes[0], gtsam.Pose3(guess[nodes[0]]), gtsam.noiseModel.Isotropic.Sigma(6, 1e-6)))
    for i, j, T, C in graph.odometry_edges:
        if graph.session[i] in joined:
            fg.add(gtsam.BetweenFactorPose3(i, j, gtsam.Pose3(T), gtsam.noiseModel.Gaussian.Covariance(_gtsam_cov(C))))
    first_loop = fg.size()
    kernels = {"cauchy": gtsam.noiseModel.mEstimator.Cauchy, "huber": gtsam.noiseModel.mEstimator.Huber}
    kernel = kernels.get(options.robust)
    for i, j, T, C in graph.loop_edges:
        if graph.session[i] in joined:
            noise = gtsam.noiseModel.Gaussian.Covariance(_gtsam_cov(C))
            if kernel is not None:
                noise = gtsam.noiseModel.Robust.Create(kernel.Create(options.kernel_width), noise)
            fg.add(gtsam.BetweenFactorPose3(i, j, gtsam.Pose3(T), noise))
    t0 = time.perf_counter()
    params = gtsam.LevenbergMarquardtParams()
    params.setMaxIterations(100)
    optimizer = gtsam.LevenbergMarquardtOptimizer(fg, initial, params)
    values = optimizer.optimize()
    marginals = gtsam.Marginals(fg, values)
    poses = np.stack([values.atPose3(i).matrix() for i in nodes])
    floor = OdometryDrift(**{f: getattr(options, f) for f in OdometryDrift.__dataclass_fields__}).floor()
    covs = np.stack([covariance_from_tangent(T, marginals.marginalCovariance(i)) + floor for i, T in zip(nodes, poses)])
    weights = []
    for k in range(first_loop, fg.size()):
        factor = fg.at(k)
        model = factor.noiseModel()
        whitened = np.linalg.norm(model.noise().whiten(factor.unwhitenedError(values))) \
            if isinstance(model, gtsam.noiseModel.Robust) else 0.0
        weights.append(float(model.robust().weight(whitened)) if isinstance(model, gtsam.noiseModel.Robust) else 1.0)
    return {"nodes": nodes, "poses": poses, "covariances": covs, "weights": np.array(weights),
            "sessions_joined": sorted(joined), "iterations": optimizer.iterations(),
            "initial_error": fg.error(initial), "final_error": fg.error(values),
            "time_ms": (time.perf_counter() - t0) * 1e3, "robust": options.robust}


def run_optimize(args: argparse.Namespace) -> int:
    data = open_map(args.map, load_local=False)
    if args.out:
        check_out_path(args.out, [data.path], "optimize")
    else:
        probe(data.path)  # another writer owns it: refused now, before the work
    graph = map_graph(data.keyframes, data.loops)
    result = optimize_map(graph)
    poses = {graph.keys[i]: MapPose(T, C, "optimized")
             for i, T, C in zip(result["nodes"], result["poses"], result["covariances"])}
    down = int((result["weights"] < 0.5).sum())
    used = len(result["weights"])
    left_out = [f"{r}/{s}" for n, (r, s) in enumerate(graph.sessions) if n not in result["sessions_joined"]]
    note = (f"vpr-ros map optimize: {len(poses)} keyframes, {used} loops ({down} down-weighted below 0.5 by "
            f"{result['robust']}), marginal covariances")
    written = write_optimized_poses(data.path, poses, source_note=note, out=args.out)
    shift = np.linalg.norm(result["poses"][:, :3, 3] - graph.odometry[result["nodes"], :3, 3], axis=1)
    say(f"optimised {len(poses)} of {len(data.keyframes)} keyframes ({len(result['sessions_joined'])} sessions) with "
        f"{used} loops ({down} down-weighted below 0.5 by {result['robust']}; {graph.loops_skipped} skipped: a "
        f"keyframe without a pose) in {result['time_ms']:.0f} ms; largest correction {shift.max():.3f} m; "
        f"error {result['initial_error']:.4g} -> {result['final_error']:.4g}")
    if left_out:
        say(f"sessions without a loop to the map-frame session, left without optimised poses: {', '.join(left_out)}")
    say(f"wrote the optimised poses into {written}" + ("" if args.out else " (table optimized_poses; keyframes, "
        "odometry poses and loops unchanged)"))
    return 0

