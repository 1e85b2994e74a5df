"""``vpr-ros map report``: one static, self-contained HTML page about a map (no server, no JavaScript).

First screen: the map's model and counts, then the gallery of loop closures, most suspicious first
(core/eval/loop_class.py: class, MNN count relative to ``verify.min_matches``, similarity), each the
query | match thumbnails with the MNN pairs as lines, the scores, place labels and OCR text, and a
frame in the class colour (correct / suspect / rejected, the colours of the plots and RViz markers),
so a reader sees the doubtful loops first and why each was accepted. Below: sessions and robots,
keyframes over time (one lane per robot/session, loop edges between the two keyframes), the
trajectory seen from above when keyframes have poses (and the optimised one over it when the map holds
optimised poses, core/map/map_poses.py), and the table of loop edges. Plots are inline SVG and thumbnails
base64 JPEG data URIs, so the file can be mailed or attached to an issue as it is.

MNN pairs are recomputed from the keyframes' stored local features (the exact MNN the verifier ran;
core/matching/verification.py), not stored, so the map stays small and the lines always match the features.
"""

from __future__ import annotations

import base64
import html
from typing import Mapping, Sequence

import cv2
import numpy as np

from vpr_ros.cli.map_access import Ident, MapData
from vpr_ros.core.eval import loop_class
from vpr_ros.core.types import Keyframe, LoopClosure
from vpr_ros.core.matching.verification import mnn_pairs

__all__ = ["render_report", "MAX_LINES"]

