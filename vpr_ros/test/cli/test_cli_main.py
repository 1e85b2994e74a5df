"""The command line imports only the chosen subcommand: map tools start without torch and the models."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from vpr_ros.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("torch" in sys.modules)
"""


def _torch_imported(*argv: str) -> bool:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    return proc.stdout.strip().splitlines()[-1] == "True"


def test_map_subcommand_does_not_import_torch_but_the_full_help_lists_every_command():
    assert not _torch_imported("-v", "map", "--help")
    out = subprocess.run([sys.executable, "-m", "vpr_ros.cli.main", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    for command in ("demo", "replay", "eval", "bench", "weights", "models", "map"):
        assert command in out
