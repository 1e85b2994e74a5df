"""``vpr-ros bench node``: what the ROS layer costs on top of the detector.

Starts the real ``loop_closure_node`` process and a harness that plays the embedded Corridor
revisit (reference pass, then query pass) as sensor_msgs/Image stamped with the wall clock, then
reports:

- node overhead: message conversion + LoopClosure publishing as a fraction of the per-keyframe time
  (conversion + detector + publishing), from the node's own per-stage p50 latencies;
- end-to-end latency: image header stamp -> LoopClosure received by the harness (p50/p95), which
  adds DDS transport, (de)serialisation and queueing to the node's own time;
- throughput: frames accounted for (processed, failed or bad) per second, from the first image sent to
  the diagnostics saying the last one is done. It measures the node only when ``--rate`` is faster
  than the node (frames then wait in its queue, sized to hold them all).

``--compare-pipeline`` runs the node twice in one invocation, ``pipeline: false`` then ``true``
(nodes/frame_pipeline.py), and prints the throughput ratio.

DDS never leaves the machine: when not already in a network namespace with only loopback, the
benchmark re-runs itself under ``unshare -rn`` with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vpr_ros.cli.arg_types import positive_float, positive_int
from vpr_ros.netns import in_isolated_netns, netns_argv

__all__ = ["add_arguments", "run_node_bench"]

NS = 1_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="", help="ROS 2 parameter YAML passed as --params-file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="node parameter override, e.g. model.backend=onnxruntime (repeatable)")
    parser.add_argument("--extractor-factory", default="",
                        help="'module:function' model for benchmarking without weights (tests' tiny model)")
    parser.add_argument("--frames", type=positive_int, default=40, help="frames per traversal (max 111)")
    parser.add_argument("--rate", type=positive_float, default=10.0, help="camera rate in Hz")
    parser.add_argument("--loop-gap-sec", type=float, default=2.0,
                        help="detector.min_loop_gap_sec (the two passes are frames/rate seconds apart)")
    parser.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                        help="node parameter 'pipeline': model on frame t+1 while frame t is verified")
    parser.add_argument("--compare-pipeline", action="store_true",
                        help="run the node sequential then pipelined, side by side, and print the throughput ratio")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")


def _argv(args: argparse.Namespace) -> list[str]:
    argv = ["--config", args.config, "--extractor-factory", args.extractor_factory, "--frames", str(args.frames),
            "--rate", str(args.rate), "--loop-gap-sec", str(args.loop_gap_sec), "--json", args.json,
            "--pipeline" if args.pipeline else "--no-pipeline"]
    if args.compare_pipeline:
        argv.append("--compare-pipeline")
    for item in args.set:
        argv += ["--set", item]
    return argv


def run_node_bench(args: argparse.Namespace) -> int:
    """Run the benchmark (in a private network namespace); prints a table, returns an exit code."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", FASTDDS_BUILTIN_TRANSPORTS="UDPv4")
    if not in_isolated_netns():
        if os.environ.get("_VPR_ROS_BENCH_NETNS"):  # already wrapped once: do not recurse
            print("bench node: the network namespace still has interfaces besides lo", file=sys.stderr)
            return 2
        env["_VPR_ROS_BENCH_NETNS"] = "1"
        wrapped = netns_argv([sys.executable, "-m", "vpr_ros.cli.bench.node", *_argv(args)])
        return subprocess.run(wrapped, env=env).returncode
    os.environ.update(env)
    subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True)
    runs = [_bench(args, pipeline) for pipeline in ((False, True) if args.compare_pipeline else (args.pipeline,))]
    for r in runs:
        _print(r)
    results: dict[str, Any] = runs[0]
    if args.compare_pipeline:
        from vpr_ros.cli.bench.stream import machine
        seq, pipe = runs
        ratio = pipe["throughput_fps"] / seq["throughput_fps"] if seq["throughput_fps"] else float("nan")
        results = {"sequential": seq, "pipelined": pipe, "throughput_ratio": ratio, "machine": machine()}
        print(f"throughput: sequential {seq['throughput_fps']:.1f} frames/s, pipelined {pipe['throughput_fps']:.1f} "
              f"frames/s, ratio {ratio:.2f}x ({results['machine']['cpu']}, {results['machine']['cores']} cores)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r["frames_processed"] > 0 for r in runs) else 1


def _ros_args(args: argparse.Namespace, pipeline: bool) -> list[str]:
    # The queue holds every frame (nothing dropped however fast --rate is); diagnostics every 0.1 s
    # time the end of the run for the throughput.
    argv = ["--ros-args", "-p", "qos.reliability:=reliable", "-p", f"qos.depth:={max(100, 2 * args.frames)}",
            "-p", f"queue.size:={max(100, 2 * args.frames)}", "-p", "diagnostics.period_sec:=0.1",
            "-p", f"detector.min_loop_gap_sec:={float(args.loop_gap_sec)}", "-p", f"pipeline:={str(pipeline).lower()}"]
    if args.config:
        argv[1:1] = ["--params-file", args.config]
    if args.extractor_factory:
        argv += ["-p", f"extractor_factory:={args.extractor_factory}"]
    for item in args.set:
        argv += ["-p", item.replace("=", ":=", 1)]
    return argv


def _bench(args: argparse.Namespace, pipeline: bool) -> dict[str, Any]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vpr_ros_msgs.msg import LoopClosure

    from vpr_ros.cli.demo import corridor_frames
    from vpr_ros.nodes.conversions import rgb_to_image_msg, stamp_to_ns

    frames = corridor_frames("ref", args.frames) + corridor_frames("query", args.frames)
    # Histories that hold every frame: a reliable KEEP_LAST writer or reader overwrites what is not yet
    # acknowledged or taken, and a 200 Hz burst lost frames with 100-200.
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(200, len(frames)),
                     reliability=ReliabilityPolicy.RELIABLE)
    with tempfile.TemporaryDirectory(prefix="vpr_ros_bench_node_") as tmp:
        os.environ.setdefault("ROS_LOG_DIR", str(Path(tmp) / "ros_log"))
        log = open(Path(tmp) / "node.log", "w")
        node = subprocess.Popen([sys.executable, "-m", "vpr_ros.nodes.loop_closure_node", *_ros_args(args, pipeline)],
                                stdout=log, stderr=subprocess.STDOUT)
        rclpy.init()
        harness = rclpy.create_node("vpr_bench_harness")
        latencies: list[float] = []
        diag: dict[str, str] = {}
        harness.create_subscription(LoopClosure, "loop_closures", lambda m: latencies.append(
            (time.time_ns() - stamp_to_ns(m.header.stamp)) / 1e6), qos)
        done_at = [0.0]  # when the node last finished a frame (harness clock)

        def on_diag(m: DiagnosticArray) -> None:
            before = _accounted(diag)
            diag.update({kv.key: kv.value for kv in m.status[0].values})
            if _accounted(diag) > before:
                done_at[0] = time.monotonic()
        harness.create_subscription(DiagnosticArray, "diagnostics", on_diag, 10)
        pub = harness.create_publisher(Image, "image", qos)

        def spin_until(predicate: Any, timeout: float) -> bool:
            end = time.monotonic() + timeout
            while time.monotonic() < end and not predicate():
                rclpy.spin_once(harness, timeout_sec=0.02)
            return bool(predicate())

        try:
            if not spin_until(lambda: node.poll() is not None or (pub.get_subscription_count() and diag), 120.0) \
                    or node.poll() is not None:
                log.flush()
                raise RuntimeError("the node did not start:\n" + (Path(tmp) / "node.log").read_text()[-3000:])
            ready_cpu_sec = _cpu_sec(node.pid)
            start = time.monotonic()
            for i, image in enumerate(frames):
                pub.publish(rgb_to_image_msg(image, time.time_ns(), "camera"))
                spin_until(lambda: time.monotonic() >= start + (i + 1) / args.rate, 2.0 / args.rate + 1.0)
            spin_until(lambda: _accounted(diag) >= len(frames) and diag.get("queue_depth") == "0", 120.0)
            # Up to the last frame finished, so a frame lost on the way does not count the timeout.
            wall = done_at[0] - start if done_at[0] else float("nan")
            cpu_sec = _cpu_sec(node.pid)  # model load and startup included: read it against a baseline
            spin_until(lambda: False, 0.5)
        finally:
            harness.destroy_node()
            rclpy.try_shutdown()
            if node.poll() is None:
                node.send_signal(signal.SIGINT)
            try:
                node.wait(20)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(5)
            log.close()
    stage = {k.split(".")[1]: float(v) for k, v in diag.items() if k.startswith("latency_ms.") and k.endswith(".p50")}
    node_ms = stage.get("convert", 0.0) + stage.get("publish", 0.0)
    per_keyframe = node_ms + stage.get("detector", 0.0)
    lat = np.asarray(latencies)
    return {
        "model": diag.get("model", "?"), "backend": diag.get("backend", "?"), "frames_sent": len(frames),
        "pipeline": diag.get("pipeline", "?"), "wall_sec": wall, "node_cpu_sec": cpu_sec - ready_cpu_sec,
        "throughput_fps": (_accounted(diag) - int(diag.get("frames_dropped", 0))) / wall,
        "frames_received": int(diag.get("frames_received", 0)),
        "frames_processed": int(diag.get("frames_processed", 0)), "frames_dropped": int(diag.get("frames_dropped", 0)),
        "keyframes": int(diag.get("keyframes", 0)), "loop_closures": len(latencies), "rate_hz": args.rate,
        "stage_p50_ms": stage, "node_overhead_ms_p50": node_ms,
        "node_overhead_fraction": node_ms / per_keyframe if per_keyframe else float("nan"),
        "e2e_latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                           "n": int(lat.size)} if lat.size else {},
    }


