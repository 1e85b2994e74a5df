"""DDS scenarios of places with names (issue 13): ``~/label_place``, ``~/find_place``, ``place``, OCR.

    python place_scenarios.py NAME --out result.json --tmp DIR --deadline SEC [options]

Run by test_place_services.py inside a private network namespace, like scenarios.py (whose harness
it reuses): real ``loop_closure_node`` processes, real rclpy, real vpr_ros_msgs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import Image
from vpr_ros_msgs.msg import Place
from vpr_ros_msgs.srv import FindPlace, LabelPlace, MapIO

from vpr_ros.cli.bench.geometry import load_euroc
from vpr_ros.nodes.conversions import rgb_to_image_msg

from revisit_data import corridor_revisit
from scenario_harness import run_scenario_main, scenario_parser, RELIABLE, TEST_PARAMS, Harness, NodeProcess, publish_paced, wait_ready, wait_settled

NODE = "loop_closure_node"


def label(h: Harness, ns: str, text: str, keyframe_id: int = -1, robot: str = "", source: str = "") -> list[Any]:
    r = h.call(LabelPlace, f"{ns}/{NODE}/label_place",
               LabelPlace.Request(label=text, keyframe_id=keyframe_id, robot_id=robot, source=source))
    return [r.success, r.message, r.keyframe_id, r.robot_id, r.session_id]


def find(h: Harness, ns: str, text: str, limit: int = 0) -> dict[str, Any]:
    r = h.call(FindPlace, f"{ns}/{NODE}/find_place", FindPlace.Request(text=text, limit=limit))
    return {"success": r.success, "message": r.message,
            "matches": [{"id": m.keyframe_id, "robot": m.robot_id, "session": m.session_id,
                         "stamp_ns": m.stamp.sec * 10**9 + m.stamp.nanosec, "score": m.score, "how": m.how,
                         "evidence": m.evidence, "labels": list(m.labels), "pose_valid": m.pose_valid}
                        for m in r.matches]}


def place_dict(m: Place) -> dict[str, Any]:
    return {"query_id": m.query_keyframe_id, "match_id": m.match_keyframe_id, "labels": list(m.labels),
            "score": m.score, "global_similarity": m.global_similarity, "method": m.verification_method,
            "loop_closure": m.loop_closure, "robot": m.match_robot_id, "frame_id": m.header.frame_id,
            "stamp_ns": m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
            "match_stamp_ns": m.match_stamp.sec * 10**9 + m.match_stamp.nanosec}


def node_without_rapidocr(ros_args: list[str], log: Path) -> NodeProcess:
    """A node process in which ``import rapidocr_onnxruntime`` fails, as where it is not installed."""
    shadow = log.parent / "no_rapidocr"
    (shadow / "rapidocr_onnxruntime").mkdir(parents=True, exist_ok=True)
    (shadow / "rapidocr_onnxruntime" / "__init__.py").write_text(
        "raise ImportError('No module named rapidocr_onnxruntime (hidden by the test)')\n")
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(shadow), old])  # the child inherits it
    try:
        return NodeProcess(ros_args, log)
    finally:
        os.environ["PYTHONPATH"] = old


def simulated_sign(image: np.ndarray, text: str) -> np.ndarray:
    """SIMULATED: a white sign with black ``text`` drawn onto a real camera frame (cv2.putText)."""
    out = image.copy()
    cv2.rectangle(out, (200, 150), (560, 250), (255, 255, 255), -1)
    cv2.putText(out, text, (220, 222), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 0, 0), 4, cv2.LINE_AA)
    return out


# -- scenarios ---------------------------------------------------------------------------------
def labels(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Label keyframes of a live map, query them, revisit the labelled places, save, restart, query."""
    tmp = Path(a.tmp)
    params = ["--ros-args", *TEST_PARAMS, "-p", "verify.min_matches:=60", "-p", "queue.size:=100"]
    node = NodeProcess([*params, "-p", f"map.save_path:={tmp / 'live'}", "-p", "text.query_embedding:=false"],
                       tmp / "node_labels.log")
    # Meanwhile: a labels YAML naming a keyframe the (empty) map does not hold stops startup.
    refused = NodeProcess([*params, "-r", "__ns:=/refused", "-p", f"text.labels_yaml:={a.labels_yaml}"],
                          tmp / "node_refused.log")
    pub = h.create_publisher(Image, "image", RELIABLE)
    places: list[Place] = []
    h.create_subscription(Place, "place", places.append, RELIABLE)
    h.watch("")
    wait_ready(h, pub, "", node, 20.0)
    out: dict[str, Any] = {"before_frames": label(h, "", "Room 214"), "refused_rc": refused.wait(20.0),
                           "refused_log": refused.tail()}
    frames = [rgb_to_image_msg(img, stamp) for stamp, img in corridor_revisit(a.frames)]
    publish_paced(h, pub, frames[:a.frames], 50.0)
    out["settled_ref"] = wait_settled(h, "", a.frames, 20.0)
    out["label_current"] = label(h, "", "Room 214")
    out["label_id"] = [label(h, "", "Kitchen", 4, source="test_harness"), label(h, "", "Stairs", 6)]
    out["bad"] = {"empty": label(h, "", "   ", 3), "unknown_id": label(h, "", "Lab", 999),
                  "other_robot": label(h, "", "Lab", 3, robot="nobody"), "negative": label(h, "", "Lab", -5),
                  "too_long": label(h, "", "x" * 300, 3)}
    out["find"] = {q: find(h, "", q) for q in ("room 214", "KITCHEN", "", "?!", "nothing like it", "room 215")}
    out["find_huge"] = find(h, "", "214 " * 50_000)  # refused at once, with a short message
    out["find_limit"] = find(h, "", "room kitchen", limit=1)
    publish_paced(h, pub, frames[a.frames:], 50.0)
    out["settled_query"] = wait_settled(h, "", len(frames), 20.0)
    h.spin_for(0.5)  # `place` goes out before frames_processed counts the frame
    out["places"] = [place_dict(m) for m in places]
    out["diag"] = dict(h.diagnostics[""])
    snap = h.call(MapIO, f"/{NODE}/save_map", MapIO.Request(path=str(tmp / "snap")))
    out["save"] = [snap.success, snap.message]
    out["alive"] = node.alive()
    out["rc"] = node.stop()
    out["log"] = node.tail()[-2000:]
    # A new node that loads the snapshot (plus a labels YAML) knows the names; with sentence
    # embeddings (text.query_embedding, default) it also finds them by related words.
    # It keeps a snapshot map (map.append false) that autosave rewrites when only a label changed.
    again = NodeProcess([*params, "-r", "__ns:=/again", "-p", f"map.load_path:={tmp / 'snap'}",
                         "-p", f"map.save_path:={tmp / 'again_map'}", "-p", "map.append:=false",
                         "-p", "map.autosave_sec:=0.5",
                         *(["-p", f"text.labels_yaml:={a.labels_yaml}"] if a.labels_yaml else [])],
                        tmp / "node_again.log")
    pub2 = h.create_publisher(Image, "/again/image", RELIABLE)
    h.watch("again")
    wait_ready(h, pub2, "again", again, 20.0)
    t0 = time.monotonic()
    out["after_restart"] = {"kitchen": find(h, "/again", "kitchen")}
    out["first_query_sec"] = time.monotonic() - t0  # loads the sentence embedder
    out["after_restart"].update({q: find(h, "/again", q) for q in ("room 214", "exit", "cafeteria")})
    h.spin_until(lambda: h.diag("again", "autosaves", 0) >= 1, 5.0)  # the loaded map, saved once
    saves = h.diag("again", "autosaves", 0)
    out["label_again"] = label(h, "/again", "Lobby", 2)
    out["autosaved_label"] = h.spin_until(lambda: h.diag("again", "autosaves", 0) > saves, 5.0)
    out["diag_again"] = dict(h.diagnostics["again"])
    again.proc.kill()  # SIGKILL: no shutdown save; only the autosave has the label
    again.proc.wait(5)
    again.stop()
    out["log"] += again.tail()[-1500:]
    return out


