"""The ``topx`` command line: a thin layer over the library.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its commands; a command's handler takes the parsed arguments and returns the summary dict that
is printed as the final JSON line. Errors topx raises on purpose become one readable line on
stderr and a non-zero exit status; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from batch import __version__
from batch.errors import TEMPFAIL, TerminatedError, TopxError
from batch.log import log, redact, setup_logging, summary
from batch.transient import exit_code

# Command-group modules, in the order their commands are listed in --help.
GROUPS = ("data", "train", "tune", "serve", "run", "shard", "publish", "report", "aws", "aws_batch")


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
        with stop_on_sigterm():
            result = args.handler(args)
    except KeyboardInterrupt:
        print("topx: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise  # a bug: keep the traceback
        message = str(exc) if isinstance(exc, TopxError) else f"{type(exc).__name__}: {exc}"
        hint = " (a temporary failure: the same job may succeed when retried)" if code == TEMPFAIL else ""
        print(f"topx: error: {redact(message)}{hint}", file=sys.stderr)
        log.debug("error details", exc_info=True)
        return code
    if result is not None:
        summary(result)
    return 0


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`TerminatedError` in the main thread, so the work in
    hand unwinds as for any error (the open transaction rolls back, the run is marked failed)
    and topx exits with 75, which AWS Batch retries. Later SIGTERMs are ignored: the first one
    is being handled, and the sender's SIGKILL ends a stop that takes too long."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise TerminatedError("stopped by SIGTERM (AWS Batch stops a job's container this way, e.g. when its "
                              "host is drained or reclaimed)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
