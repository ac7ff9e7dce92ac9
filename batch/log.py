"""Logging, progress bars and the one-line JSON summary every command ends with.

Logs and progress go to stderr; stdout carries only the summary line, so scripts can parse it.
Anything that may hold a credential passes through :func:`redact` before it is printed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from batch.errors import TerminatedError

T = TypeVar("T")
log = logging.getLogger("topx")

# user:password@ in URLs, and key=value / "key": "value" pairs whose key names a secret. The
# user may be empty and the password may hold any character but '@' and white space ('/', ':',
# '#' and '?' too: SQLAlchemy and libpq take them unencoded), so it runs to the '@'.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]+)@")
_SECRET_KEY = re.compile(r"(?i)password|passwd|token|access_key|secret_key")
_SECRET_PAIR = re.compile(
    r"(?i)(?P<key>[\"']?[a-z_]*(?:password|passwd|secret|token|access_key)[a-z_]*[\"']?\s*[=:]\s*)"
    r"(?P<q>[\"']?)(?P<val>[^\s\"',;&]+)"
)


def redact(text: str) -> str:
    """Hide passwords in URLs and values of password/secret/token-like keys."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _SECRET_PAIR.sub(lambda m: f"{m['key']}{m['q']}***", text)


def redact_tree(value: Any) -> Any:
    """A copy of a JSON-like tree with passwords in URL strings and the values of password-,
    token- or access-key-named keys hidden. Structure and non-secret values are kept."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) and value[k] is not None else redact_tree(value[k])
                for k in value}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    return value


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the stream it was at
    set-up: code that swaps stderr (a test's capture, a notebook) then closes it leaves no
    handler writing to a closed file."""

    def __init__(self):
        super().__init__(None)

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


def progress(items: Iterable[T], *, total: int | None = None, desc: str, unit: str = "it") -> Iterator[T]:
    """Wrap an iterable in a progress bar on stderr (hidden when stderr is not a terminal
    unless ``TOPX_PROGRESS=1``), so batch logs stay readable."""
    from tqdm.auto import tqdm

    disable = not (sys.stderr.isatty() or os.environ.get("TOPX_PROGRESS") == "1")
    return iter(tqdm(items, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                     dynamic_ncols=True, leave=False))


def summary(payload: dict[str, Any]) -> str:
    """Print the one-line JSON summary on stdout (credentials redacted) and return it."""
    # structural redaction: redacting the JSON text could break it (a secret-named key's null)
    line = json.dumps(redact_tree(json.loads(json.dumps(payload, default=_json_default))), separators=(",", ":"))
    print(line, flush=True)
    return line


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