def ocr(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """EuRoC frames, one with a SIMULATED sign, into three nodes: text.ocr=background (live map),
    inline with the text rule, and background where rapidocr cannot be imported."""
    tmp = Path(a.tmp)
    params = ["--ros-args", *TEST_PARAMS, "-p", "queue.size:=100", "-p", "text.ocr_rate_hz:=20.0",
              "-p", "text.query_embedding:=false"]
    nodes = {"ocr": NodeProcess([*params, "-r", "__ns:=/ocr", "-p", "text.ocr:=background",
                                 "-p", f"map.save_path:={tmp / 'ocr_live'}"], tmp / "node_ocr.log"),
             "inline": NodeProcess([*params, "-r", "__ns:=/inline", "-p", "text.ocr:=inline", "-p", "text.rule:=true"],
                                   tmp / "node_inline.log"),
             "blind": node_without_rapidocr([*params, "-r", "__ns:=/blind", "-p", "text.ocr:=background"],
                                            tmp / "node_blind.log")}
    pubs = {ns: h.create_publisher(Image, f"/{ns}/image", RELIABLE) for ns in nodes}
    for ns, node in nodes.items():
        h.watch(ns)
        wait_ready(h, pubs[ns], ns, node, 30.0)
    images = load_euroc()["images"]
    frames = [simulated_sign(images["left_img_0"], "ROOM 214"), images["left_img_2"]]
    msgs = [rgb_to_image_msg(img, (10 + i) * 10**9) for i, img in enumerate(frames)]
    for ns in nodes:
        publish_paced(h, pubs[ns], msgs, 10.0)
    out: dict[str, Any] = {"settled": [wait_settled(h, ns, len(msgs), 20.0) for ns in nodes]}
    t0 = time.monotonic()
    out["read"] = h.spin_until(lambda: h.diag("ocr", "ocr.read", 0) >= len(msgs), 20.0)
    out["read_after_sec"] = time.monotonic() - t0
    out["find"] = {ns: find(h, f"/{ns}", "room 214") for ns in nodes}
    h.spin_for(0.3)
    out["diag"] = {ns: dict(h.diagnostics[ns]) for ns in nodes}
    out["alive"] = [node.alive() for node in nodes.values()]
    out["rc"] = [node.stop() for node in nodes.values()]
    out["log"] = nodes["ocr"].tail()[-1500:]
    out["log_blind"] = nodes["blind"].tail()[-1500:]
    return out


SCENARIOS = {f.__name__: f for f in (labels, ocr)}


def main() -> int:
    parser = scenario_parser(SCENARIOS, frames=12)
    parser.add_argument("--labels-yaml", default="")
    return run_scenario_main(SCENARIOS, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