#: MNN lines drawn per loop: more only blacken the picture; the caption gives the full count.
MAX_LINES = 60
# lanes and MNN lines: no green, orange or red, which are the loop classes' colours (loop_class.COLOURS)
_PALETTE = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#7f7f7f")
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
th{background:#f3f3f3}.gallery{display:flex;flex-wrap:wrap;gap:1em}
figure.loop{margin:0;border:1px solid #ddd;border-left:6px solid var(--c);padding:.4em;background:#fafafa}
figcaption{font-size:.85em;max-width:420px}svg{background:#fff}.muted{color:#777}h1{font-size:1.3em}
.cls{color:#fff;background:var(--c);padding:0 .4em;border-radius:3px}.legend span{margin-right:1em}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


Classes = Mapping[tuple[Ident, Ident], str]  # (query, match) -> loop class


def _edge_colour(lp: LoopClosure, classes: Classes) -> str:
    return loop_class.hex_colour(classes[(_q(lp), _m(lp))])


def _text(kf: Keyframe | None) -> str:
    """The keyframe's place labels and OCR text, for the caption."""
    if kf is None:
        return ""
    labels = ", ".join(lb.label for lb in kf.labels)
    read = ", ".join(r.text for r in kf.text or ())
    return "; ".join(x for x in (f"label {labels}" if labels else "", f"OCR {read}" if read else "") if x)


def _legend(min_matches: int) -> str:
    what = {loop_class.CORRECT: "accepted with clear evidence",
            loop_class.SUSPECT: f"weak evidence: fewer than {loop_class.SUSPECT_MNN_RATIO:g} x verify.min_matches "
                                f"= {loop_class.SUSPECT_MNN_RATIO * min_matches:g} MNN, or geometry found no valid pose",
            loop_class.REJECTED: "rejected by a check, or wrong by the ground truth"}
    return '<p class="legend">' + "".join(
        f'<span><span class="cls" style="--c:{loop_class.hex_colour(c)}">{_e(c)}</span> {_e(what[c])}</span>'
        for c in loop_class.CLASSES) + "</p>"


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _timeline(data: MapData, lanes: dict[tuple[str, str], int], shown: Sequence[LoopClosure],
              classes: Classes) -> str:
    """Keyframes over time, one lane per (robot, session); loop edges as curves between lanes."""
    kfs = data.keyframes
    if not kfs:
        return '<p class="muted">no keyframes</p>'
    w, lane_h, left = 900, 40, 190
    h = lane_h * len(lanes) + 40
    t0 = min(k.stamp_ns for k in kfs)
    span = max(max(k.stamp_ns for k in kfs) - t0, 1)

    def xy(kf: Keyframe) -> tuple[float, float]:
        return (left + (w - left - 20) * (kf.stamp_ns - t0) / span,
                20 + lane_h * lanes[(kf.robot_id, kf.session_id)] + lane_h / 2)

    parts = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" role="img" aria-label="keyframes over time">']
    for (robot, session), lane in lanes.items():
        y = 20 + lane_h * lane + lane_h / 2
        parts.append(f'<text x="4" y="{y + 4:.1f}" font-size="12">{_e(robot)} / {_e(session)}</text>'
                     f'<line x1="{left}" y1="{y:.1f}" x2="{w - 20}" y2="{y:.1f}" stroke="#ddd"/>')
    step = max(1, len(kfs) // 4000)  # a 100k-keyframe map stays a few MB of SVG
    for kf in kfs[::step]:
        x, y = xy(kf)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" '
                     f'fill="{_colour(lanes[(kf.robot_id, kf.session_id)])}"/>')
    by = data.by_ident()
    for lp in shown:
        q, m = by.get(_q(lp)), by.get(_m(lp))
        if q is None or m is None:
            continue
        (x0, y0), (x1, y1) = xy(kfs[q]), xy(kfs[m])
        bend = min(y0, y1) - 15 if y0 == y1 else (y0 + y1) / 2
        parts.append(f'<path class="loop-edge" d="M{x0:.1f},{y0:.1f} Q{(x0 + x1) / 2:.1f},{bend:.1f} '
                     f'{x1:.1f},{y1:.1f}" fill="none" stroke="{_edge_colour(lp, classes)}" stroke-width="1" opacity="0.6"/>')
    parts.append(f'<text x="{left}" y="{h - 6}" font-size="11">0 s</text><text x="{w - 80}" y="{h - 6}" '
                 f'font-size="11">{span / 1e9:.1f} s</text></svg>')
    return "".join(parts)


def _trajectory(data: MapData, lanes: dict[tuple[str, str], int], shown: Sequence[LoopClosure],
                classes: Classes) -> str:
    """Keyframe positions seen from above (x, y of the odometry poses) with loop edges."""
    posed = [(i, k) for i, k in enumerate(data.keyframes) if k.pose is not None]
    if not posed:
        return '<p class="muted">no keyframe has an odometry pose</p>'
    xy = np.array([k.pose[:2, 3] for _, k in posed])
    lo, hi = xy.min(0), xy.max(0)
    size, pad = 600, 20
    scale = (size - 2 * pad) / max(float((hi - lo).max()), 1e-9)
    height = int(2 * pad + 20 + (hi - lo)[1] * scale)  # one scale for x and y, no empty band
    pos = {i: (pad + (p[0] - lo[0]) * scale, height - pad - 20 - (p[1] - lo[1]) * scale)
           for (i, _), p in zip(posed, xy)}
    parts = [f'<svg id="trajectory" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{height}" '
             f'viewBox="0 0 {size} {height}" role="img" aria-label="trajectory from above">']
    for i, k in posed[::max(1, len(posed) // 4000)]:
        parts.append(f'<circle cx="{pos[i][0]:.1f}" cy="{pos[i][1]:.1f}" r="2" '
                     f'fill="{_colour(lanes[(k.robot_id, k.session_id)])}"/>')
    by = data.by_ident()
    for lp in shown:
        q, m = by.get(_q(lp)), by.get(_m(lp))
        if q in pos and m in pos:
            parts.append(f'<line class="loop-edge" x1="{pos[q][0]:.1f}" y1="{pos[q][1]:.1f}" x2="{pos[m][0]:.1f}" '
                         f'y2="{pos[m][1]:.1f}" stroke="{_edge_colour(lp, classes)}" stroke-width="1"/>')
    parts.append(f'<text x="4" y="{height - 4}" font-size="11">{(hi - lo).max():.1f} m across</text></svg>')
    return "".join(parts)


def _optimized_trajectory(data: MapData, lanes: dict[tuple[str, str], int], shown: Sequence[LoopClosure],
                          classes: Classes) -> str:
    """The optimised keyframe positions (map frame, from above; coloured by session) over their odometry
    positions (grey; each session's in its own odometry frame), one scale, loop edges between optimised ones."""
    by = data.by_ident()
    keys = [by[k] for k in data.optimized if k in by]
    if not keys:
        return ""
    opt = np.array([data.optimized[k].T_map_base[:2, 3] for k in data.optimized if k in by])
    odo = np.array([data.keyframes[i].pose[:2, 3] for i in keys if data.keyframes[i].pose is not None]).reshape(-1, 2)
    every = np.vstack([opt, odo])
    lo, hi = every.min(0), every.max(0)
    size, pad = 600, 20
    scale = (size - 2 * pad) / max(float((hi - lo).max()), 1e-9)
    height = int(2 * pad + 20 + (hi - lo)[1] * scale)

    def at(p: np.ndarray) -> tuple[float, float]:
        return pad + (p[0] - lo[0]) * scale, height - pad - 20 - (p[1] - lo[1]) * scale

    parts = [f'<svg id="trajectory_optimized" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{height}" '
             f'viewBox="0 0 {size} {height}" role="img" aria-label="optimised and odometry trajectory from above">']
    parts += [f'<circle class="odometry" cx="{x:.1f}" cy="{y:.1f}" r="1.5" fill="#bbb"/>' for x, y in map(at, odo)]
    pos = {i: at(p) for i, p in zip(keys, opt)}
    for i in keys[::max(1, len(keys) // 4000)]:
        k = data.keyframes[i]
        parts.append(f'<circle class="optimized" cx="{pos[i][0]:.1f}" cy="{pos[i][1]:.1f}" r="2" '
                     f'fill="{_colour(lanes[(k.robot_id, k.session_id)])}"/>')
    for lp in shown:
        q, m = by.get(_q(lp)), by.get(_m(lp))
        if q in pos and m in pos:
            parts.append(f'<line class="loop-edge-optimized" x1="{pos[q][0]:.1f}" y1="{pos[q][1]:.1f}" '
                         f'x2="{pos[m][0]:.1f}" y2="{pos[m][1]:.1f}" stroke="{_edge_colour(lp, classes)}" '
                         'stroke-width="1"/>')
    parts.append(f'<text x="4" y="{height - 4}" font-size="11">{(hi - lo).max():.1f} m across; grey: odometry, '
                 'colours: optimised (map frame)</text></svg>')
    note = (data.optimized_info or {}).get("source_note", "")
    return (f'<h2>Trajectory optimised (map frame) over odometry, from above</h2><p class="muted">{len(keys)} '
            f'keyframes with optimised poses: {_e(note)}</p>' + "".join(parts))


def _q(lp: LoopClosure) -> Ident:
    return (lp.query_robot_id, lp.query_session_id, int(lp.query_id))


def _m(lp: LoopClosure) -> Ident:
    return (lp.match_robot_id, lp.match_session_id, int(lp.match_id))


def _thumb_size(kf: Keyframe | None) -> tuple[int, int] | None:
    """(w, h) of the keyframe's JPEG thumbnail, None when it has none or it does not decode."""
    if kf is None or not kf.thumbnail:
        return None
    img = cv2.imdecode(np.frombuffer(kf.thumbnail, np.uint8), cv2.IMREAD_COLOR)
    return None if img is None else (int(img.shape[1]), int(img.shape[0]))


def _loop_figure(n: int, lp: LoopClosure, q: Keyframe | None, m: Keyframe | None, min_matches: int,
                 cls: str, truth: bool | None = None) -> str:
    real = [_thumb_size(q), _thumb_size(m)]
    sizes = [real[0] or (160, 120), real[1] or (160, 120)]
    gap = 12
    w = sizes[0][0] + gap + sizes[1][0]
    h = max(sizes[0][1], sizes[1][1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">']
    offsets = (0, sizes[0][0] + gap)
    for kf, ok, (tw, th), x in ((q, real[0], sizes[0], offsets[0]), (m, real[1], sizes[1], offsets[1])):
        if kf is not None and kf.thumbnail and ok:
            uri = "data:image/jpeg;base64," + base64.b64encode(kf.thumbnail).decode("ascii")
            parts.append(f'<image class="thumb" x="{x}" y="0" width="{tw}" height="{th}" href="{uri}"/>')
        else:
            parts.append(f'<rect class="no-thumb" x="{x}" y="0" width="{tw}" height="{th}" fill="#eee"/>'
                         f'<text x="{x + 8}" y="{th / 2:.0f}" font-size="11">no thumbnail</text>')
    pairs = 0
    if q is not None and m is not None and q.local is not None and m.local is not None:
        i0, i1 = mnn_pairs(q.local, m.local)
        pairs = len(i0)
        (h0, w0), (h1, w1) = q.local.shape[:2], m.local.shape[:2]
        pick = np.linspace(0, pairs - 1, min(pairs, MAX_LINES)).astype(int) if pairs else []
        for k in pick:  # cell centres, scaled from the feature grid to the thumbnail
            r0, c0 = divmod(int(i0[k]), w0)
            r1, c1 = divmod(int(i1[k]), w1)
            x0, y0 = (c0 + 0.5) * sizes[0][0] / w0, (r0 + 0.5) * sizes[0][1] / h0
            x1, y1 = offsets[1] + (c1 + 0.5) * sizes[1][0] / w1, (r1 + 0.5) * sizes[1][1] / h1
            parts.append(f'<line class="mnn" x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" '
                         f'stroke="{_colour(k)}" stroke-width="1" opacity="0.8"/>')
    parts.append("</svg>")
    drawn = min(pairs, MAX_LINES)
    pose = ("no relative pose" + (f" ({lp.geometry_rejection})" if lp.geometry_rejection else "")
            if lp.relative_pose is None else
            f"relative pose by {lp.geometry_method or '?'}, "
            f"{'metric' if lp.translation_scale_known else 'scale unknown'}, "
            f"|t| = {float(np.linalg.norm(lp.relative_pose[:3, 3])):.2f}")
    lines = (f"lines: {drawn} of {pairs} MNN pairs recomputed from the stored local features"
             if q is not None and m is not None and q.local is not None and m.local is not None
             else "no stored local features, no MNN lines")
    text = [f"{role}: {_e(t)}" for role, t in (("query", _text(q)), ("match", _text(m))) if t]
    verdict = "" if truth is None else f" (ground truth: {'correct' if truth else 'wrong'})"
    cap = (f'#{n} <span class="cls">{cls}</span>{verdict} MNN {loop_class.mnn_ratio(lp, min_matches):.2f} x '
           f"verify.min_matches<br>query {_e(lp.query_robot_id)}/{_e(lp.query_session_id)}/{lp.query_id} | match "
           f"{_e(lp.match_robot_id)}/{_e(lp.match_session_id)}/{lp.match_id}<br>"
           f"score {lp.score:.3g} ({_e(lp.verification_method)}), {lp.local_matches} MNN of {lp.local_features}, "
           f"similarity {lp.global_similarity:.3f}, rank {lp.retrieval_rank}, inliers {lp.geometric_inliers}<br>"
           f"{_e(pose)}; {lines}" + ("<br>" + "<br>".join(text) if text else ""))
    return (f'<figure class="loop" data-class="{cls}" style="--c:{loop_class.hex_colour(cls)}" '
            f'data-query="{_e(_q(lp))}" data-match="{_e(_m(lp))}" data-mnn="{pairs}">'
            f'{"".join(parts)}<figcaption>{cap}</figcaption></figure>')


def render_report(data: MapData, summary: dict, max_loops: int = 200,
                  min_matches: int = loop_class.DEFAULT_MIN_MATCHES,
                  truth: Mapping[tuple[Ident, Ident], bool] | None = None) -> str:
    """The whole HTML page (a str) for ``data``; ``summary`` is ``map_cmd.map_summary(data)``;
    ``min_matches``: the verify.min_matches the loops were accepted with (for the suspicion rule);
    ``truth``: the ground truth's verdict per loop (query, match), when known (the demo)."""
    lanes = {(s["robot_id"], s["session_id"]): i for i, s in enumerate(summary["sessions"])}
    verdict = {(_q(lp), _m(lp)): (truth or {}).get((_q(lp), _m(lp))) for lp in data.loops}
    classes = {k: loop_class.classify(lp, min_matches, truth=verdict[k])
               for lp in data.loops for k in [(_q(lp), _m(lp))]}
    shown = sorted(data.loops, key=lambda lp: loop_class.suspicion_key(
        lp, min_matches, truth=verdict[(_q(lp), _m(lp))]))[:max_loops]
    by = data.by_ident()
    disk = summary["disk_bytes"]
    per_kf = (f"{summary['disk_per_keyframe_bytes'] / 1e3:.1f} kB "
              f"(thumbnail {summary['thumbnail_bytes_per_keyframe'] / 1e3:.1f} kB)")
    overview = _table(["model", "descriptor", "keyframes", "loops", "robots", "disk", "per keyframe"], [[
        summary["model_id"], f"{summary['global_dim']}-d, local {summary['local_shape']}", summary["keyframes"],
        summary["loops"], ", ".join(summary["robots"]), f"{disk['total'] / 1e6:.2f} MB", per_kf]], "overview")
    sessions = _table(["robot", "session", "keyframes", "first", "last", "duration s"],
                      [[s["robot_id"], s["session_id"], s["keyframes"], s["first"], s["last"], s["duration_s"]]
                       for s in summary["sessions"]], "sessions")
    edges = _table(["query", "match", "score", "MNN", "similarity", "relative pose"], [[
        "/".join(map(str, _q(lp))), "/".join(map(str, _m(lp))), f"{lp.score:.3g}", lp.local_matches,
        f"{lp.global_similarity:.3f}", lp.geometry_method if lp.relative_pose is not None else "-"]
        for lp in shown], "loops")
    figures = "".join(_loop_figure(n, lp, data.keyframes[by[_q(lp)]] if _q(lp) in by else None,
                                   data.keyframes[by[_m(lp)]] if _m(lp) in by else None, min_matches,
                                   classes[(_q(lp), _m(lp))], verdict[(_q(lp), _m(lp))])
                      for n, lp in enumerate(shown, 1))
    more = (f'<p class="muted">showing {len(shown)} of {len(data.loops)} loops (--max-loops)</p>'
            if len(shown) < len(data.loops) else "")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>vpr_ros map '
            f'{_e(data.path.name)}</title><style>{_CSS}</style></head><body>'
            f'<h1>vpr_ros map <code>{_e(data.path)}</code></h1>{overview}'
            f'<h2>Loop closures, most suspicious first</h2>{_legend(min_matches)}'
            f'<section id="gallery" class="gallery" data-loops="{len(shown)}">{figures}</section>{more}'
            f'<h2>Sessions and robots</h2>{sessions}'
            f'<h2>Keyframes over time</h2>{_timeline(data, lanes, shown, classes)}'
            f'<h2>Trajectory (odometry, from above)</h2>{_trajectory(data, lanes, shown, classes)}'
            f'{_optimized_trajectory(data, lanes, shown, classes)}'
            f'<h2>Loop edges</h2>{edges}</body></html>')
