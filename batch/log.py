"""Logging, progress bars and the one-line JSON summary every command ends with.

Logs and progress go to stderr; stdout carries only the summary line, so scripts can parse it.
Anything that may hold a credential passes through :func:`redact` before it is printed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from batch.errors import TerminatedError
from batch.redaction import redact, redact_tree

__all__ = ["log", "progress", "redact", "redact_tree", "setup_logging", "summary", "when_safe"]

T = TypeVar("T")
log = logging.getLogger("topx")

class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_critical = 0  # depth of logging calls in progress in the main thread
_pending: list[Callable[[], None]] = []


def when_safe(action: Callable[[], None]) -> None:
    """Run ``action`` (a signal handler's work, which may raise) now, or, while the main thread
    is inside a logging handler, as soon as the handler is done: raised inside it, the exception
    would be swallowed by the handler's error printing, or leave its lock taken."""
    if _critical:
        _pending.append(action)
    else:
        action()


@contextmanager
def _deferring_signals() -> Iterator[None]:
    global _critical
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if not _critical and _pending:
            action = _pending.pop(0)
            _pending.clear()
            action()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the stream it was at
    set-up: code that swaps stderr (a test's capture, a notebook) then closes it leaves no
    handler writing to a closed file. A signal handler's work waits until a record is written
    (:func:`when_safe`)."""

    def __init__(self):
        super().__init__(None)

    def handle(self, record: logging.LogRecord) -> bool:
        with _deferring_signals():
            return super().handle(record)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass

    def handleError(self, record: logging.LogRecord) -> None:
        """A signal handler that raises (SIGTERM: :class:`~batch.errors.TerminatedError`) while a
        record is being written is not a logging failure: let it stop the work, as it would
        anywhere else, instead of printing it and carrying on."""
        if isinstance(sys.exc_info()[1], TerminatedError):
            raise  # the exception emit() is handling
        super().handleError(record)


def setup_logging(level: str | None = None) -> None:
    """Configure the ``topx`` logger once: stderr, timestamps, credentials redacted."""
    level = (level or os.environ.get("TOPX_LOG_LEVEL") or "INFO").upper()
    handler = _StderrHandler()
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


PROGRESS_MODES = ("bar", "log", "off")
LOG_EVERY_S = 10.0  # without a terminal: one progress log line this often


def progress_mode() -> str:
    """``TOPX_PROGRESS``: ``bar`` (a progress bar; also ``1``), ``log`` (a log line every
    ~10 s with rate and ETA) or ``off`` (also ``0``); unset, a bar on a terminal and log lines
    otherwise (AWS Batch, CI, a redirected stderr)."""
    given = os.environ.get("TOPX_PROGRESS", "").strip().lower()
    mode = {"1": "bar", "0": "off", "": "bar" if sys.stderr.isatty() else "log"}.get(given, given)
    if mode not in PROGRESS_MODES:
        from batch.errors import ConfigError

        raise ConfigError(f"TOPX_PROGRESS must be one of {', '.join(PROGRESS_MODES)}, 1 or 0; got {given!r}")
    return mode


def progress(items: Iterable[T], *, total: int | None = None, desc: str, unit: str = "it") -> Iterator[T]:
    """Wrap an iterable in progress reports on stderr, as :func:`progress_mode` says."""
    mode = progress_mode()
    if mode == "log":
        return _logged(items, total, desc, unit)
    from tqdm.auto import tqdm

    return iter(tqdm(items, total=total, desc=desc, unit=unit, disable=mode == "off", file=sys.stderr,
                     dynamic_ncols=True, leave=False))


def _logged(items: Iterable[T], total: int | None, desc: str, unit: str) -> Iterator[T]:
    """``items``, logging every :data:`LOG_EVERY_S` seconds how many are done, the rate and
    (with a ``total``) the time left."""
    started = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            last, rate = now, done / max(now - started, 1e-9)
            eta = f", about {_duration((total - done) / rate)} left" if total else ""
            log.info("%s: %d%s %s, %.3g %s/s%s", desc, done, f"/{total}" if total else "", unit, rate, unit, eta)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def summary(payload: dict[str, Any], file: Any = None) -> str:
    """Print the one-line JSON summary on stdout (or ``file``; credentials redacted) and return it."""
    # structural redaction: redacting the JSON text could break it (a secret-named key's null)
    line = json.dumps(redact_tree(json.loads(json.dumps(payload, default=_json_default))), separators=(",", ":"))
    print(line, file=file or sys.stdout, flush=True)
    return line


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
