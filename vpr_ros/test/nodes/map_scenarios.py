"""Scenarios of the node's map: services, damaged maps, autosave and the live map under SIGKILL.
Run through scenarios.py, which lists them with the others."""

from __future__ import annotations

import argparse
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger
from vpr_ros_msgs.srv import MapIO

from vpr_ros.nodes.conversions import rgb_to_image_msg

from revisit_data import corridor_revisit
from scenario_harness import (Harness, NodeProcess, RELIABLE, TEST_PARAMS, publish_paced,
                              wait_ready, wait_settled)


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
    out["reset"] = [reset.success, reset.message]
    h.spin_for(0.5)  # a reset keeps the keyframes: the index size must not drop
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

