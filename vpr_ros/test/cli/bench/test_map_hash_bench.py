"""``vpr-ros bench map --hash`` runs end to end on a tiny SIMULATED map (not a timing test)."""

from __future__ import annotations

import argparse

from vpr_ros.cli.bench.map import add_arguments, run_map_bench


def test_hash_bench_reports_every_row_and_the_fleet_bytes():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--hash", "--sizes", "300", "--dims", "32", "--queries", "5", "--hash-candidates", "300",
                              "--hash-factories", "BFlat"])
    lines: list[str] = []
    assert run_map_bench(args, lines.append) == 0
    rows = {" ".join(line.split()[2:-6]): line.split() for line in lines if line.lstrip().startswith("300 ")}
    assert set(rows) == {"Flat", "HNSW32 efSearch=128", "hash BFlat top300 + rerank", "hash BFlat only (no rerank)"}
    assert float(rows["hash BFlat top300 + rerank"][-3]) == 1.0  # every keyframe re-ranked: exact float search
    assert any("hash only" in line for line in lines) and "SIMULATED" in lines[0]
