"""Command line: ``python -m torchbloop.experiments.data {fetch [NAMES...] | list} [--root DIR]``."""

from __future__ import annotations

import argparse
import sys

from ._cache import DATASETS, dataset_dir
from .fetch import FetchError, fetch, is_fetched


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 fetch failed, 2 bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m torchbloop.experiments.data",
        description="Fetch the experiment datasets into the cache and list them.",
    )
    parser.add_argument(
        "--root", help="data root (default: $TORCHBLOOP_DATA or ~/.cache/torchbloop)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="fetch datasets (all when none is named)")
    p_fetch.add_argument("names", nargs="*", metavar="NAME", help=", ".join(DATASETS))
    sub.add_parser("list", help="list the datasets, their folders and whether they are fetched")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, info in DATASETS.items():
            state = "ok" if is_fetched(name, args.root) else "missing"
            print(f"{name:14s} {state:8s} {dataset_dir(name, args.root)}\n    {info.summary}")
        return 0
    unknown = [n for n in args.names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    try:
        fetch(args.names or None, root=args.root)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
