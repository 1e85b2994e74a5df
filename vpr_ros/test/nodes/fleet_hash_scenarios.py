"""Fleet with hashes only (test_fleet_hashes.py), run as a script inside a private network namespace.

    python fleet_hash_scenarios.py hashes --out result.json --tmp DIR --deadline SEC [--frames N]

Two real ``loop_closure_node`` processes with a hashing extractor (hash_extractor.py) and
``index.first_pass:=hash``: robot A broadcasts its keyframes as 64-byte hashes only
(``fleet.send_descriptors:=hash``), robot B indexes them, finds A's keyframes among its Hamming
candidates, fetches their float descriptors and local features from A's service, and closes loops.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fleet_scenarios import FLEET_PARAMS, play, watch_loops
from revisit_data import corridor_revisit
from scenario_harness import Harness, NodeProcess, loop_dict, run_scenario_main, scenario_parser

HASH_PARAMS = ["-p", "extractor_factory:=hash_extractor:build", "-p", "fleet.enabled:=true",
               "-p", "index.first_pass:=hash", "-p", "fleet.send_descriptors:=hash"]


def _robot(name: str, tmp: str) -> NodeProcess:
    from pathlib import Path

    return NodeProcess(["--ros-args", "-r", f"__ns:=/{name}", *FLEET_PARAMS, *HASH_PARAMS,
                        "-p", f"detector.robot_id:={name}"], Path(tmp) / f"node_{name}.log")


def hashes(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """A plays the reference traversal, B (knowing A only by hashes) the query traversal."""
    ref, query = corridor_revisit(a.frames)[:a.frames], corridor_revisit(a.frames)[a.frames:]
    loops = watch_loops(h, ["ra", "rb"])
    ra, rb = _robot("ra", a.tmp), _robot("rb", a.tmp)
    out: dict[str, Any] = {}
    try:
        out["settled_a"] = play(h, "ra", ra, ref, 40.0)
        out["b_has_a"] = h.spin_until(lambda: h.diag("rb", "fleet.remote_keyframes", 0) >= a.frames, 15.0)
        out["settled_b"] = play(h, "rb", rb, query, 40.0)
        h.spin_until(lambda: len(loops["rb"]) > 0 and h.diag("rb", "fleet.globals_received", 0) > 0, 10.0)
        h.spin_for(0.5)
        out["loops_b"] = [loop_dict(m) for m in loops["rb"]]
        out["diag_a"], out["diag_b"] = dict(h.diagnostics["ra"]), dict(h.diagnostics["rb"])
        out["alive"] = [n.alive() for n in (ra, rb)]
    finally:
        out["rc"] = [n.stop() for n in (ra, rb)]
        out["log"] = "\n".join(f"--- {n.log.name}\n{n.tail()}" for n in (ra, rb))
    return out


SCENARIOS = {"hashes": hashes}


def main() -> int:
    return run_scenario_main(SCENARIOS, scenario_parser(SCENARIOS, frames=8).parse_args())


if __name__ == "__main__":
    sys.exit(main())
