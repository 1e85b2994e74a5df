"""Regenerate vpr_ros/config/loop_closure.yaml from the config dataclasses (the single source).

Run after changing a default or a description: .venv/bin/python scripts/gen_config_yaml.py
(test_config.py fails while the YAML and the dataclasses disagree).
"""

import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "vpr_ros"))

from vpr_ros.nodes.settings import all_parameter_specs  # noqa: E402

#: Parameters left out of the file: for tests and benchmarks only.
HIDDEN = {"extractor_factory"}


def render() -> str:
    lines = ["# Parameters of vpr_ros loop_closure_node (ROS 2 parameter file).",
             "# Keys and defaults equal the dataclasses in vpr_ros/core/config.py (a test checks this;",
             "# regenerate with scripts/gen_config_yaml.py). `vpr-ros replay --config` reads the same",
             "# file. Units are in the names.",
             "/**:", "  ros__parameters:"]
    section = None
    for spec in all_parameter_specs():
        if spec.name in HIDDEN:
            continue
        sec, _, name = spec.name.rpartition(".")
        if sec != section:
            if sec:
                lines.append(f"    {sec}:")
            section = sec
        indent = "      " if sec else "    "
        desc = spec.description + (f" One of: {', '.join(spec.choices)}." if spec.choices else "")
        lines += [f"{indent}# {line}" for line in textwrap.wrap(desc, 92)]
        value = spec.default
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = f'"{value}"'
        else:
            text = repr(value)
        lines.append(f"{indent}{name}: {text}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    (ROOT / "vpr_ros" / "config" / "loop_closure.yaml").write_text(render())
