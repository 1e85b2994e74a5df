"""``vpr-ros map label|query``: name places in a saved map, and find keyframes by text.

``label`` adds place labels to keyframes named by id (``--id N [--robot R --session S] --label L``)
or by a labels YAML (``--yaml FILE``, core/text/labels.py). A live map (the node's) gets them in
place through its log, durable when the command returns; a snapshot map is rewritten through the
store's crash-safe replace. A label the keyframe already has is not added again.

``query`` ranks keyframes whose labels or OCR text match ``--text`` (core/text/query.py) and prints
them with robot, session, id, stamp and position; it says first when none matches exactly, and never
lists another number as a match (door plates "ROOM 370" for "room 214" only under "similar (not the
same number)"). Sentence embeddings (models/text_embedding.py) are
loaded only when token matching leaves room in ``--limit``; ``--no-embedding`` never loads them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.cli.map_access import open_map, write_map
from vpr_ros.cli.terminal import printable_json, say
from vpr_ros.core.map import live_map
from vpr_ros.core.errors import InputError
from vpr_ros.core.text.labels import find_keyframe, load_labels
from vpr_ros.core.text.place_text import PlaceLabel
from vpr_ros.core.text.query import PlaceMatch, find_places, similar_places
from vpr_ros.core.types import Keyframe

__all__ = ["add_parsers", "run_label", "run_query", "match_rows"]


def add_parsers(cmds: argparse._SubParsersAction) -> None:
    """Add ``label`` and ``query`` to the ``vpr-ros map`` actions."""
    label = cmds.add_parser("label", help="give keyframes a place label (by id, or a labels YAML)",
                            description=__doc__.split("\n\n")[1])
    label.add_argument("map", help="map directory (snapshot or live)")
    which = label.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, help="keyframe id (with --label)")
    which.add_argument("--yaml", help="labels file: entries of label + keyframe {robot, session, id} or "
                                      "region {center: [x, y, z], radius_m} (docs/place_text.md)")
    label.add_argument("--robot", help="robot of the keyframe (needed when the id is in several)")
    label.add_argument("--session", help="session of the keyframe (needed when the id is in several)")
    label.add_argument("--label", help="the name or address, e.g. 'Room 214'")
    label.add_argument("--source", default=None, help="who gave the label (default: user, or yaml with --yaml)")
    label.set_defaults(func=run_label)
    query = cmds.add_parser("query", help="keyframes whose labels or OCR text match a text, ranked",
                            description=__doc__.split("\n\n")[2])
    query.add_argument("map", help="map directory (snapshot or live)")
    query.add_argument("--text", required=True, help="what to look for, e.g. 'room 214'")
    query.add_argument("--limit", type=int, default=10, help="at most this many keyframes (default 10)")
    query.add_argument("--min-confidence", type=float, default=0.0,
                       help="ignore OCR readings below this confidence (default 0: use all, weighted)")
    query.add_argument("--json", action="store_true", help="print the matches as JSON")
    query.add_argument("--no-embedding", action="store_true",
                       help="token matching only: never load the sentence-embedding model")
    query.add_argument("--threads", type=int, default=1,
                       help="torch threads for the embeddings (default 1: more threads only pay on idle cores)")
    query.set_defaults(func=run_query)


def _new_labels(keyframes: Sequence[Keyframe], wanted: dict[int, list[PlaceLabel]]) -> dict[int, list[PlaceLabel]]:
    """The labels each keyframe does not carry yet (re-running a labels file adds nothing)."""
    out = {}
    for key, labels in wanted.items():
        have = {lb.label for lb in keyframes[key].labels}
        new = [lb for lb in labels if lb.label not in have]
        if new:
            out[key] = new
    return out


def _labels_from_args(args: argparse.Namespace, keyframes: Sequence[Keyframe]) -> dict[int, list[PlaceLabel]]:
    stamp = time.time_ns()
    if args.yaml is not None:
        if args.label is not None or args.robot is not None or args.session is not None:
            raise InputError("--yaml gives labels and keyframes itself; drop --label/--robot/--session")
        return load_labels(args.yaml, keyframes, args.source or "yaml", stamp)
    if args.label is None or not args.label.strip():
        raise InputError("--id needs --label 'NAME' (the place's name or address)")
    key = find_keyframe(keyframes, args.id, args.robot, args.session, f"map {args.map}")
    return {key: [PlaceLabel(args.label, args.source or "user", stamp)]}


def run_label(args: argparse.Namespace) -> int:
    path = Path(args.map).expanduser()
    if live_map.is_live_map(path):
        open_map(path, load_local=False)  # the same checks and messages as every map tool
        log = live_map.MapLog(path, writable=True)  # refuses while a node appends to it
        try:
            new = _new_labels(log.keyframes, _labels_from_args(args, log.keyframes))
            for key, labels in new.items():
                for lb in labels:
                    log.add_label(key, lb)
            keyframes = log.keyframes
        finally:
            log.close()
    else:
        data = open_map(path, load_local=True)
        new = _new_labels(data.keyframes, _labels_from_args(args, data.keyframes))
        if new:
            for key, labels in new.items():
                data.keyframes[key].labels = (*data.keyframes[key].labels, *labels)
            write_map(data.path, data.keyframes, data.loops, data.meta["model_id"], int(data.meta["global_dim"]),
                      sidecars_from=data.path, optimized=data.poses_to_keep())
        keyframes = data.keyframes
    added = sum(len(v) for v in new.values())
    say(f"map {path}: added {added} label(s) to {len(new)} keyframe(s)")
    for key, labels in sorted(new.items()):
        k = keyframes[key]
        say(f"  key {key} (robot {k.robot_id} session {k.session_id} id {k.id}): "
            + ", ".join(repr(lb.label) for lb in labels))
    if not new:
        say("  (every keyframe named already had its label)")
    return 0


class _LazyEmbedder:
    """Loads torch and the model on the first ``embed`` (token matches often fill the limit)."""

    def __init__(self, threads: int) -> None:
        self._model = None
        self.threads = threads
        self.seconds = 0.0

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        t0 = time.perf_counter()
        if self._model is None:
            import torch

            from vpr_ros.models.text_embedding import TextEmbedder

            # One thread by default: on 2 busy cores, 2 intra-op threads took 735 ms per query vs 14 ms.
            torch.set_num_threads(self.threads)
            self._model = TextEmbedder()
        out = self._model.embed(texts)
        self.seconds += time.perf_counter() - t0
        return out


def _stamp(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).isoformat(timespec="milliseconds")


def match_rows(keyframes: Sequence[Keyframe], matches: Sequence[PlaceMatch]) -> list[dict]:
    """One JSON-ready dict per match: rank, key, robot/session/id, stamp, position (or None), score, how, evidence."""
    rows = []
    for rank, m in enumerate(matches, 1):
        k = keyframes[m.key]
        pos = None if k.pose is None else [round(float(v), 4) for v in np.asarray(k.pose)[:3, 3]]
        rows.append({"rank": rank, "key": m.key, "robot_id": k.robot_id, "session_id": k.session_id,
                     "id": int(k.id), "stamp_ns": int(k.stamp_ns), "stamp": _stamp(int(k.stamp_ns)),
                     "position": pos, "score": m.score, "how": m.how, "evidence": m.evidence})
    return rows


def run_query(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise InputError(f"--limit {args.limit}: give 1 or more")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise InputError(f"--min-confidence {args.min_confidence}: give a value in [0, 1]")
    data = open_map(args.map, load_local=False)
    if args.threads < 1:
        raise InputError(f"--threads {args.threads}: give 1 or more")
    embedder = None if args.no_embedding else _LazyEmbedder(args.threads)
    matches = find_places(data.keyframes, args.text, args.limit, embedder, args.min_confidence)
    rows = match_rows(data.keyframes, matches)
    similar = match_rows(data.keyframes, similar_places(data.keyframes, args.text, min(args.limit, 5),
                                                        args.min_confidence))
    exact = any(m.exact for m in matches)
    used = embedder is not None and embedder._model is not None
    with_text = sum(bool(k.text) or bool(k.labels) for k in data.keyframes)
    if args.json:
        print(printable_json(json.dumps({"map": str(data.path), "query": args.text, "embedding": used,
                                         "keyframes_with_text": with_text, "exact_match": exact, "matches": rows,
                                         "similar_not_same_number": similar}, indent=1, ensure_ascii=False)))
        return 0
    found = (f"{len(rows)} match(es) for {args.text!r}" if exact else f"no exact match for {args.text!r}"
             + (f"; {len(rows)} partial or related match(es) below" if rows else ""))
    say(f"map {data.path}: {found} ({with_text} of {len(data.keyframes)} "
        f"keyframes carry text or labels{'; embeddings %.2f s' % embedder.seconds if used else ''})")
    if not with_text:
        say("  the map has no OCR text or labels: record with text.ocr background, or add labels with "
            "vpr-ros map label")
    for r in rows:
        where = "no pose" if r["position"] is None else "x {:.2f} y {:.2f} z {:.2f}".format(*r["position"])
        say(f"{r['rank']:3d}. key {r['key']} robot {r['robot_id']} session {r['session_id']} id {r['id']} "
            f"{r['stamp']} {where}  score {r['score']:.3f} {r['how']}: {r['evidence']}")
    if similar and not exact:
        say("similar (not the same number; these are other places, not matches):")
        for r in similar:
            say(f"    - key {r['key']} robot {r['robot_id']} session {r['session_id']} id {r['id']} {r['stamp']}: "
                f"{r['evidence']}")
    return 0
