"""Multi-robot DDS scenarios (test_fleet.py), each run as a script inside a private network namespace.

    python fleet_scenarios.py NAME --out result.json --tmp DIR --deadline SEC [--frames N]

Robot A replays the Corridor reference traversal, robot B the query traversal of the same places
(revisit_data.corridor_revisit); real node processes, a real rclpy harness, JSON out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sensor_msgs.msg import Image
from vpr_ros_msgs.msg import LoopClosure

from vpr_ros.launch_args import central_launch_config
from vpr_ros.nodes.conversions import rgb_to_image_msg

from revisit_data import corridor_revisit
from scenario_harness import run_scenario_main, scenario_parser, RELIABLE, TEST_PARAMS, Harness, NodeProcess, loop_dict, publish_paced, wait_ready, wait_settled

FLEET_PARAMS = [*TEST_PARAMS, "-p", "verify.min_matches:=60", "-p", "queue.size:=100"]


class CentralProcess(NodeProcess):
    """A real ``central_node`` process with the command line central.launch.py would give it."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "vpr_ros.nodes.central_node", *argv],
                                     stdout=self._file, stderr=subprocess.STDOUT)


def robot(name: str, tmp: str, tag: str = "", factory: str = "tiny_extractor:build",
          budget: int = 1_000_000, live_map: bool = False) -> NodeProcess:
    # live_map: the robot appends to a live map, so its local features live on disk and its answers
    # to feature requests read them from there.
    extra = ["-p", f"map.save_path:={Path(tmp) / f'live_{name}{tag}'}"] if live_map else []
    return NodeProcess(["--ros-args", "-r", f"__ns:=/{name}", *FLEET_PARAMS, "-p", f"extractor_factory:={factory}",
                        "-p", "fleet.enabled:=true", "-p", f"detector.robot_id:={name}",
                        "-p", f"fleet.bandwidth_bytes_per_sec:={budget}", *extra],
                       Path(tmp) / f"node_{name}{tag}.log")


def watch_loops(h: Harness, namespaces: list[str]) -> dict[str, list[LoopClosure]]:
    got: dict[str, list[LoopClosure]] = {ns: [] for ns in namespaces}
    for ns in namespaces:
        h.create_subscription(LoopClosure, f"/{ns}/loop_closures", got[ns].append, RELIABLE)
        h.watch(ns)
    return got


def play(h: Harness, ns: str, node: NodeProcess, frames: list[Any], rate: float) -> bool:
    pub = h.create_publisher(Image, f"/{ns}/image", RELIABLE)
    wait_ready(h, pub, ns, node, 20.0)
    before = h.diag(ns, "frames_received", 0)
    publish_paced(h, pub, [rgb_to_image_msg(img, stamp, "camera") for stamp, img in frames], rate)
    ok = wait_settled(h, ns, int(before) + len(frames), 20.0)
    h.destroy_publisher(pub)
    return ok


def fresh_diag(h: Harness, ns: str) -> None:
    h.diagnostics.pop(ns, None)
    h.spin_until(lambda: ns in h.diagnostics, 5.0)