def _cpu_sec(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used so far; NaN off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _accounted(diag: dict[str, str]) -> int:
    """Frames the node is done with: processed, dropped, failed or bad input (odometry aside)."""
    return sum(int(v) for k, v in diag.items() if k in ("frames_processed", "frames_dropped", "frames_failed")
               or (k.startswith("bad_input.") and k != "bad_input.nan_odometry"))


def _print(r: dict[str, Any]) -> None:
    print(f"node benchmark: model {r['model']} ({r['backend']}), pipeline {r['pipeline']}, {r['frames_sent']} "
          f"frames at {r['rate_hz']} Hz; received {r['frames_received']}, processed {r['frames_processed']}, "
          f"dropped {r['frames_dropped']}, "
          f"loop closures {r['loop_closures']}; throughput {r['throughput_fps']:.1f} frames/s "
          f"({r['wall_sec']:.2f} s from the first frame sent, node CPU {r['node_cpu_sec']:.2f} s)")
    print(f"{'stage':<12}{'p50 ms':>10}")
    for name, ms in r["stage_p50_ms"].items():
        print(f"{name:<12}{ms:>10.3f}")
    print(f"node overhead (convert + publish): {r['node_overhead_ms_p50']:.3f} ms = "
          f"{100 * r['node_overhead_fraction']:.2f} % of the per-keyframe time")
    if r["e2e_latency_ms"]:
        e = r["e2e_latency_ms"]
        print(f"image stamp -> LoopClosure received: p50 {e['p50']:.2f} ms, p95 {e['p95']:.2f} ms (n={e['n']})")
    else:
        print("no loop closures: end-to-end latency not measured (lower verify.min_matches or add frames)")


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="vpr-ros bench node", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(run_node_bench(_parser.parse_args()))
