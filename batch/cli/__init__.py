"""The ``topx`` command line: a thin layer over the library.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its commands; a command's handler takes the parsed arguments and returns the summary dict that
is printed as the final JSON line. Errors topx raises on purpose become one readable line on
stderr and a non-zero exit status; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from batch import __version__
from batch.errors import TopxError
from batch.log import log, redact, setup_logging, summary

# Command-group modules, in the order their commands are listed in --help.
GROUPS = ("data", "train", "serve", "run", "shard", "publish", "aws", "aws_batch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="topx",
        description="Train a factorization machine on interactions and publish top-x lists.",
    )
    parser.add_argument("--version", action="version", version=f"topx {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        module = importlib.import_module(f"batch.cli.{group}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        result = args.handler(args)
    except TopxError as exc:
        print(f"topx: error: {redact(str(exc))}", file=sys.stderr)
        log.debug("error details", exc_info=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("topx: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        summary(result)
    return 0
