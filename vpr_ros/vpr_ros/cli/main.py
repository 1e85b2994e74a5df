"""``vpr-ros``: the command line. Each subcommand lives in its own module with ``add_parser``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vpr_ros.core.errors import VprError

# module name -> subcommand; each module exposes add_parser(subparsers) that sets func=run(args)->int
SUBCOMMANDS = ("demo", "replay", "eval", "bench", "weights", "models", "map_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpr-ros", description="Visual place recognition loop closure for SLAM.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"vpr_ros.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except VprError as exc:
        print(f"vpr-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # a full disk, a file removed under us: the user's environment, not a bug, so no traceback
        print(f"vpr-ros {args.command}: error: {exc}; check free disk space, permissions and the "
              "paths given", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vpr-ros {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
