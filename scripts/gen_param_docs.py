"""Regenerate vpr_ros/config/loop_closure.yaml and the parameter table in docs/ros2.md from the
config dataclasses (the single source); run after adding or changing a parameter:
    .venv/bin/python scripts/gen_param_docs.py
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "vpr_ros"))

from vpr_ros.nodes.params import parameter_table_markdown  # noqa: E402

HEADER = "| Parameter |"


def main() -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_yaml.py")], check=True)
    doc = ROOT / "docs" / "ros2.md"
    lines = doc.read_text().splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.startswith(HEADER))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    doc.write_text("".join(lines[:start]) + parameter_table_markdown() + "".join(lines[end:]))
    print(f"gen_param_docs: wrote {doc.relative_to(ROOT)} ({end - start} rows before)")


if __name__ == "__main__":
    main()