def decentral(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """A, B (fleet) and C (another model): A plays, B plays, B leaves and rejoins and plays again."""
    ref, query = corridor_revisit(a.frames)[:a.frames], corridor_revisit(a.frames)[a.frames:]
    loops = watch_loops(h, ["ra", "rb", "rc"])
    ra, rb = robot("ra", a.tmp, budget=a.budget, live_map=True), robot("rb", a.tmp)
    rc = robot("rc", a.tmp, factory="tiny_extractor:build_other")
    out: dict[str, Any] = {}
    try:
        start = time.monotonic()
        out["settled_a"] = play(h, "ra", ra, ref, a.rate)  # 0.5 s of frames; A's budget spreads its broadcast
        out["outbox_a_at_settle"] = h.diag("ra", "fleet.outbox", 0)
        # B indexes A's keyframes before its own traversal starts: the offline order (A then B).
        out["b_has_a"] = h.spin_until(lambda: h.diag("rb", "fleet.remote_keyframes", 0) >= a.frames, 15.0)
        out["b_has_a_after_sec"] = time.monotonic() - start
        out["settled_b"] = play(h, "rb", rb, query, a.rate)
        h.spin_until(lambda: len(loops["ra"]) >= len(loops["rb"]) > 0, 10.0)
        # Diagnostics arrive on their own period: wait until A's report has counted all of B's
        # keyframes and loops instead of reading whichever report came last (a CI run saw 19 of 20).
        h.spin_until(lambda: h.diag("ra", "fleet.remote_keyframes", 0) >= a.frames
                     and h.diag("ra", "fleet.inter_robot_loops.received", 0) >= len(loops["rb"])
                     and h.diag("rb", "fleet.keyframes_sent", 0) >= a.frames, 10.0)
        h.spin_for(0.5)
        out["first"] = {ns: [loop_dict(m) for m in loops[ns]] for ns in ("ra", "rb", "rc")}
        out["diag_a"], out["diag_b"] = dict(h.diagnostics["ra"]), dict(h.diagnostics["rb"])
        h.spin_until(lambda: h.diag("rc", "fleet.refused.model_mismatch", 0) >= 2, 5.0)
        out["diag_c"] = dict(h.diagnostics["rc"])
        # B leaves and rejoins with no map: the transient_local history gives it A's keyframes again.
        out["rc_b"] = rb.stop()
        for ns in ("ra", "rb"):
            loops[ns].clear()
        h.diagnostics.pop("rb", None)
        rb = robot("rb", a.tmp, tag="_rejoin")
        out["b2_has_a"] = h.spin_until(lambda: h.diag("rb", "fleet.remote_keyframes", 0) >= a.frames, 20.0)
        out["b2_remote_before_play"] = h.diag("rb", "fleet.remote_keyframes", 0)
        out["settled_b2"] = play(h, "rb", rb, query, a.rate)
        h.spin_until(lambda: len(loops["ra"]) >= len(loops["rb"]) > 0, 10.0)
        h.spin_for(0.5)
        out["second"] = {ns: [loop_dict(m) for m in loops[ns]] for ns in ("ra", "rb")}
        out["diag_b2"] = dict(h.diagnostics["rb"])
        out["alive"] = [n.alive() for n in (ra, rb, rc)]
    finally:
        out["rc"] = [n.stop() for n in (ra, rb, rc)]
        out["log"] = "\n".join(f"--- {n.log.name}\n{n.tail()}" for n in (ra, rb, rc))
    return out


def central(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """One central_node process for namespaces ra and rb: A's traversal, then B's."""
    ref, query = corridor_revisit(a.frames)[:a.frames], corridor_revisit(a.frames)[a.frames:]
    loops = watch_loops(h, ["ra", "rb"])
    launch = central_launch_config({"robots": "ra,/rb", "odom_topic": "", "map_save": str(Path(a.tmp) / "shared_map")})
    node = CentralProcess([*launch.command_line(), *FLEET_PARAMS], Path(a.tmp) / "central.log")
    out: dict[str, Any] = {}
    try:
        out["settled_a"] = play(h, "ra", node, ref, a.rate)
        out["settled_b"] = play(h, "rb", node, query, a.rate)
        h.spin_until(lambda: len(loops["ra"]) >= len(loops["rb"]) > 0, 10.0)
        h.spin_for(0.5)
        out["loops"] = {ns: [loop_dict(m) for m in loops[ns]] for ns in ("ra", "rb")}
        fresh_diag(h, "rb")
        out["diag_a"], out["diag_b"] = dict(h.diagnostics["ra"]), dict(h.diagnostics["rb"])
        out["alive"] = node.alive()
    finally:
        out["rc"] = node.stop()
        out["log"] = node.tail()
    return out


SCENARIOS = {f.__name__: f for f in (decentral, central)}


def main() -> int:
    parser = scenario_parser(SCENARIOS, frames=20)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--budget", type=int, default=1_000_000, help="robot A's fleet budget, bytes/s")
    return run_scenario_main(SCENARIOS, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
