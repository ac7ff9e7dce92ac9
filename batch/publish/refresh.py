"""Publishing a refresh run (``topx refresh``): the lists of a few users recomputed, every other
user's rows and the item-keyed tables carried over from the current run, as a new run.

The carried rows never leave the database: the sink copies them with INSERT … SELECT into the new
run's storage (:meth:`~batch.publish.base.Sink.load_refresh`), in the same transaction that loads
the refreshed rows, judges the run by the publish gate and switches to it. So, as with any
publish, readers see the previous run complete until the new one is complete, and a failure at
any point leaves the previous run current. The run the refresh was computed from must still be
current when the publisher lock is held (:class:`SourceChangedError` otherwise), and the new run's
id must never have been published (:class:`RunIdTakenError`): registering a published id again
would load the refresh over that run's rows, and copy the carried rows from the run being written.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from sqlalchemy.engine import Connection, Engine

from batch.config import GateConfig
from batch.data.interactions import IdMap
from batch.errors import PublishError, TransientError
from batch.lists import TopLists
from batch.log import log, redact
from batch.publish import gate as gates
from batch.publish import keyed, registry, upkeep
from batch.publish.base import CollectingSink, sink_for
from batch.publish.connect import engine_scope, session, shown
from batch.publish.models import PRUNED, PUBLISHED
from batch.publish.publisher import DEFAULT_CHUNK_ROWS, record_failure, reject
from batch.publish.registry import RunInfo
from batch.publish.rows import RunRows, id_text


class SourceChangedError(PublishError, TransientError):
    """Another run became current while the refresh computed its lists from the previous one.
    Temporary: running the refresh again computes it from the new current run (exit 75)."""


class RunIdTakenError(PublishError):
    """The refresh's run id names a run that was published (current, superseded or pruned): a
    refresh publishes a new run and never writes over one (exit 2)."""

    exit_code = 2


# Statuses of a run id a refresh may not take: its rows are, or were, published.
TAKEN = (*PUBLISHED, PRUNED)


def published_run(database_url: str | None, run_id: str, *, engine: Engine | None = None) -> dict[str, Any] | None:
    """The ``runs`` row of ``run_id`` when it was published (:data:`TAKEN`), else None."""
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        found = registry.find(conn, run_id)
    return found if found is not None and found["status"] in TAKEN else None


def taken(run_id: str, status: str) -> RunIdTakenError:
    """The error for a refresh whose run id ``run_id`` is a published run's (``status``)."""
    return RunIdTakenError(f"run id {run_id} is taken: that run is {status}; a refresh publishes a new run and never "
                           f"writes over a published one: pass another --run-id, or none for a new id")


class _Refused(Exception):
    def __init__(self, verdict: dict[str, Any]):
        super().__init__("refused by the publish gate")
        self.verdict = verdict


def publish_refresh(database_url: str | None, run: RunInfo, source_run_id: str, lists: TopLists, users: IdMap,
                    items: IdMap, *, keep_runs: int = 5, gate: GateConfig | None = None,
                    known_users: int | None = None, engine: Engine | None = None,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict[str, Any]:
    """Publish run ``run.run_id``: ``lists`` for the refreshed ``users`` (their indices; every
    user of ``users`` is refreshed, with a list or without), every other user's rows of the
    current run ``source_run_id``, and its similar items, audiences and item attributes; made
    current in one transaction if the publish ``gate`` passes it (``known_users``: users the
    model knows, for its count of users without a list). ``items`` maps the lists' item indices.

    Raises :class:`RunIdTakenError` when ``run.run_id`` is a published run's id (the current
    run's, a superseded or a pruned one's; an id whose publish failed or was rejected may be
    published again), :class:`SourceChangedError` when ``source_run_id`` is not the current run,
    :class:`~.gate.GateRefusedError` when the gate refuses (the run is kept as ``rejected``),
    :class:`PublishError` on any other failure; the previous run stays current in every case.
    """
    if keep_runs < 1:
        raise PublishError(f"keep_runs must be ≥ 1; got {keep_runs}")
    rows = RunRows.build(run.run_id, lists, users, items, chunk_rows=chunk_rows)
    refreshed = id_text(users, "user")
    start = perf_counter()
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        sink = sink_for(eng)
        with sink.locked(conn):
            recovered = upkeep.recover(conn, sink)
            with conn.begin():
                require_current(conn, source_run_id)
                status = registry.status(conn, run.run_id)
                if status in TAKEN:
                    raise taken(run.run_id, status)
                registry.register(conn, run, registry.now())
            outcome = _load_and_switch(conn, sink, run, rows, source_run_id, refreshed,
                                       (len(items), known_users), gate or GateConfig())
            prune_start = perf_counter()
            pruning = upkeep.prune(conn, sink, keep_runs)
            outcome["phases"]["prune_s"] = perf_counter() - prune_start
        seconds = perf_counter() - start
        summary = {"run_id": run.run_id, "source_run": source_run_id, "refreshed_rows": len(rows),
                   "seconds": round(seconds, 3), **outcome, **pruning, "recovered": recovered,
                   "phases": {k: round(v, 3) for k, v in outcome["phases"].items()},
                   "database": shown(eng.url), "sink": sink.name}
    log.info("published refresh run %s of run %s: %d users refreshed, %d rows in all, in %.1f s", run.run_id,
             source_run_id, len(users), summary["rows"], seconds)
    return summary


def require_current(conn: Connection, source_run_id: str) -> dict[str, Any]:
    """The current run's row, which must be ``source_run_id``'s (:class:`SourceChangedError`)."""
    current = registry.current(conn)
    if current is None or current["id"] != source_run_id:
        now = "no run" if current is None else f"run {current['id']}"
        raise SourceChangedError(f"{now} is current, not run {source_run_id} that the refresh was computed from "
                                 f"(another run was published meanwhile): run topx refresh again")
    return current


def _load_and_switch(conn: Connection, sink: CollectingSink, run: RunInfo, rows: RunRows, source_run_id: str,
                     refreshed, sizes: tuple[int, int | None], gate: GateConfig) -> dict[str, Any]:
    n_items, known_users = sizes
    try:
        with conn.begin():
            phases = sink.load_refresh(conn, rows, source_run_id, refreshed)
            start = perf_counter()
            stats = sink.collected_stats(conn, run.run_id)
            phases["stats_s"] = perf_counter() - start
            candidate = gates.Candidate(run.run_id, run.metrics, stats["n_rows"], stats["n_users"], known_users)
            verdict = gates.judge(gate, candidate, require_current(conn, source_run_id))
            if not verdict["passed"]:
                raise _Refused(verdict)
            start = perf_counter()
            sink.attach(conn, run.run_id)
            counts = keyed.carry(conn, run.run_id, source_run_id)
            superseded = registry.switch(conn, run, {**stats, "n_items": n_items}, registry.now(), verdict)
            phases["switch_s"] = perf_counter() - start
    except _Refused as refused:
        with conn.begin():
            kept = reject(conn, run, refused.verdict)
        raise gates.refusal(run.run_id, refused.verdict, rejected=kept) from None
    except BaseException as exc:
        record_failure(conn, run.run_id, exc)
        if isinstance(exc, PublishError) or not isinstance(exc, Exception):
            raise
        raise PublishError(f"publishing refresh run {run.run_id} failed, the previous run stays current: "
                           f"{type(exc).__name__}: {redact(str(exc))}") from exc
    return {"rows": stats["n_rows"], "users": stats["n_users"], "superseded": superseded, **counts,
            "phases": phases, "gate": verdict}
