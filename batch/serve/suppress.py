"""Per-user suppression: (user, item[, until]) pairs never to recommend, e.g. items a user was
emailed about last week or bought in another channel.

The file is CSV without a header, one pair a line: ``user_id,item_id`` or
``user_id,item_id,until`` with ``until`` an ISO 8601 date or time (UTC when it names no zone);
a pair with an ``until`` at or before the run's reference time (the one availability uses,
:func:`~batch.data.availability.reference_time`: fixed with the run, not the clock when the
search runs) has expired and is ignored. ``#``
comment lines and blank lines are skipped. A malformed line stops the run with
:class:`~batch.errors.DataError` naming file, line and column; ids not in the data are reported
by line (logged and counted in the search summary), never dropped silently, since a user or an
item that left the catalogue is routine. Suppressed pairs join the seen items the search
excludes, so lists stay full.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import scipy.sparse as sp

from batch import storage
from batch.data.interactions import IdMap
from batch.errors import DataError

log = logging.getLogger("topx.serve")
SHOWN = 10  # unknown-id lines named in the log and the summary


def read_suppression(location: str, users: IdMap, items: IdMap,
                     now: datetime | Callable[[], datetime] | None = None) -> tuple[sp.csr_matrix, dict]:
    """The file's pairs in force at ``now`` as a bool CSR (n_users, n_items), and a report:
    ``suppress_pairs`` (in force, known), ``suppress_expired``, ``suppress_unknown`` and
    ``suppress_unknown_lines`` (the first :data:`SHOWN`). ``now``: the run's reference time, or
    a function giving it, called only when a pair has an ``until`` (default: the current time)."""
    rows = _rows(location)
    if any(until is not None for *_, until in rows):
        now = now() if callable(now) else now or datetime.now(UTC)
    live = [(line, user, item) for line, user, item, until in rows if until is None or until > now]
    line_no = np.array([line for line, _, _ in live], np.int64)
    user_ids = np.array([user for _, user, _ in live], dtype=str)
    item_ids = np.array([item for _, _, item in live], dtype=str)
    known = (users.contains(user_ids) & items.contains(item_ids)) if live else np.zeros(0, bool)
    matrix = sp.csr_matrix((np.ones(int(known.sum()), bool),
                            (users.index(user_ids[known], what="user") if known.any() else np.zeros(0, np.int64),
                             items.index(item_ids[known], what="item") if known.any() else np.zeros(0, np.int64))),
                           shape=(len(users), len(items)))
    matrix.sum_duplicates()
    unknown = line_no[~known]
    if len(unknown):
        shown = "; ".join(f"{location}:{line}: user {user_ids[i]!r}, item {item_ids[i]!r}"
                          for i, line in zip(np.flatnonzero(~known)[:SHOWN], unknown[:SHOWN], strict=True))
        log.warning("suppression file: %d pair(s) name a user or item not in the data: %s%s", len(unknown), shown,
                    " …" if len(unknown) > SHOWN else "")
    return matrix, {"suppress_pairs": int(matrix.nnz), "suppress_expired": len(rows) - len(live),
                    "suppress_unknown": int(len(unknown)), "suppress_unknown_lines": unknown[:SHOWN].tolist()}


def _rows(location: str) -> list[tuple[int, str, str, datetime | None]]:
    """``(line, user id, item id, until or None)`` of every pair line; :class:`DataError` on a
    malformed one."""
    try:
        text = storage.read_bytes(location).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", file=str(location)) from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in next(csv.reader(io.StringIO(line)))]
        if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
            raise DataError(f"expected user_id,item_id[,until]; got {len(fields)} field(s)", file=str(location),
                            line=number)
        rows.append((number, fields[0], fields[1], _until(fields[2], location, number) if len(fields) == 3
                     and fields[2] else None))
    return rows


def _until(value: str, location: str, line: int) -> datetime:
    try:
        until = datetime.fromisoformat(value)
    except ValueError:
        raise DataError(f"until {value!r} is not an ISO 8601 date or time", file=str(location), line=line,
                        column=3) from None
    return until if until.tzinfo else until.replace(tzinfo=UTC)
