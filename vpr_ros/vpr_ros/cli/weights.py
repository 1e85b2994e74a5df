"""``vpr-ros weights list|download|verify``: the official SelaVPR/CricaVPR checkpoints in the user cache."""

from __future__ import annotations

import argparse

from vpr_ros.models import weights as W

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("weights", help="list, download or verify official model weights",
                                   description="Official checkpoints in the user cache ($VPR_ROS_CACHE or "
                                               "~/.cache/vpr_ros, under weights/).")
    parser.add_argument("action", choices=("list", "download", "verify"))
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"weights to act on (default: all): {', '.join(sorted(W.SOURCES))}")
    parser.add_argument("--url", default=None, help="download from this URL instead (one NAME only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    names = list(args.names) or sorted(W.SOURCES)
    if args.url and len(names) != 1:
        print("vpr-ros weights: --url needs exactly one NAME")
        return 2
    if args.action == "list":
        for name in names:
            src = W.get_source(name)
            path = W.cached_weights_path(name)
            state = f"cached at {path}" if path else "not downloaded"
            print(f"{name:18s} preset={src.preset:13s} {state}\n{'':18s} {src.description}; {src.page}")
        return 0
    if args.action == "download":
        for name in names:
            path = W.download(name, url=args.url, progress=not args.no_progress)
            print(f"{name}: {path} sha256 {W.verify(name, path)}")
        return 0
    failed = 0
    for name in names:
        path = W.cached_weights_path(name)
        if path is None:
            W.get_source(name)
            print(f"{name}: not downloaded")
            failed += len(args.names) > 0  # verifying an explicitly named, missing file is an error
            continue
        print(f"{name}: OK sha256 {W.verify(name, path)}")
    return 1 if failed else 0
