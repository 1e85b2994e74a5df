"""`vpr-ros bench models` runs our real backends side by side (tiny random model: seconds)."""

import re

from vpr_ros.cli.main import main


def test_bench_models_compares_backends_on_identical_weights(capsys):
    assert main(["bench", "models", "--preset", "selavpr", "--small", "--variants", "bf16,ort",
                 "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): m for m in re.finditer(
        r"^\| (\w+) \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+|n/a) \|$", out, re.M)}
    assert set(rows) == {"eager", "bf16", "ort"}
    # Every variant loads the same saved random init, so ORT fp32 reproduces eager.
    assert float(rows["ort"].group(5)) > 0.99999 and float(rows["ort"].group(6)) > 0.99999
    assert float(rows["bf16"].group(5)) > 0.999
    # The ceiling table: one row per precision with a positive rate and best-case speed-up.
    ceiling = {m.group(1): (float(m.group(2)), float(m.group(4))) for m in re.finditer(
        r"^\| (fp32|bf16|int8) \([^)]*\) \| (\d+) \| (\d+) \| ([\d.]+) \|$", out, re.M)}
    assert set(ceiling) == {"fp32", "bf16", "int8"}
    assert all(rate > 0 and speedup > 0 for rate, speedup in ceiling.values())


def test_bench_models_rejects_unknown_variants(capsys):
    assert main(["bench", "models", "--preset", "lite0-gem", "--variants", "fp8"]) == 2
    assert "unknown variants" in capsys.readouterr().out


def test_bench_models_runs_the_transport_and_query_presets(capsys):
    # --small picks each preset's tiny config (8 clusters / 8 queries), so 322x322 runs in seconds.
    for preset in ("salad", "boq"):
        assert main(["bench", "models", "--preset", preset, "--small", "--variants", "ort", "--rounds", "1"]) == 0
        out = capsys.readouterr().out
        row = re.search(r"^\| ort \| \d+ \| \d+ \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
        assert row and float(row.group(1)) > 0.99999 and float(row.group(2)) > 0.99999
