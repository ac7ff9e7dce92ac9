"""Publishing a run: register it, load its rows, switch to it in one transaction, prune.

Like luigi's COPY-plus-marker-row, the rows and the ``runs`` update that makes them current
commit together, so readers see the previous run complete until the new one is complete. The
run is registered as ``loading`` in an earlier, separate transaction, so a publisher killed
mid-load leaves a trace: the next publish (or :func:`cleanup`), holding the publisher lock,
finds the run still ``loading``, marks it failed and deletes anything it left.

Sharded runs, whose rows arrive from several jobs, are published by :mod:`.collect`.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from batch.config import GateConfig
from batch.data.interactions import IdMap
from batch.errors import PublishError, SchemaError
from batch.lists import KeyedLists, TopLists
from batch.log import log, redact
from batch.publish import gate as gates
from batch.publish import keyed, registry, upkeep
from batch.publish.base import Sink, sink_for
from batch.publish.connect import engine_scope, session, shown
from batch.publish.migrate import ensure_schema
from batch.publish.models import REJECTED, status_check_fix
from batch.publish.registry import RunInfo
from batch.publish.rows import RunRows

DEFAULT_CHUNK_ROWS = 200_000


def publish_run(database_url: str | None, run: RunInfo, lists: TopLists, users: IdMap, items: IdMap, *,
                item_titles=None, keep_runs: int = 5, engine: Engine | None = None,
                chunk_rows: int = DEFAULT_CHUNK_ROWS, gate: GateConfig | None = None,
                similar: KeyedLists | None = None, audiences: KeyedLists | None = None,
                item_attributes: dict | None = None) -> dict[str, Any]:
    """Publish ``lists`` as run ``run.run_id`` and make it the current run, if it passes the
    publish ``gate`` (default settings when None; see :mod:`.gate`): otherwise the run is
    recorded as ``rejected`` and :class:`~.gate.GateRefusedError` raised, nothing loaded.

    ``users`` / ``items`` map the lists' internal indices to external ids; ``item_titles``: an
    optional sequence aligned with ``items`` (None for no title). ``similar`` / ``audiences``:
    the run's similar items and audiences (:mod:`batch.serve.similar`), published with it;
    ``item_attributes``: the item file's columns (name → values aligned with ``items``),
    published as table ``item_attributes`` in the same transaction. Keeps the ``keep_runs`` most
    recently published runs. Re-publishing a run id replaces its rows. On failure raises
    :class:`PublishError`; the previous current run stays current and complete.
    Returns a summary: run_id, rows, users, seconds, rows_per_s, superseded, pruned,
    prune_deferred (runs readers still used, pruned later), recovered, phases (seconds),
    database (password hidden), gate (the verdict).
    """
    if keep_runs < 1:
        raise PublishError(f"keep_runs must be ≥ 1; got {keep_runs}")
    rows = RunRows.build(run.run_id, lists, users, items, item_titles=item_titles, chunk_rows=chunk_rows)
    side = keyed.rows_for(items, users, similar, audiences, item_attributes)
    stats = rows.stats()
    start = perf_counter()
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        sink = sink_for(eng)
        with sink.locked(conn):
            recovered = upkeep.recover(conn, sink)
            candidate = gates.Candidate(run.run_id, run.metrics, len(rows), stats["n_users"], len(users))
            verdict = gate_verdict(conn, gate or GateConfig(), run, candidate)
            with conn.begin():
                registry.register(conn, run, registry.now())
            phases, superseded, counts = _load_and_switch(conn, sink, run, rows, stats, verdict, side)
            prune_start = perf_counter()
            pruning = upkeep.prune(conn, sink, keep_runs)
            phases["prune_s"] = perf_counter() - prune_start
        seconds = perf_counter() - start
        summary = {"run_id": run.run_id, "rows": len(rows), "users": stats["n_users"],
                   "seconds": round(seconds, 3), "rows_per_s": round(len(rows) / max(seconds, 1e-9)),
                   "superseded": superseded, **counts, **pruning, "recovered": recovered,
                   "phases": {k: round(v, 3) for k, v in phases.items()},
                   "database": shown(eng.url), "sink": sink.name, "gate": verdict}
    log.info("published run %s: %d rows in %.1f s", run.run_id, len(rows), seconds)
    return summary


def gate_verdict(conn: Connection, gate: GateConfig, run: RunInfo, candidate: gates.Candidate) -> dict[str, Any]:
    """The gate's verdict on the run against the current run (read holding the publisher lock,
    so it cannot change before the switch). A refused run is recorded as ``rejected`` and
    :class:`~.gate.GateRefusedError` raised."""
    with conn.begin():
        verdict = gates.judge(gate, candidate, registry.current(conn))
        kept = reject(conn, run, verdict) if not verdict["passed"] else False
    if not verdict["passed"]:
        raise gates.refusal(run.run_id, verdict, rejected=kept)
    return verdict


def reject(conn: Connection, run: RunInfo, verdict: dict[str, Any]) -> bool:
    """Record the refused run as ``rejected``, in the caller's transaction; False when it is a
    published run (republished), which keeps its status."""
    log.warning("run %s refused by the publish gate: %s", run.run_id, "; ".join(verdict["refused"]))
    try:
        return registry.reject(conn, run, verdict, gates.reason(verdict), registry.now())
    except IntegrityError as exc:
        if "ck_runs_status" not in str(exc.orig):
            raise
        raise SchemaError("the runs table predates the publish gate: its check constraint ck_runs_status does not "
                          f"allow '{REJECTED}'. {status_check_fix(conn.dialect.name)}") from None


def _load_and_switch(conn: Connection, sink: Sink, run: RunInfo, rows: RunRows, stats: dict[str, int],
                     verdict: dict[str, Any], side: list) -> tuple[dict, str | None, dict[str, int]]:
    try:
        with conn.begin():
            phases = sink.load(conn, rows)
            start = perf_counter()
            sink.attach(conn, run.run_id)
            counts = keyed.load(conn, run.run_id, side)  # after attach: a re-run's attach drops the old rows
            superseded = registry.switch(conn, run, stats, registry.now(), verdict)
            if rows.titles is not None:
                sink.upsert_titles(conn, *rows.titles)
            phases["switch_s"] = perf_counter() - start
        return phases, superseded, counts
    except BaseException as exc:
        record_failure(conn, run.run_id, exc)
        if isinstance(exc, PublishError) or not isinstance(exc, Exception):
            raise
        raise PublishError(f"publishing run {run.run_id} failed, the previous run stays current: "
                           f"{type(exc).__name__}: {redact(str(exc))}") from exc


def record_failure(conn: Connection, run_id: str, exc: BaseException) -> None:
    """Mark the run failed at once; if even that fails the next publish finds it stale."""
    try:
        with conn.begin():
            registry.fail(conn, run_id, f"{type(exc).__name__}: {exc}", registry.now())
    except Exception:
        log.warning("could not mark run %s failed; the next publish will", run_id, exc_info=True)


def mark_failed(database_url: str | None, run_id: str, reason: str, *, engine: Engine | None = None) -> None:
    """Record that run ``run_id`` failed (e.g. in a stage before publishing) with ``reason``.
    A run that is already published keeps its status."""
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        sink_for(eng).prepare(conn)
        with conn.begin():
            ensure_schema(conn)
            registry.fail(conn, run_id, reason, registry.now())


def cleanup(database_url: str | None, *, keep_runs: int = 5, engine: Engine | None = None,
            collect_timeout_s: float = upkeep.COLLECT_TIMEOUT_S) -> dict[str, Any]:
    """What a publish does before and after loading, alone: fail and clear runs left loading by
    a crashed publisher, and prune old runs; also fail sharded runs still collecting
    ``collect_timeout_s`` seconds after they began to (their shards or finalize never came).
    Returns ``{"recovered": [...], "expired": [...], "pruned": [...], "prune_deferred": [...]}``."""
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        sink = sink_for(eng)
        with sink.locked(conn):
            recovered = upkeep.recover(conn, sink)
            expired = upkeep.expire_collections(conn, sink, collect_timeout_s)
            pruning = upkeep.prune(conn, sink, keep_runs)
    return {"recovered": recovered, "expired": expired, **pruning, "database": shown(eng.url)}


def current_run(database_url: str | None, *, engine: Engine | None = None) -> dict[str, Any] | None:
    """The current run's ``runs`` row as plain values, or None if nothing is published."""
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        return registry.current(conn)


def list_runs(database_url: str | None, *, limit: int = 20, statuses: tuple[str, ...] | None = None,
              engine: Engine | None = None) -> list[dict[str, Any]]:
    """The most recently created runs (of ``statuses``, default any), newest first."""
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        return registry.recent(conn, limit, statuses)
