"""``vpr-ros``: the command line. Each subcommand lives in its own module with ``add_parser``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vpr_ros.cli.terminal import EscapeLogRecords, printable
from vpr_ros.core.errors import VprError

# subcommand -> module; each module exposes add_parser(subparsers) that sets func=run(args)->int
COMMANDS = {"demo": "demo", "replay": "replay", "eval": "eval", "bench": "bench", "weights": "weights",
            "models": "models", "map": "map_cmd", "bag": "bag_cmd", "localize": "localize"}
SUBCOMMANDS = tuple(COMMANDS.values())


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if it is a known one (options come before it)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``only``: import just that subcommand's module. ``vpr-ros map ...`` then starts
    in ~0.4 s instead of ~4 s: the other modules pull in torch and the models."""
    parser = argparse.ArgumentParser(
        prog="vpr-ros", description="Visual place recognition loop closure for SLAM.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, module in COMMANDS.items():
        if only is None or command == only:
            importlib.import_module(f"vpr_ros.cli.{module}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_chosen(argv)).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # warnings quote bag topics and messages: escaped too
        if not any(isinstance(f, EscapeLogRecords) for f in handler.filters):
            handler.addFilter(EscapeLogRecords())
    try:
        return int(args.func(args) or 0)
    except VprError as exc:
        # messages quote paths, ids and labels read from files: shown, never obeyed (cli/terminal.py)
        print(f"vpr-ros {args.command}: error: {printable(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        # a full disk, a file removed under us: the user's environment, not a bug, so no traceback
        print(f"vpr-ros {args.command}: error: {printable(exc)}; check free disk space, permissions and the "
              "paths given", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vpr-ros {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
