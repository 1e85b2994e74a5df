"""``vpr-ros map info|merge|export|verify|compact|report|label|query|optimize``: look at, check, combine
and rewrite maps; name places and find them by text (``label``/``query``: cli/map_text_cmd.py); store
optimised keyframe poses (``optimize``: cli/map_optimize.py).

Read-only commands (info, export, verify, report) change nothing in the map directory; writing
commands (merge, compact) write a new map through the store's crash-safe replace. Bad input (a path
that is not a map, a model mismatch, an --out that would overwrite an input) exits 2 with a message
naming it; ``verify`` exits 1 when the map is damaged and names the damaged file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import sys
from pathlib import Path

from vpr_ros.cli import map_export, map_optimize, map_text_cmd
from vpr_ros.cli.map_verify import verify_map
from vpr_ros.cli.map_access import (DB, INDEX_FILE, Ident, MapData, check_out_path, check_outside, disk_usage,
                                    open_map, write_map)
from vpr_ros.cli.terminal import say
from vpr_ros.core.errors import InputError
from vpr_ros.core.types import Keyframe, LoopClosure
from vpr_ros.io.output_checks import check_output_dir
from vpr_ros.io.output_files import atomic_files, check_new_file

__all__ = ["add_parser", "run_info", "run_merge", "run_export", "run_verify", "run_compact", "run_report",
           "write_report_file", "map_summary"]

EXPORT_FILES = ("keyframes.csv", "loops.csv", "loops.g2o")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="inspect, verify, merge, export, compact and report on saved maps",
                       description=__doc__.split("\n\n")[0])
    cmds = p.add_subparsers(dest="map_command", required=True, metavar="ACTION")
    info = cmds.add_parser("info", help="sessions, robots, keyframes, model, disk use, time span")
    info.add_argument("map", help="map directory")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=run_info)
    merge = cmds.add_parser("merge", help="merge maps of the same model into a new map")
    merge.add_argument("maps", nargs="+", help="map directories (two or more)")
    merge.add_argument("--out", required=True, help="new map directory")
    merge.add_argument("--on-collision", choices=("refuse", "renumber"), default="refuse",
                       help="a keyframe id present in two maps for the same robot and session with different "
                            "content: refuse (default) or renumber the later map's session after the earlier")
    merge.set_defaults(func=run_merge)
    export = cmds.add_parser("export", help="keyframe poses and loops as CSV, the pose graph as g2o",
                             description=map_export.__doc__.split("\n\n")[0])
    export.add_argument("map", help="map directory")
    export.add_argument("--out", required=True, help=f"folder for {', '.join(EXPORT_FILES)} (never overwritten)")
    export.add_argument("--g2o-information", choices=map_export.G2O_INFORMATION, default="gtsam",
                        help="information-matrix convention of loops.g2o: gtsam (default; rotation error as a "
                             "rotation vector: GTSAM readG2o, Ceres pose_graph_3d) or g2o (g2o's EdgeSE3: "
                             "quaternion vector part, rotation block 4x)")
    export.set_defaults(func=run_export)
    verify = cmds.add_parser("verify", help="checksums, structure, index vs descriptors; exit 1 if damaged")
    verify.add_argument("map", help="map directory")
    verify.set_defaults(func=run_verify)
    compact = cmds.add_parser("compact", help="rewrite a map into a fresh directory")
    compact.add_argument("map", help="map directory")
    compact.add_argument("--out", required=True, help="new map directory (crash-safe replace)")
    compact.set_defaults(func=run_compact)
    report = cmds.add_parser("report", help="a static, self-contained HTML page about the map and its loops")
    report.add_argument("map", help="map directory")
    report.add_argument("--out", required=True, help="HTML file to write (outside the map directory)")
    report.add_argument("--max-loops", type=int, default=200, help="loops shown in the gallery (default 200)")
    report.add_argument("--force", action="store_true", help="replace --out if it is an existing file (never a link)")
    report.add_argument("--min-matches", type=int, default=None, metavar="N",
                        help="verify.min_matches the loops were accepted with, for the suspect rule (default: "
                             "the parameter's default)")
    report.set_defaults(func=run_report)
    map_text_cmd.add_parsers(cmds)  # label, query: places with names (issue 13)
    map_optimize.add_parser(cmds)  # optimize: optimised keyframe poses (issue 21)


def _stamp(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).isoformat(timespec="seconds")


def map_summary(data: MapData) -> dict:
    """What ``info`` prints: model, counts, sessions (robot, session, keyframes, time span), disk use."""
    sessions: dict[tuple[str, str], list[int]] = {}
    for kf in data.keyframes:
        sessions.setdefault((kf.robot_id, kf.session_id), []).append(int(kf.stamp_ns))
    disk = disk_usage(data.path)
    n = len(data.keyframes)
    thumbs = sum(len(k.thumbnail or b"") for k in data.keyframes)
    return {
        "path": str(data.path), "model_id": data.meta["model_id"], "global_dim": data.meta["global_dim"],
        "local_shape": data.meta["local_shape"], "keyframes": n, "loops": len(data.loops),
        "robots": sorted({r for r, _ in sessions}),
        "sessions": [{"robot_id": r, "session_id": s, "keyframes": len(t), "first": _stamp(min(t)),
                      "last": _stamp(max(t)), "duration_s": round((max(t) - min(t)) / 1e9, 3)}
                     for (r, s), t in sorted(sessions.items())],
        "time_span": [_stamp(min(k.stamp_ns for k in data.keyframes)),
                      _stamp(max(k.stamp_ns for k in data.keyframes))] if n else None,
        "with_pose": sum(k.pose is not None for k in data.keyframes),
        "with_thumbnail": sum(bool(k.thumbnail) for k in data.keyframes),
        "disk_bytes": disk, "disk_per_keyframe_bytes": round(disk["total"] / n) if n else 0,
        "thumbnail_bytes_per_keyframe": round(thumbs / n) if n else 0, "checksums": data.has_manifest, "live": bool(data.meta.get("live")),
        "optimized_poses": len(data.optimized),
        "optimized_note": (data.optimized_info or {}).get("source_note"),
        "optimized_at": _stamp(data.optimized_info["written_ns"]) if data.optimized_info else None,
    }


def run_info(args: argparse.Namespace) -> int:
    s = map_summary(open_map(args.map, load_local=False))
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    say(f"map {s['path']}: model {s['model_id']} ({s['global_dim']}-d, local {s['local_shape']}), "
        f"{s['keyframes']} keyframes ({s['with_pose']} with pose, {s['with_thumbnail']} with thumbnail), "
        f"{s['loops']} loops, robots {', '.join(s['robots']) or '-'}")
    if s["time_span"]:
        say(f"time span {s['time_span'][0]} .. {s['time_span'][1]}")
    for x in s["sessions"]:
        say(f"  robot {x['robot_id']} session {x['session_id']}: {x['keyframes']} keyframes, "
            f"{x['first']} .. {x['last']} ({x['duration_s']} s)")
    d = s["disk_bytes"]
    say(f"disk {d['total'] / 1e6:.2f} MB ({s['disk_per_keyframe_bytes'] / 1e3:.1f} kB per keyframe; "
        f"thumbnails {s['thumbnail_bytes_per_keyframe'] / 1e3:.1f} kB of it): {DB} {d['map.sqlite'] / 1e6:.2f} MB, "
        f"local {d['local'] / 1e6:.2f} MB, {INDEX_FILE} {d['index.faiss'] / 1e6:.2f} MB")
    if s["optimized_poses"]:
        say(f"optimised poses: {s['optimized_poses']} keyframes ({s['optimized_note']}, {s['optimized_at']}); the map "
            "frame is the optimised frame")
    else:
        say("optimised poses: none (the map frame is the first session's odometry frame; vpr-ros map optimize "
            "adds them)")
    if s["live"]:
        say("live map (appended by the node): every local-feature record carries a crc32, checked when read")
    elif not s["checksums"]:
        say("no manifest.json: damage cannot be detected; vpr-ros map compact adds one")
    return 0


def _same(a: Keyframe, b: Keyframe) -> bool:
    return a.stamp_ns == b.stamp_ns and a.global_.tobytes() == b.global_.tobytes()


def run_merge(args: argparse.Namespace) -> int:
    if len(args.maps) < 2:
        raise InputError("map merge needs two or more maps; give e.g. vpr-ros map merge A B --out C")
    maps = [open_map(p, flag="map") for p in args.maps]
    check_out_path(args.out, [m.path for m in maps], "merge")
    first = maps[0]
    for m in maps[1:]:
        for key in ("model_id", "global_dim", "local_shape"):
            if m.meta[key] != first.meta[key]:
                raise InputError(f"map {m.path} has {key} {m.meta[key]!r} but {first.path} has "
                                 f"{first.meta[key]!r}; only maps of the same model can be merged — rebuild one "
                                 "with the other's model.preset and weights")
    keyframes: list[Keyframe] = []
    loops: list[LoopClosure] = []
    where: dict[Ident, Keyframe] = {}
    dropped = 0
    for m in maps:
        remap = _collisions(m, where, args.on_collision)
        for kf in m.keyframes:
            ident = (kf.robot_id, kf.session_id, int(kf.id))
            if ident in where and (kf.robot_id, kf.session_id) not in remap:
                dropped += 1  # the very same keyframe (a map merged with a copy of itself)
                _union_text(where[ident], kf)  # what either copy was told about the place is kept
                continue
            if (kf.robot_id, kf.session_id) in remap:
                kf.id = int(kf.id) + remap[(kf.robot_id, kf.session_id)]
            where[(kf.robot_id, kf.session_id, int(kf.id))] = kf
            keyframes.append(kf)
        for lp in m.loops:
            loops.append(_renumber_loop(lp, remap))
    loops = list({(lp.query_robot_id, lp.query_session_id, lp.query_id, lp.match_robot_id, lp.match_session_id,
                   lp.match_id): lp for lp in loops}.values())
    # Optimised poses are in the frame of the optimisation that made them: only the first map's define the
    # merged map's frame (its first keyframe is the first map's); the others' would mix frames.
    kept_poses = {k: p for k, p in first.optimized.items() if k in where}
    out = write_map(args.out, keyframes, loops, first.meta["model_id"], int(first.meta["global_dim"]),
                    optimized=(kept_poses, (first.optimized_info or {}).get("source_note", "")))
    say(f"merged {len(maps)} maps into {out}: {len(keyframes)} keyframes, {len(loops)} loops"
        + (f"; {dropped} keyframes present in two maps were kept once" if dropped else "")
        + (f"; {len(kept_poses)} optimised poses of {first.path} kept" if kept_poses else ""))
    if any(m.optimized for m in maps[1:]):
        say("optimised poses of the later maps were left out (another optimisation's frame); run vpr-ros map "
            "optimize on the merged map", file=sys.stderr)
    return 0


def _union_text(kept: Keyframe, other: Keyframe) -> None:
    """Labels and OCR readings of ``other`` (a second copy of ``kept``) that ``kept`` lacks, in order."""
    labels = list(kept.labels)
    seen = {(lb.label, lb.source) for lb in labels}
    labels += [lb for lb in other.labels if (lb.label, lb.source) not in seen]
    kept.labels = tuple(labels)
    if other.text:
        readings = list(kept.text or ())
        readings += [r for r in other.text if r not in readings]
        kept.text = tuple(readings)


def _collisions(m: MapData, where: dict[Ident, Keyframe], policy: str) -> dict[tuple[str, str], int]:
    """Id offsets for the sessions of ``m`` whose ids collide with different keyframes merged before."""
    clashing = sorted({(kf.robot_id, kf.session_id) for kf in m.keyframes
                       if (kf.robot_id, kf.session_id, int(kf.id)) in where
                       and not _same(where[(kf.robot_id, kf.session_id, int(kf.id))], kf)})
    if not clashing:
        return {}
    if policy == "refuse":
        r, s = clashing[0]
        raise InputError(f"map {m.path}: robot {r!r} session {s!r} reuses keyframe ids of an earlier map for "
                         "different keyframes; nothing was written — merge with --on-collision renumber to give "
                         "the later map's keyframes new ids")
    remap = {}
    for r, s in clashing:
        top = max(i for rr, ss, i in where if (rr, ss) == (r, s))
        low = min(int(k.id) for k in m.keyframes if (k.robot_id, k.session_id) == (r, s))
        remap[(r, s)] = top + 1 - low
        say(f"map {m.path}: renumbered robot {r} session {s} keyframe ids by +{remap[(r, s)]}", file=sys.stderr)
    return remap


def _renumber_loop(lp: LoopClosure, remap: dict[tuple[str, str], int]) -> LoopClosure:
    q = remap.get((lp.query_robot_id, lp.query_session_id), 0)
    m = remap.get((lp.match_robot_id, lp.match_session_id), 0)
    return dataclasses.replace(lp, query_id=lp.query_id + q, match_id=lp.match_id + m) if q or m else lp


def run_export(args: argparse.Namespace) -> int:
    data = open_map(args.map, load_local=False)
    out = Path(args.out)
    check_outside(out, [data.path], "export")
    check_output_dir(out, must_not_exist=EXPORT_FILES)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:  # all three files or none: a full disk leaves nothing that blocks the rerun
        with atomic_files([out / name for name in EXPORT_FILES]) as tmp:
            counts = map_export.export_map(data, *tmp, information=args.g2o_information)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: the folder this call created
        raise
    c = counts
    say(f"exported {len(data.keyframes)} keyframes ({c['vertices']} g2o vertices, {c['optimized']} at optimised poses) "
        f"and {len(data.loops)} loops to {out}: g2o edges {c['odometry_edges']} odometry + "
        f"{len(data.loops) - c['skipped']} loop ({c['measured']} measured, {c['rotation_only']} rotation-only, "
        f"{c['same_place']} same-place); {c['skipped']} loops skipped (a keyframe without a pose)")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    verdict = verify_map(args.map)  # the checks --map-load makes, and more (cli/map_verify.py)
    say(verdict.message)
    return 0 if verdict.ok else 1


def run_compact(args: argparse.Namespace) -> int:
    data = open_map(args.map, load_local=True)
    check_out_path(args.out, [data.path], "compact")
    before = disk_usage(data.path)["total"]
    out = write_map(args.out, data.keyframes, data.loops, data.meta["model_id"], int(data.meta["global_dim"]),
                    sidecars_from=data.path,
                    optimized=data.poses_to_keep())
    say(f"compacted {data.path} ({before / 1e6:.2f} MB) into {out} ({disk_usage(out)['total'] / 1e6:.2f} MB): "
        f"{len(data.keyframes)} keyframes, {len(data.loops)} loops")
    return 0


def run_report(args: argparse.Namespace) -> int:
    say(write_report_file(args.map, args.out, max_loops=args.max_loops, force=args.force,
                          min_matches=args.min_matches))
    return 0


def write_report_file(map_path: str | Path, out_file: str | Path, *, max_loops: int = 200, force: bool = False,
                      min_matches: int | None = None, truth: dict | None = None) -> str:
    """``vpr-ros map report`` (also the demo's ``report.html``, with the ground truth's verdict per loop:
    map_report.render_report); returns the line saying what it wrote."""
    from vpr_ros.cli.map_report import render_report  # OpenCV decoding only when asked for

    if max_loops < 0:
        raise InputError(f"--max-loops {max_loops} is negative; give 0 or more")
    data = open_map(map_path, load_local=True)
    out = check_new_file(out_file, force=force)  # before the work: no link, no file replaced unasked
    check_outside(out, [data.path], "report")
    html = render_report(data, map_summary(data), max_loops, truth=truth,
                         **({} if min_matches is None else {"min_matches": min_matches}))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_files([out], replace=force) as (tmp,):
        tmp.write_text(html, encoding="utf-8")
    return (f"wrote {out} ({len(html) / 1e3:.0f} kB): {len(data.keyframes)} keyframes, "
            f"{min(len(data.loops), max_loops)} of {len(data.loops)} loops in the gallery")
