"""Bookkeeping of runs in the ``runs`` table: the states a run goes through and who moves it.

::

    (new) ──register──▶ loading ──switch──▶ current ──next switch──▶ superseded ──prune──▶ pruned
      │                   │ exception, or found stale after a crash     ▲
      │                   ▼                                             │
      │                 failed ──register (re-run)──▶ loading           │
      │                   ▲ │                                           │
      │    missing shard, │ │ collect (re-run)                          │
      │    or timed out   │ ▼                                           │
      └─────collect────▶ collecting ──────────finalize (switch)─────────┘

    (new), loading, failed or collecting ──refused by the publish gate──▶ rejected
    rejected ──register / collect (published anyway: allow_regression)──▶ loading / collecting

A re-run of a published run id keeps its old rows visible until its switch replaces them.
A ``collecting`` run belongs to its shard jobs, not to a crashed publisher: it is never stale.
Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, inspect, select, update
from sqlalchemy.engine import Connection

from batch.errors import PublishError
from batch.log import log, redact
from batch.publish.models import (
    COLLECTING,
    CURRENT,
    FAILED,
    LOADING,
    PRUNED,
    PUBLISHED,
    REJECTED,
    SUPERSEDED,
    check_runs_table,
    runs,
)
from batch.redaction import redact_value

STALE_REASON = "the publisher stopped during the load (process killed or connection lost)"
_ERROR_CHARS = 4000
_SECRET_KEY = re.compile(r"(?i)password|passwd|secret|token|access_key|credential")


@dataclass(frozen=True)
class RunInfo:
    """What the ``runs`` table records about a run besides its lists.

    ``config``: the job settings (credentials are redacted before storing); ``metrics``: offline
    evaluation results; ``counts``: pipeline counts such as interactions; ``model_location``:
    where model.tar.gz lives; ``started_at``: when the job started (timezone-aware).
    """

    run_id: str
    config: dict
    model_location: str
    started_at: datetime
    metrics: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)


def now() -> datetime:
    return datetime.now(UTC)


def register(conn: Connection, run: RunInfo, at: datetime) -> str | None:
    """Mark the run ``loading`` before its rows load; returns its previous status (None if new).
    A published run keeps its status (and its rows stay visible) until :func:`switch`."""
    status = _status(conn, run.run_id)
    if status in PUBLISHED:
        return status
    if status == COLLECTING:
        raise PublishError(f"run {run.run_id} is collecting shards: finalize it (topx finalize) or let "
                           f"topx cleanup fail it, rather than publishing it whole")
    _enter(conn, run, LOADING, status, at)
    return status


def collect(conn: Connection, run: RunInfo, at: datetime) -> str | None:
    """Mark a sharded run ``collecting`` (new, or failed before); returns its previous status.
    A run in any other state is left as it is: the caller decides what that means."""
    status = _status(conn, run.run_id)
    if status in (None, FAILED, REJECTED):
        _enter(conn, run, COLLECTING, status, at)
    return status


def _enter(conn: Connection, run: RunInfo, status: str, previous: str | None, at: datetime) -> None:
    values = {"status": status, "started_at": _utc(run.started_at), "model_location": run.model_location,
              "config": _jsonable(run.config), "error": None, "finished_at": None, "published_at": None,
              "gate": None}
    if previous is None:
        conn.execute(insert(runs).values(id=run.run_id, created_at=at, **values))
    else:
        conn.execute(update(runs).where(runs.c.id == run.run_id).values(**values))


def hold(conn: Connection, run_id: str) -> str | None:
    """The run's status, with its row locked until the transaction ends (a no-op update: on
    SQLite it also takes the write lock now, so nothing commits between this read and our
    writes)."""
    conn.execute(update(runs).where(runs.c.id == run_id).values(status=runs.c.status))
    return _status(conn, run_id)


def reject(conn: Connection, run: RunInfo, verdict: dict, reason: str, at: datetime) -> bool:
    """Record that the publish gate refused the run (``verdict``: its record, ``reason``: one
    line). A published run keeps its status (its rows are complete; it just does not become
    current again); returns False then."""
    status = _status(conn, run.run_id)
    if status in PUBLISHED:
        log.warning("run %s is %s; the gate refused publishing it again (%s)", run.run_id, status, reason)
        return False
    _enter(conn, run, REJECTED, status, at)
    conn.execute(update(runs).where(runs.c.id == run.run_id).values(
        finished_at=at, error=redact(reason)[:_ERROR_CHARS], metrics=_jsonable(run.metrics),
        counts=_jsonable(run.counts), gate=_jsonable(verdict)))
    return True


def switch(conn: Connection, run: RunInfo, stats: dict[str, int], at: datetime, gate: dict | None = None) -> str | None:
    """Make the run current (in the transaction holding its rows); returns the run it replaced.
    ``gate``: the publish gate's verdict, stored with the run."""
    previous = current_id(conn)
    if previous is not None and previous != run.run_id:
        # The unique index allows one current run: demote the old one first.
        conn.execute(update(runs).where(runs.c.id == previous).values(status=SUPERSEDED))
    conn.execute(update(runs).where(runs.c.id == run.run_id).values(
        status=CURRENT, published_at=at, finished_at=at, error=None, started_at=_utc(run.started_at),
        model_location=run.model_location, config=_jsonable(run.config),
        metrics=_jsonable(run.metrics), counts=_jsonable(run.counts), gate=gate and _jsonable(gate), **stats))
    return previous if previous != run.run_id else None


