"""DDS scenarios of the node tests, each run as a script inside a private network namespace.

    python scenarios.py NAME --out result.json --tmp DIR --deadline SEC [options]

conftest.run_scenario starts this script with unshare; it starts the real ``loop_closure_node``
process(es), drives them with a harness node (real rclpy, real vpr_ros_msgs), and writes what it
observed as JSON for the pytest side to assert on. Every wait is bounded by time.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sqlite3
import struct
import zlib
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger
from vpr_ros_msgs.msg import LoopClosure
from vpr_ros_msgs.srv import MapIO

from vpr_ros.core.config import config_to_flat
from vpr_ros.launch_args import node_launch_config, to_ros_args
from vpr_ros.nodes.conversions import ns_to_stamp, rgb_to_image_msg

from revisit_data import corridor_revisit

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
TEST_PARAMS = ["-p", "extractor_factory:=tiny_extractor:build", "-p", "qos.reliability:=reliable",
               "-p", "qos.depth:=100", "-p", "diagnostics.period_sec:=0.2"]


class NodeProcess:
    """A real ``loop_closure_node`` process with its log in a file."""

    def __init__(self, ros_args: list[str], log: Path) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "vpr_ros.nodes.loop_closure_node", *ros_args],
                                     stdout=self._file, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._file.close()
        return rc

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""


class Harness(Node):
    """Publishes camera input and records what the node under test publishes."""

    def __init__(self) -> None:
        super().__init__("vpr_test_harness")
        self.loops: list[LoopClosure] = []
        self.diagnostics: dict[str, dict[str, str]] = {}

    def watch(self, namespace: str) -> None:
        prefix = f"/{namespace}" if namespace else ""
        self.create_subscription(LoopClosure, f"{prefix}/loop_closures", self.loops.append, RELIABLE)
        self.create_subscription(DiagnosticArray, f"{prefix}/diagnostics",
                                 lambda m: self._on_diag(namespace, m), 10)

    def _on_diag(self, namespace: str, msg: DiagnosticArray) -> None:
        self.diagnostics[namespace] = {kv.key: kv.value for kv in msg.status[0].values}

    def diag(self, namespace: str, key: str, default: float = -1.0) -> float:
        return float(self.diagnostics.get(namespace, {}).get(key, default))

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        client = self.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {name} did not appear within {timeout} s")
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self, future, timeout_sec=timeout)
        if not future.done():
            raise RuntimeError(f"service {name} did not answer within {timeout} s")
        return future.result()


def wait_ready(h: Harness, pub: Any, namespace: str, node: NodeProcess, timeout: float) -> None:
    """Until the node's image subscription matched and its diagnostics arrive."""
    ok = h.spin_until(lambda: not node.alive() or (pub.get_subscription_count() >= 1 and namespace in h.diagnostics),
                      timeout)
    if not ok or not node.alive():
        raise RuntimeError(f"node not ready after {timeout} s (alive={node.alive()}):\n{node.tail()}")


def wait_settled(h: Harness, namespace: str, received: int, timeout: float) -> bool:
    """Until the node has received ``received`` frames and its queue is empty."""
    return h.spin_until(lambda: h.diag(namespace, "frames_received") >= received
                        and h.diag(namespace, "queue_depth") == 0
                        and h.diag(namespace, "frames_processed") + h.diag(namespace, "frames_dropped")
                        + h.diag(namespace, "frames_failed", 0)
                        + sum(h.diag(namespace, k, 0) for k in h.diagnostics.get(namespace, {})
                              if k.startswith("bad_input.") and k != "bad_input.nan_odometry") >= received, timeout)


def publish_paced(h: Harness, pub: Any, msgs: list[Any], rate_hz: float) -> float:
    """Publish at ``rate_hz`` while spinning; returns the wall time it took."""
    start = time.monotonic()
    for i, msg in enumerate(msgs):
        pub.publish(msg)
        h.spin_until(lambda: time.monotonic() >= start + (i + 1) / rate_hz, 1.0 / rate_hz + 0.5)
    return time.monotonic() - start


