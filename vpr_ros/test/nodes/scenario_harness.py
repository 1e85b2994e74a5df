"""What every DDS scenario script shares (scenarios.py, map_scenarios.py, fleet_scenarios.py,
place_scenarios.py): the node process, the harness node that drives it and records what it publishes,
bounded waits, and the script's command line and JSON result."""

from __future__ import annotations

import argparse
import struct
import zlib
import json
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
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from vpr_ros_msgs.msg import LoopClosure




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