def fail(conn: Connection, run_id: str, reason: str, at: datetime, *, collecting: bool = False) -> bool:
    """Record a failed run (creating its row if needed). A published run is left as it is,
    since marking it failed would hide lists that are complete; returns False then. So is a
    ``collecting`` run unless ``collecting`` says the caller deleted what its shards loaded."""
    status = _status(conn, run_id)
    values = {"status": FAILED, "finished_at": at, "error": redact(reason)[:_ERROR_CHARS]}
    if status is None:
        conn.execute(insert(runs).values(id=run_id, created_at=at, **values))
    elif status in (LOADING, FAILED) or (status == COLLECTING and collecting):
        conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
    else:
        log.warning("run %s is %s; not marking it failed (%s)", run_id, status, redact(reason))
        return False
    return True


def stale_loads(conn: Connection) -> list[str]:
    """Runs left ``loading``: with the publisher lock held, their publisher is gone."""
    return list(conn.execute(select(runs.c.id).where(runs.c.status == LOADING).order_by(runs.c.id)).scalars())


def collecting(conn: Connection) -> list[str]:
    """Runs waiting for their shards (or for ``topx finalize``)."""
    return list(conn.execute(select(runs.c.id).where(runs.c.status == COLLECTING).order_by(runs.c.id)).scalars())


def expired(conn: Connection, keep: int) -> list[str]:
    """Superseded runs beyond the ``keep`` - 1 most recently published: with the current run,
    ``keep`` runs stay. The current run is never among them, whatever the clocks that stamped
    ``published_at`` said."""
    query = (select(runs.c.id).where(runs.c.status == SUPERSEDED)
             .order_by(runs.c.published_at.desc(), runs.c.id.desc()).offset(keep - 1))
    return list(conn.execute(query).scalars())


def mark_pruned(conn: Connection, run_id: str) -> None:
    conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == SUPERSEDED).values(status=PRUNED))


def status(conn: Connection, run_id: str) -> str | None:
    """The run's status, None if the run is unknown."""
    return _status(conn, run_id)


def find(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """The run's row as plain values (as :func:`current`), None if the run is unknown."""
    if not inspect(conn).has_table("runs"):
        return None
    check_runs_table(conn)
    row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    return None if row is None else _plain(row._mapping)


def current_id(conn: Connection) -> str | None:
    return conn.execute(select(runs.c.id).where(runs.c.status == CURRENT)).scalar()


def current(conn: Connection) -> dict[str, Any] | None:
    """The current run's row as plain values (timestamps as ISO 8601 UTC), or None."""
    if not inspect(conn).has_table("runs"):
        return None
    check_runs_table(conn)
    row = conn.execute(select(runs).where(runs.c.status == CURRENT)).first()
    return None if row is None else _plain(row._mapping)


def recent(conn: Connection, limit: int, statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The ``limit`` most recently created runs (of ``statuses``, default any), newest first,
    as plain values."""
    if not inspect(conn).has_table("runs"):
        return []
    check_runs_table(conn)
    query = select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
    if statuses is not None:
        query = query.where(runs.c.status.in_(statuses))
    return [_plain(row._mapping) for row in conn.execute(query)]


def _status(conn: Connection, run_id: str) -> str | None:
    return conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()


def _utc(moment: datetime | None) -> datetime | None:
    """Timezone-aware; a naive time is taken as UTC (not as the database session's zone)."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _jsonable(value: dict | None) -> dict:
    """A JSON-safe copy (numpy scalars and paths as plain values) with credentials redacted,
    because dashboards read this table."""
    text = json.dumps(value or {}, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return _redacted(json.loads(text))


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(k) and v else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return redact_value(value) if isinstance(value, str) else value


def _plain(mapping) -> dict[str, Any]:
    out = dict(mapping)
    for key, value in out.items():
        if isinstance(value, datetime):  # SQLite hands back naive UTC
            out[key] = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return out
