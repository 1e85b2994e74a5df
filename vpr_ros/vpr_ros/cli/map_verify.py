"""The checks of ``vpr-ros map verify``, in one place: the command, ``vpr-ros bench crash`` and the tests
use this function, and it runs every check ``--map-load`` runs, so a map verify calls OK loads.

Checked: every file the store reads (checksums of a snapshot map, every record of a live map, the
database rows and tables), the FAISS file against the descriptors, loops naming keyframes the map
holds, and the replay's frame index sidecar (``vpr_frame_index.json``). Changes nothing in the map.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vpr_ros.cli.map_access import DB, INDEX_FILE, MapData, index_mismatches, open_map
from vpr_ros.cli.frame_index import load_frame_index
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map import hash_table

__all__ = ["Verdict", "verify_map"]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """ok: the map is intact; message: what was checked, or what is damaged (names the file)."""

    ok: bool
    message: str
    data: MapData | None = None


def verify_map(path: str | Path) -> Verdict:
    """Every check of the map at ``path``. InputError (not a map) propagates; damage is a Verdict."""
    try:
        data = open_map(path, load_local=True)
        load_frame_index(data.path)  # what --map-load reads too
        bad, why = index_mismatches(data)
    except MapStoreError as exc:
        return Verdict(False, f"DAMAGED: {exc}")
    if bad:
        return Verdict(False, f"DAMAGED: map {data.path}: {INDEX_FILE} does not match the descriptors: {why}; "
                              "loading rebuilds the index from the descriptors, and vpr-ros map compact rewrites "
                              "the file", data)
    idents = data.by_ident()
    dangling = sum((lp.query_robot_id, lp.query_session_id, lp.query_id) not in idents
                   or (lp.match_robot_id, lp.match_session_id, lp.match_id) not in idents for lp in data.loops)
    if dangling:
        return Verdict(False, f"DAMAGED: map {data.path}: {DB} table loops names {dangling} keyframes the map "
                              "does not hold", data)
    how = ("crc32 of every local-feature record and structure (live map)" if data.meta.get("live") else
           "checksums and structure" if data.has_manifest else "structure only (no manifest.json, no checksums)")
    return Verdict(True, f"OK: map {data.path}: {len(data.keyframes)} keyframes, {len(data.loops)} loops, "
                         f"{len(data.optimized)} optimised poses, {_hashes(data)}; {how}; "
                         f"{INDEX_FILE} matches the descriptors", data)


def _hashes(data: MapData) -> str:
    """How many keyframes carry a binary hash (core/map/hash_table.py; its table is checked on loading)."""
    n, size = hash_table.count(data.keyframes)
    return f"{n} hashes ({size} B each)" if n else "no hashes"
