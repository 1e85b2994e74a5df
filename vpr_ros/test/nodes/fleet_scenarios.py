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
          budget: int = 1_000_000, live_map: bool = False, extra: list[str] | None = None) -> NodeProcess:
    # live_map: the robot appends to a live map, so its local features live on disk and its answers
    # to feature requests read them from there.
    extra = [*(extra or []), *(["-p", f"map.save_path:={Path(tmp) / f'live_{name}{tag}'}"] if live_map else [])]
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


def _rss_kb(node: NodeProcess) -> int:
    """Resident memory of the node process, kB (-1 once it has ended)."""
    try:
        lines = Path(f"/proc/{node.proc.pid}/status").read_text().splitlines()
    except OSError:
        return -1
    return next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), -1)


def hostile(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Robot "ra" (fleet) among hostile participants (issue 18, classes 10-14); see test_fleet_input.py."""
    import copy
    import math
    import numpy as np
    from builtin_interfaces.msg import Time
    from vpr_ros_msgs.msg import KeyframeDescriptors
    from vpr_ros_msgs.srv import GetKeyframeFeatures
    from vpr_ros.core.fleet.remote_keyframes import encode_batch, encode_locals
    from vpr_ros.core.types import Keyframe
    from vpr_ros.nodes.fleet import batch_to_msg, history_qos
    from tiny_extractor import TinyExtractor

    ref, query = corridor_revisit(a.frames)[:a.frames], corridor_revisit(a.frames)[a.frames:]
    tiny = TinyExtractor()
    desc = tiny.extract([img for _, img in ref])
    peer = [Keyframe(id=i, stamp_ns=int(t), robot_id="peer", session_id="s", global_=desc.global_[i],
                     local=desc.local[i]) for i, (t, _) in enumerate(ref)]
    model, dim = tiny.model_id, tiny.global_dim
    kf_pub = h.create_publisher(KeyframeDescriptors, "/fleet/keyframes", history_qos(1000))
    loop_pub = h.create_publisher(LoopClosure, "/fleet/loops", history_qos(100))
    stamp = Time(sec=1)

    def batch(kfs: list[Keyframe], service: str = "/peer/fleet/get_features") -> Any:
        return batch_to_msg(encode_batch(kfs, model, dim, service), stamp)

    def answer(request: Any, response: Any) -> Any:  # class 12: every 5th keyframe with 15 channels, not 16
        kfs = [copy.copy(peer[int(i)]) for i in request.keyframe_ids if int(i) < len(peer)]
        for kf in kfs:
            kf.local = kf.local[..., :15] if kf.id % 5 == 0 else kf.local
        response.keyframe_ids, response.local_shapes, response.local_features = encode_locals(kfs)
        response.encoding, response.success = "float16", True
        return response

    h.create_service(GetKeyframeFeatures, "/peer/fleet/get_features", answer)
    kf_pub.publish(batch(peer))  # the honest peer: its 20 keyframes, features on demand
    # Class 11 (and 10): every field of a batch can be wrong; transient_local replays them on a restart.
    one = [copy.copy(peer[0])]
    hostile_msgs = {"name": [batch(one, "bad name!"), batch(one, "{sub}"), batch(one, "/" + "a" * 10_000)]}
    m = batch(one)
    m.robot_id = "x" * 10_000
    hostile_msgs["name"].append(m)
    m = batch(one)
    m.keyframe_ids = [2**63]  # class 10: not a signed 64-bit id (the map save would fail later)
    hostile_msgs["id"] = [m]
    m = batch(one)
    m.descriptors = np.full(dim, np.nan, "<f2").tobytes()
    hostile_msgs["nonfinite"] = [m]
    m = batch(one)
    m.stamps = [Time(sec=1, nanosec=2_000_000_000)]
    hostile_msgs["stamp"] = [m]
    m = batch(one)
    m.poses = [math.inf] * 16
    hostile_msgs["pose"] = [m]
    m = batch(one)
    m.descriptors = m.descriptors[:-2]
    hostile_msgs["malformed"] = [m]
    for i, msgs in enumerate(hostile_msgs.values()):
        for k, m in enumerate(msgs):
            if m.robot_id == "peer":
                m.robot_id = f"evil{i}_{k}"
            kf_pub.publish(m)
    out: dict[str, Any] = {"hostile": {k: len(v) for k, v in hostile_msgs.items()}}
    params = ["-p", "fleet.peer_budget_mb:=1.0", "-p", "fleet.remote_budget_mb:=1.5",
              "-p", "fleet.request_timeout_sec:=1.0"]
    loops = watch_loops(h, ["ra"])
    ra = robot("ra", a.tmp, extra=params)
    nodes = [ra]
    try:
        out["ra_up"] = h.spin_until(lambda: not ra.alive() or h.diag("ra", "fleet.remote_keyframes", 0) >= a.frames, 30)
        h.spin_for(1.0)
        out["alive_after_hostile"] = ra.alive()
        out["diag_hostile"] = dict(h.diagnostics.get("ra", {}))
        # Class 13: a rogue stream of 20 000 keyframes from two robots against 1.0 MB per peer, 1.5 MB in all.
        rss0 = _rss_kb(ra)
        noise = np.random.default_rng(0).standard_normal((1000, dim)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)  # far from every real place
        for k in range(10):
            for rogue in ("rogue1", "rogue2"):
                kfs = [Keyframe(id=k * 1000 + i, stamp_ns=i, robot_id=rogue, session_id="s",
                                global_=noise[i]) for i in range(1000)]
                kf_pub.publish(batch(kfs, ""))
                h.spin_for(0.05)
        h.spin_until(lambda: h.diag("ra", "fleet.refused.budget", 0) + h.diag("ra", "fleet.remote_keyframes", 0)
                     >= 20_000 + a.frames, 30)
        h.spin_for(1.0)
        out["rss_kb"] = [rss0, _rss_kb(ra)]
        out["diag_budget"] = dict(h.diagnostics["ra"])
        # Class 12: B plays the query traversal; the peer's answers hold some 15-channel maps.
        out["settled"] = play(h, "ra", ra, query, a.rate)
        h.spin_for(1.0)
        out["diag_play"] = dict(h.diagnostics["ra"])
        own = [loop_dict(m) for m in loops["ra"] if m.query_robot_id == "ra"]
        out["found"] = own
        # Class 14: loops onto "ra" on the fleet loops topic; only the honest one may be republished.
        if own:
            real = next(m for m in loops["ra"] if m.query_robot_id == "ra")
            honest = LoopClosure(query_keyframe_id=real.match_keyframe_id, query_stamp=real.match_stamp,
                                 query_robot_id="peer", query_session_id="s", match_keyframe_id=real.query_keyframe_id,
                                 match_stamp=real.query_stamp, match_robot_id="ra",
                                 match_session_id=real.query_session_id, global_similarity=real.global_similarity,
                                 score=real.score, descriptor_model=model, descriptor_dim=dim)
            forged = {"loop_target": dict(match_keyframe_id=10**6), "nonfinite": dict(score=math.nan),
                      "id": dict(match_keyframe_id=2**63 + 5),
                      "loop_sender": dict(query_stamp=Time(sec=real.match_stamp.sec + 1))}
            forged_unknown = dict(query_keyframe_id=4321)  # never broadcast: refused after the wait
            before = dict(h.diagnostics["ra"])
            for change in [*forged.values(), forged_unknown]:
                m = copy.deepcopy(honest)
                for key, value in change.items():
                    setattr(m, key, value)
                loop_pub.publish(m)
            loop_pub.publish(honest)
            h.spin_until(lambda: h.diag("ra", "fleet.refused.loop_sender", 0)
                         >= float(before.get("fleet.refused.loop_sender", 0)) + 2, 15.0)
            h.spin_for(1.0)
            out["loops_before"], out["diag_loops"] = before, dict(h.diagnostics["ra"])
            out["republished"] = [loop_dict(m) for m in loops["ra"] if m.query_robot_id != "ra"]
            out["honest"] = loop_dict(honest)
        # Class 11: a restart gets every hostile batch again from the transient_local history.
        out["rc_first"] = ra.stop()
        h.diagnostics.pop("ra", None)
        ra = robot("ra", a.tmp, tag="_restart", extra=params)
        nodes.append(ra)
        out["restart_up"] = h.spin_until(lambda: not ra.alive() or h.diag("ra", "fleet.refused.name", 0) >= 4, 30)
        h.spin_for(1.0)
        out["alive_after_restart"] = ra.alive()
        out["diag_restart"] = dict(h.diagnostics.get("ra", {}))
    finally:
        out["rc"] = [n.stop() for n in nodes]
        out["log"] = "\n".join(f"--- {n.log.name}\n{n.tail()}" for n in nodes)
    return out


SCENARIOS = {f.__name__: f for f in (decentral, central, hostile)}


def main() -> int:
    parser = scenario_parser(SCENARIOS, frames=20)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--budget", type=int, default=1_000_000, help="robot A's fleet budget, bytes/s")
    return run_scenario_main(SCENARIOS, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
