"""The ``topx`` command line: a thin layer over the library.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its commands; a command's handler takes the parsed arguments and returns the summary dict that
is printed as the final JSON line. Errors topx raises on purpose become one readable line on
stderr and a non-zero exit status; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from batch import __version__
from batch.errors import TEMPFAIL, TerminatedError, TopxError
from batch.log import log, redact, setup_logging, summary, when_safe
from batch.transient import exit_code

# Command-group modules, in the order their commands are listed in --help.
GROUPS = ("data", "train", "tune", "serve", "run", "shard", "refresh", "publish", "report", "aws", "aws_batch")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="topx",
        description="Train a factorization machine on interactions and publish top-x lists.",
    )
    parser.add_argument("--version", action="version", version=f"topx {__version__}")
    parser.add_argument("--log-level", default=None, type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                        help="DEBUG, INFO (default), WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        module = importlib.import_module(f"batch.cli.{group}")
        module.register(sub)
    parser.commands = sub.choices  # each command's own parser, by name
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # say so with the command's own usage, not topx's
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    level = args.log_level or (os.environ.get("TOPX_LOG_LEVEL") or "INFO").strip().upper()
    if level not in LOG_LEVELS:
        parser.print_usage(sys.stderr)
        print(f"topx: error: TOPX_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}; got "
              f"{os.environ.get('TOPX_LOG_LEVEL')!r}", file=sys.stderr)
        return 2
    setup_logging(level)
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
        try:
            summary(result)
        except BrokenPipeError:  # stdout's reader went away (`topx … | head -0`): nothing to say
            _silence_stdout()
            return 141  # 128 + SIGPIPE, what a shell reports for a command its pipe reader ended
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`TerminatedError` in the main thread, so the work in
    hand unwinds as for any error (the open transaction rolls back, the run is marked failed)
    and topx exits with 75, which AWS Batch retries. Later SIGTERMs are ignored: the first one
    is being handled, and the sender's SIGKILL ends a stop that takes too long."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate():
        raise TerminatedError("stopped by SIGTERM (AWS Batch stops a job's container this way, e.g. when its "
                              "host is drained or reclaimed)")

    def stop(signum, frame):
        # No logging here, and no raising inside a log handler (when_safe): either could
        # deadlock on, or be swallowed under, the handler's lock.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        when_safe(terminate)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