def huge_png(side: int) -> bytes:
    """A real 64x64 PNG whose IHDR (CRC fixed) claims side x side pixels."""
    data = bytearray(cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def accounted(h: Harness, namespace: str) -> dict[str, float]:
    """processed, every kind of drop, and received, from the node's last diagnostics."""
    d = h.diagnostics.get(namespace, {})
    bad = sum(float(v) for k, v in d.items() if k.startswith("bad_input.") and k != "bad_input.nan_odometry")
    return {"received": h.diag(namespace, "frames_received"), "processed": h.diag(namespace, "frames_processed"),
            "dropped": h.diag(namespace, "frames_dropped"), "failed": h.diag(namespace, "frames_failed", 0),
            "bad": bad}


def loop_dict(m: LoopClosure) -> dict[str, Any]:
    return {"query_id": m.query_keyframe_id, "match_id": m.match_keyframe_id,
            "query_stamp_ns": m.query_stamp.sec * 10**9 + m.query_stamp.nanosec,
            "match_stamp_ns": m.match_stamp.sec * 10**9 + m.match_stamp.nanosec,
            "header_stamp_ns": m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
            "frame_id": m.header.frame_id, "query_robot_id": m.query_robot_id,
            "match_robot_id": m.match_robot_id, "score": m.score,
            "global_similarity": m.global_similarity, "retrieval_rank": m.retrieval_rank,
            "local_matches": m.local_matches, "local_features": m.local_features,
            "consistent_keyframes": m.consistent_keyframes, "verification_method": m.verification_method,
            "descriptor_model": m.descriptor_model, "descriptor_dim": m.descriptor_dim,
            "relative_pose_valid": m.relative_pose_valid}


# -- scenarios ---------------------------------------------------------------------------------
def revisit(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Launch-args node; play a corridor revisit; SIGINT; the map is saved at shutdown."""
    cfg = node_launch_config(json.loads(a.launch_args))
    node = NodeProcess(to_ros_args(cfg), Path(a.tmp) / "node_revisit.log")
    image_topic = dict(cfg.remappings)["image"]
    pub = h.create_publisher(Image, image_topic, RELIABLE)
    h.watch(cfg.namespace)
    wait_ready(h, pub, cfg.namespace, node, 20.0)
    msgs = [rgb_to_image_msg(img, stamp, "camera") for stamp, img in corridor_revisit(a.frames)]
    publish_paced(h, pub, msgs, a.rate)
    settled = wait_settled(h, cfg.namespace, len(msgs), 20.0)
    h.spin_for(0.3)  # loop closures are published before frames_processed counts the frame
    diag = dict(h.diagnostics[cfg.namespace])
    rc = node.stop()
    return {"loops": [loop_dict(m) for m in h.loops], "diag": diag, "settled": settled, "rc": rc,
            "log": node.tail()}


def node_with_revisit(h: Harness, a: argparse.Namespace, log: Path) -> NodeProcess:
    """A node (test parameters) that has processed the Corridor revisit of ``a.frames`` frames."""
    node = NodeProcess(["--ros-args", *TEST_PARAMS], log)
    pub = h.create_publisher(Image, "image", RELIABLE)
    h.watch("")
    wait_ready(h, pub, "", node, 20.0)
    msgs = [rgb_to_image_msg(img, stamp) for stamp, img in corridor_revisit(a.frames)]
    publish_paced(h, pub, msgs, 50.0)
    wait_settled(h, "", len(msgs), 20.0)
    return node


def map_services(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """save_map / reset / load_map through the services of a running node."""
    node = node_with_revisit(h, a, Path(a.tmp) / "node_map.log")
    srv = "/loop_closure_node/"
    out: dict[str, Any] = {}
    saved = h.call(MapIO, srv + "save_map", MapIO.Request(path=str(Path(a.tmp) / "map_a")))
    out["save"] = [saved.success, saved.num_keyframes, saved.message]
    no_path = h.call(MapIO, srv + "save_map", MapIO.Request(path=""))
    out["save_no_path"] = [no_path.success, no_path.message]
    reset = h.call(Trigger, srv + "reset", Trigger.Request())
    out["reset"] = reset.success
    h.spin_until(lambda: h.diag("", "index_size") == 0, 5.0)
    out["index_after_reset"] = h.diag("", "index_size")
    loaded = h.call(MapIO, srv + "load_map", MapIO.Request(path=str(Path(a.tmp) / "map_a")))
    out["load"] = [loaded.success, loaded.num_keyframes, loaded.message]
    h.spin_until(lambda: h.diag("", "index_size") == saved.num_keyframes, 5.0)
    out["index_after_load"] = h.diag("", "index_size")
    missing = h.call(MapIO, srv + "load_map", MapIO.Request(path=str(Path(a.tmp) / "no_such_map")))
    out["load_missing"] = [missing.success, missing.message]
    h.spin_for(0.3)
    out["index_after_failed_load"] = h.diag("", "index_size")
    out["alive"] = node.alive()
    out["rc"] = node.stop()
    out["log"] = node.tail()
    return out


def bad_inputs(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Raw and compressed nodes fed broken input between good frames."""
    raw = NodeProcess(["--ros-args", "-r", "__ns:=/raw", *TEST_PARAMS], Path(a.tmp) / "node_raw.log")
    jpg = NodeProcess(["--ros-args", "-r", "__ns:=/jpg", "-p", "image.compressed:=true", *TEST_PARAMS],
                      Path(a.tmp) / "node_jpg.log")
    raw_pub = h.create_publisher(Image, "/raw/image", RELIABLE)
    jpg_pub = h.create_publisher(CompressedImage, "/jpg/image", RELIABLE)
    odom_pub = h.create_publisher(Odometry, "/raw/odom", RELIABLE)
    h.watch("raw")
    h.watch("jpg")
    wait_ready(h, raw_pub, "raw", raw, 20.0)
    wait_ready(h, jpg_pub, "jpg", jpg, 20.0)
    h.spin_until(lambda: odom_pub.get_subscription_count() >= 1, 5.0)
    (_, img0), (_, img1) = corridor_revisit(2)[:2]
    sec = 10**9

    def raw_msg(stamp: int, img: np.ndarray = img0, **fields: Any) -> Image:
        msg = rgb_to_image_msg(img, stamp)
        for k, v in fields.items():
            setattr(msg, k, v)
        return msg

    black16 = raw_msg(16 * sec, np.zeros((48, 64, 3), np.uint8))
    black16.encoding, black16.step, black16.data = "mono16", 128, b"\x00" * (128 * 48)
    raw_msgs = [raw_msg(10 * sec), raw_msg(11 * sec, encoding="weird16"),
                raw_msg(12 * sec, height=0, width=0, step=0, data=b""), raw_msg(13 * sec, data=b"\x00" * 10),
                raw_msg(5 * sec, img1), raw_msg(14 * sec, img1),
                raw_msg(15 * sec, np.full((1, 1, 3), 128, np.uint8)),  # 1x1: the model output is all-zero
                black16,                                               # all-black mono16: the same
                raw_msg(17 * sec, height=20000, width=20000, step=60000, data=b"\x00" * 100),  # too large
                raw_msg(18 * sec, img0)]
    nan_odom = Odometry()
    nan_odom.header.stamp = ns_to_stamp(14 * sec)
    nan_odom.pose.pose.position.x = math.nan
    odom_pub.publish(nan_odom)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(img0, cv2.COLOR_RGB2BGR))[1].tobytes()

    def jpg_msg(stamp: int, data: bytes = jpeg, fmt: str = "jpeg") -> CompressedImage:
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp = ns_to_stamp(stamp)
        return msg

    jpg_msgs = [jpg_msg(10 * sec), jpg_msg(11 * sec, jpeg[:20] + b"garbage" * 50),
                jpg_msg(12 * sec, b""), jpg_msg(13 * sec, jpeg, "theora"), jpg_msg(14 * sec),
                jpg_msg(15 * sec, huge_png(20000), "png"),  # 1.2 GB decoded: refused from its header
                jpg_msg(16 * sec)]
    for r, j in itertools.zip_longest(raw_msgs, jpg_msgs):
        if r is not None:
            raw_pub.publish(r)
        if j is not None:
            jpg_pub.publish(j)
        h.spin_for(0.05)
    wait_settled(h, "raw", len(raw_msgs), 15.0)
    wait_settled(h, "jpg", len(jpg_msgs), 15.0)
    h.spin_until(lambda: h.diag("raw", "bad_input.nan_odometry") >= 1, 5.0)
    h.spin_for(0.3)
    out = {"raw": dict(h.diagnostics["raw"]), "jpg": dict(h.diagnostics["jpg"]),
           "alive": [raw.alive(), jpg.alive()], "accounted": [accounted(h, "raw"), accounted(h, "jpg")]}
    out["rc"] = [raw.stop(), jpg.stop()]
    out["log"] = raw.tail()[-1500:] + jpg.tail()[-1500:]
    return out


def back_pressure(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """30 Hz into a model taking 0.2 s per frame with queue.size 3."""
    node = NodeProcess(["--ros-args", *TEST_PARAMS, "-p", "extractor_factory:=tiny_extractor:build_slow",
                        "-p", "queue.size:=3", "-p", "diagnostics.period_sec:=0.05"],
                       Path(a.tmp) / "node_bp.log")
    pub = h.create_publisher(Image, "image", RELIABLE)
    h.watch("")
    wait_ready(h, pub, "", node, 20.0)
    frames = corridor_revisit(a.frames // 2)  # a.frames in all (ref + query)
    msgs = [rgb_to_image_msg(img, i * 10**8) for i, (_, img) in enumerate(frames)]
    depths: list[float] = []
    h.create_subscription(DiagnosticArray, "/diagnostics",
                          lambda m: depths.append(float(next(kv.value for kv in m.status[0].values
                                                             if kv.key == "queue_depth"))), 10)
    took = publish_paced(h, pub, msgs, 30.0)
    t_end = time.monotonic()
    all_received = h.spin_until(lambda: h.diag("", "frames_received") >= len(msgs), 5.0)
    received_after = time.monotonic() - t_end
    settled = wait_settled(h, "", len(msgs), 10.0)
    out = {"sent": len(msgs), "publish_sec": took, "all_received": all_received,
           "received_lag_sec": received_after, "settled": settled, "max_depth": max(depths, default=-1),
           "depth_samples": len(depths), "diag": dict(h.diagnostics[""]), "alive": node.alive()}
    out["rc"] = node.stop()
    out["log"] = node.tail()
    return out


def yaml_params(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """In-process node from a real --params-file: the core config it built, and descriptors."""
    from tiny_extractor import build
    from vpr_ros.nodes.loop_closure_node import LoopClosureNode

    node = LoopClosureNode(extractor_factory=build)
    try:
        top_k = node.describe_parameter("index.top_k")
        sim = node.describe_parameter("keyframes.max_similarity")
        read_only = node.set_parameters([Parameter("index.top_k", value=9)])[0]
        debug = node.set_parameters([Parameter("debug.image", value=True)])[0]
        return {"config": config_to_flat(node.config), "settings": node.settings.__dict__,
                "top_k_range": [top_k.integer_range[0].from_value, top_k.integer_range[0].to_value],
                "top_k_read_only": top_k.read_only, "top_k_description": top_k.description,
                "sim_range": [sim.floating_point_range[0].from_value, sim.floating_point_range[0].to_value],
                "set_read_only": read_only.successful, "set_debug": debug.successful,
                "debug_now": node._debug, "num_keyframes": node.detector.num_keyframes,
                "sessions": sorted({kf.session_id for kf in node.detector.keyframes})}
    finally:
        node.close()
        node.destroy_node()


def invalid_params(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Start one node per bad parameter set at once; each must exit non-zero naming the problem."""
    cases = json.loads(a.cases)
    nodes = {name: NodeProcess(["--ros-args", "-r", f"__node:=bad_{i}", *TEST_PARAMS, *args],
                               Path(a.tmp) / f"node_bad_{i}.log")
             for i, (name, args) in enumerate(cases.items())}
    out = {}
    for name, node in nodes.items():
        rc = node.wait(60.0)  # all cases start at once: on 2 busy cores their imports queue up
        if rc is None:
            rc = node.stop()
            out[name] = {"rc": rc, "timed_out": True, "log": node.tail()}
        else:
            node.stop()
            out[name] = {"rc": rc, "timed_out": False, "log": node.tail()}
    return out


def _damaged_copies(good: Path, tmp: Path) -> dict[str, Path]:
    """Copies of a saved map, each damaged in one way a disk or a user can damage it."""
    out = {}
    for name in ("bad_pose", "short_shard", "meta_not_json", "garbage_npy"):
        out[name] = tmp / f"damaged_{name}"
        shutil.copytree(good, out[name])
    for name, sql in (("bad_pose", "UPDATE keyframes SET pose = x'0102' WHERE key = 1"),
                      ("meta_not_json", "UPDATE meta SET value = '{not json' WHERE key = 'global_dim'")):
        db = sqlite3.connect(out[name] / "map.sqlite")
        with db:
            db.execute(sql)
        db.close()
    np.save(out["short_shard"] / "local" / "00000.npy", np.load(good / "local" / "00000.npy")[:3])
    (out["garbage_npy"] / "local" / "00000.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{garbage: 1}\n" + b"x" * 64)
    return out


def map_faults(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Damaged maps, odd and unwritable save paths: every call answers, the keyframes stay."""
    tmp = Path(a.tmp)
    node = node_with_revisit(h, a, tmp / "node_faults.log")
    srv = "/loop_closure_node/"
    good = h.call(MapIO, srv + "save_map", MapIO.Request(path=str(tmp / "good")))
    out: dict[str, Any] = {"good": [good.success, good.num_keyframes, good.message], "calls": {}}
    (tmp / "a_file").write_text("not a directory")
    calls = [("load_map", str(p)) for p in _damaged_copies(tmp / "good", tmp).values()]
    calls += [("save_map", p) for p in (".", "..", str(tmp / "a_file" / "map"), "/proc/vpr_ros_map")]
    for service, path in calls:
        try:
            r = h.call(MapIO, srv + service, MapIO.Request(path=path))
            out["calls"][f"{service} {path}"] = [r.success, r.message]
        except RuntimeError as exc:  # no answer: the node died or hung
            out["calls"][f"{service} {path}"] = [None, str(exc)]
    h.spin_for(0.5)
    out["index_after"] = h.diag("", "index_size")
    again = h.call(MapIO, srv + "save_map", MapIO.Request(path=str(tmp / "after")))
    out["save_after"] = [again.success, again.num_keyframes]
    out["a_file"] = (tmp / "a_file").read_text()
    out["alive"] = node.alive()
    out["rc"] = node.stop()
    out["log"] = node.tail()
    return out


def autosave(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Autosave every 0.5 s, a 0.05 MB memory budget, then SIGKILL: the autosaved map survives.

    A second node autosaves to an unwritable path: counted, logged, never fatal.
    """
    tmp = Path(a.tmp)
    (tmp / "a_file").write_text("x")
    # map.append false: this scenario is about snapshot autosaves (live maps: append_kill).
    common = [*TEST_PARAMS, "-p", "map.autosave_sec:=0.5", "-p", "map.memory_budget_mb:=0.05",
              "-p", "map.append:=false"]
    ok = NodeProcess(["--ros-args", "-r", "__ns:=/ok", *common, "-p", f"map.save_path:={tmp / 'auto'}"],
                     tmp / "node_auto_ok.log")
    bad = NodeProcess(["--ros-args", "-r", "__ns:=/bad", *common, "-p", f"map.save_path:={tmp / 'blocked'}"],
                      tmp / "node_auto_bad.log")
    status: dict[str, tuple[int, str]] = {}
    for ns in ("ok", "bad"):
        h.create_subscription(DiagnosticArray, f"/{ns}/diagnostics",
                              lambda m, ns=ns: status.__setitem__(ns, (int.from_bytes(m.status[0].level, "little")
                                                                       if isinstance(m.status[0].level, bytes)
                                                                       else int(m.status[0].level),
                                                                       m.status[0].message)), 10)
    pubs = {ns: h.create_publisher(Image, f"/{ns}/image", RELIABLE) for ns in ("ok", "bad")}
    h.watch("ok")
    h.watch("bad")
    wait_ready(h, pubs["ok"], "ok", ok, 20.0)
    wait_ready(h, pubs["bad"], "bad", bad, 20.0)
    # A user file appears at the save path after startup (startup refuses one that is already there):
    # every autosave must be refused, counted, and leave the file alone.
    (tmp / "blocked").write_text("user data")
    msgs = [rgb_to_image_msg(img, stamp) for stamp, img in corridor_revisit(a.frames)[:a.frames]]
    for m in msgs:
        pubs["ok"].publish(m)
        pubs["bad"].publish(m)
        h.spin_for(0.05)
    h.spin_until(lambda: h.diag("ok", "frames_processed") >= len(msgs)
                 and h.diag("bad", "autosave_failures", 0) >= 1, 15.0)
    before = h.diag("ok", "autosaves", 0)
    h.spin_until(lambda: h.diag("ok", "autosaves", 0) > before, 3.0)  # a save after the last frame
    h.spin_for(0.3)
    out = {"ok": dict(h.diagnostics["ok"]), "bad": dict(h.diagnostics["bad"]), "status": status,
           "alive": [ok.alive(), bad.alive()]}
    ok.proc.kill()  # SIGKILL: no shutdown save; only the autosave remains
    ok.proc.wait(5)
    out["rc"] = [ok.stop(), bad.stop()]
    out["log"] = ok.tail()[-1500:] + bad.tail()[-1500:]
    return out


def stereo_pose(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Real default model, EuRoC raw stereo + CameraInfo through the launch config: 1 revisits 0;
    ~/reset; 3 revisits 2 (the reset keeps 3 from closing on 0 or 1, whose accuracy is unknown).
    ``--mono``: the left camera only (essential matrix)."""
    from euroc_stream import load_euroc, stereo_camera_infos
    euroc = load_euroc()
    topics = {"image_topic": "/cam0/image_raw", "camera_info_topic": "/cam0/camera_info",
              "right_image_topic": "/cam1/image_raw", "right_camera_info_topic": "/cam1/camera_info",
              "odom_topic": ""}
    if a.mono:
        topics.update(right_image_topic="", right_camera_info_topic="")
    cfg = node_launch_config(topics)
    extra = ["-p", "qos.reliability:=reliable", "-p", "qos.depth:=100", "-p", "diagnostics.period_sec:=0.2",
             "-p", "verify.temporal_consistency:=1", "-p", "detector.min_loop_gap_sec:=1.0",
             "-p", "sync.max_wait_sec:=2.0"]
    node = NodeProcess([*to_ros_args(cfg), *extra], Path(a.tmp) / "node_stereo.log")
    pubs = {k: h.create_publisher(CameraInfo if k.endswith("info_topic") else Image, t, RELIABLE)
            for k, t in topics.items() if t}
    h.watch("")
    wait_ready(h, pubs["image_topic"], "", node, 40.0)
    h.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in pubs.values()), 10.0)
    images = euroc["images"]
    # A driver streams CameraInfo before the first image; wait until the node holds both, so the
    # first keyframe (the first loop's match) gets its stereo depth even when DDS delivers late.
    infos = stereo_camera_infos(euroc["rig"], 99 * 10**9)
    for _ in range(50):
        pubs["camera_info_topic"].publish(infos[0])
        if not a.mono:
            pubs["right_camera_info_topic"].publish(infos[1])
        h.spin_for(0.2)
        if a.mono or h.diag("", "right_camera_info_received", 0) >= 1:
            break
    sent = 0
    for i, name in enumerate(("left_img_0", "left_img_1", "left_img_2", "left_img_3")):
        if i == 2:
            h.call(Trigger, "/loop_closure_node/reset", Trigger.Request())
        stamp = (100 + 100 * i) * 10**9
        left_info, right_info = stereo_camera_infos(euroc["rig"], stamp)
        pubs["camera_info_topic"].publish(left_info)
        if not a.mono:
            pubs["right_camera_info_topic"].publish(right_info)
            # Right before left: the sync must still pair them (and max_wait covers the other order).
            pubs["right_image_topic"].publish(rgb_to_image_msg(images[name.replace("left", "right")], stamp,
                                                               "cam1"))
        h.spin_for(0.1)
        pubs["image_topic"].publish(rgb_to_image_msg(images[name], stamp, "cam0"))
        sent += 1
        settled = wait_settled(h, "", sent, 30.0)
    h.spin_for(0.5)  # loops go out before frames_processed counts the frame
    diag = dict(h.diagnostics[""])
    loops = [{**loop_dict(m), "translation_scale_known": m.translation_scale_known,
              "geometric_inliers": m.geometric_inliers,
              "position": [m.relative_pose.pose.position.x, m.relative_pose.pose.position.y,
                           m.relative_pose.pose.position.z],
              "orientation": [m.relative_pose.pose.orientation.x, m.relative_pose.pose.orientation.y,
                              m.relative_pose.pose.orientation.z, m.relative_pose.pose.orientation.w],
              "covariance": list(m.relative_pose.covariance)} for m in h.loops]
    return {"loops": loops, "diag": diag, "settled": settled, "rc": node.stop(), "log": node.tail()}


def markers(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Odometry + a corridor revisit: the node draws keyframes and loop edges on 'markers'."""
    from visualization_msgs.msg import MarkerArray
    node = NodeProcess(["--ros-args", "-r", "__ns:=/mk", *TEST_PARAMS, "-p", "verify.min_matches:=60",
                        "-p", "queue.size:=100", "-p", "keyframes.min_translation_m:=0.0",
                        "-p", "keyframes.min_rotation_deg:=0.0"], Path(a.tmp) / "node_markers.log")
    pub = h.create_publisher(Image, "/mk/image", RELIABLE)
    odom_pub = h.create_publisher(Odometry, "/mk/odom", RELIABLE)
    got: list[Any] = []
    h.create_subscription(MarkerArray, "/mk/markers", got.append, 10)
    h.watch("mk")
    wait_ready(h, pub, "mk", node, 20.0)
    h.spin_until(lambda: odom_pub.get_subscription_count() >= 1, 5.0)
    frames = corridor_revisit(a.frames)
    for i, (stamp, img) in enumerate(frames):
        odom = Odometry()  # the revisit drives the same straight line again: x = place index, metres
        odom.header.stamp = ns_to_stamp(stamp)
        odom.pose.pose.position.x = float(i % a.frames)
        odom.pose.pose.position.y = 0.0 if i < a.frames else 0.2
        odom.pose.pose.orientation.w = 1.0
        odom_pub.publish(odom)
        h.spin_for(0.02)
        pub.publish(rgb_to_image_msg(img, stamp, "camera"))
        h.spin_for(0.05)
    wait_settled(h, "mk", len(frames), 20.0)
    h.spin_until(lambda: bool(got) and len(got[-1].markers[1].points) >= len(frames), 5.0)
    last = got[-1] if got else None
    rc = node.stop()
    return {"count": len(got), "loops": len(h.loops), "rc": rc, "log": node.tail(),
            "keyframe_points": None if last is None else len(last.markers[1].points),
            "edge_points": None if last is None else len(last.markers[2].points),
            "frame_id": None if last is None else last.markers[1].header.frame_id,
            "diag": dict(h.diagnostics.get("mk", {}))}


def append_kill(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """map.save_path with map.append: every keyframe is on disk as it is made; ~/save_map copies the live
    map to another path; then SIGKILL (no shutdown save) while frames still arrive."""
    tmp = Path(a.tmp)
    node = NodeProcess(["--ros-args", *TEST_PARAMS, "-p", f"map.save_path:={tmp / 'live'}",
                        "-p", "map.autosave_sec:=0.0"], tmp / "node_live.log")
    pub = h.create_publisher(Image, "image", RELIABLE)
    h.watch("")
    wait_ready(h, pub, "", node, 20.0)
    msgs = [rgb_to_image_msg(img, stamp) for stamp, img in corridor_revisit(a.frames)]
    half = len(msgs) // 2
    publish_paced(h, pub, msgs[:half], 50.0)
    wait_settled(h, "", half, 20.0)
    srv = "/loop_closure_node/"
    snap = h.call(MapIO, srv + "save_map", MapIO.Request(path=str(tmp / "snapshot")))
    out: dict[str, Any] = {"snapshot": [snap.success, snap.num_keyframes, snap.message],
                           "keyframes_at_snapshot": h.diag("", "keyframes", 0)}
    publish_paced(h, pub, msgs[half:], 50.0)
    wait_settled(h, "", len(msgs), 20.0)
    h.spin_for(0.3)
    out["keyframes"] = h.diag("", "keyframes", 0)
    out["alive"] = node.alive()
    node.proc.kill()  # SIGKILL: no shutdown save, nothing flushed by the node
    node.proc.wait(5)
    out["rc"] = node.stop()
    out["log"] = node.tail()[-2000:]
    return out


def pipeline_modes(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """The same corridor revisit into a pipelined (/pipe) and a sequential (/seq) node, faster than a
    slowed model, so the pipelined node always has a frame in each stage; both loop lists."""
    import os
    os.environ["VPR_TEST_EXTRACT_DELAY_SEC"] = "0.01"  # the nodes inherit it (tiny_extractor.build)
    common = [*TEST_PARAMS, "-p", "verify.min_matches:=60", "-p", "queue.size:=200"]
    nodes = {ns: NodeProcess(["--ros-args", "-r", f"__ns:=/{ns}", *common, "-p", f"pipeline:={ns == 'pipe'}"],
                             Path(a.tmp) / f"node_{ns}.log") for ns in ("pipe", "seq")}
    loops: dict[str, list[LoopClosure]] = {ns: [] for ns in nodes}
    pubs = {}
    for ns in nodes:
        pubs[ns] = h.create_publisher(Image, f"/{ns}/image", RELIABLE)
        h.create_subscription(LoopClosure, f"/{ns}/loop_closures", loops[ns].append, RELIABLE)
        h.create_subscription(DiagnosticArray, f"/{ns}/diagnostics", lambda m, ns=ns: h._on_diag(ns, m), 10)
    for ns, node in nodes.items():
        wait_ready(h, pubs[ns], ns, node, 20.0)
    msgs = [rgb_to_image_msg(img, stamp, "camera") for stamp, img in corridor_revisit(a.frames)]
    start = time.monotonic()
    for i, msg in enumerate(msgs):
        for pub in pubs.values():
            pub.publish(msg)
        h.spin_until(lambda: time.monotonic() >= start + (i + 1) / a.rate, 1.0)
    settled = [wait_settled(h, ns, len(msgs), 30.0) for ns in nodes]
    h.spin_for(0.3)  # loop closures are published before frames_processed counts the frame
    out: dict[str, Any] = {"settled": settled, "diag": {ns: dict(h.diagnostics.get(ns, {})) for ns in nodes},
                           "loops": {ns: [loop_dict(m) for m in loops[ns]] for ns in nodes}}
    out["rc"] = {ns: node.stop() for ns, node in nodes.items()}
    out["log"] = "".join(node.tail()[-1500:] for node in nodes.values())
    return out


SCENARIOS = {f.__name__: f for f in (revisit, map_services, bad_inputs, back_pressure, yaml_params,
                                     invalid_params, map_faults, autosave, stereo_pose, markers, append_kill,
                                     pipeline_modes)}


def main() -> int:
    parser = scenario_parser(SCENARIOS, frames=20)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--launch-args", default="{}")
    parser.add_argument("--params-file", default="")
    parser.add_argument("--ros-arg", action="append", default=[])
    parser.add_argument("--cases", default="{}")
    parser.add_argument("--mono", action="store_true")
    a = parser.parse_args()
    # yaml_params builds its node in this process, so the context carries its command line.
    return run_scenario_main(SCENARIOS, a, ["--ros-args", "--params-file", a.params_file, *a.ros_arg]
                             if a.name == "yaml_params" else None)


def scenario_parser(scenarios: dict[str, Callable[..., dict[str, Any]]], frames: int) -> argparse.ArgumentParser:
    """The arguments every scenario script takes (name, --out, --tmp, --deadline, --frames)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=sorted(scenarios))
    parser.add_argument("--out", required=True)
    parser.add_argument("--tmp", required=True)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=frames)
    return parser


def run_scenario_main(scenarios: dict[str, Callable[..., dict[str, Any]]], a: argparse.Namespace,
                      rclpy_args: list[str] | None = None) -> int:
    """Run scenario ``a.name`` with a Harness under ``a.deadline``; its result (+ _wall_sec) goes to ``a.out``."""
    # A hard stop in case a bounded wait is still too long: the test gets a clear timeout.
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("scenario deadline")))
    signal.alarm(max(1, int(a.deadline)))
    rclpy.init(args=rclpy_args)
    harness = Harness()
    start = time.monotonic()
    try:
        result = scenarios[a.name](harness, a)
    finally:
        harness.destroy_node()
        rclpy.try_shutdown()
    result["_wall_sec"] = time.monotonic() - start  # "_": not a case of the scenarios that return cases
    Path(a.out).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
