"""Publishing a sharded run: its rows arrive from several jobs, and it becomes current only when
all of them arrived.

::

    open_collection   (topx run --shards N)  run `collecting`, N empty slots, empty storage
    load_shard        (topx shard, × N)      one shard's rows + its slot marked loaded, one transaction
    finalize_run      (topx finalize)        every slot loaded? switch to the run : fail it, drop its rows

A shard's rows and its slot's marker commit together (luigi's marker row), so a shard killed
mid-load leaves nothing and its retry loads it whole, and a shard run twice loads once. Shards
never take the publisher lock: they load side by side, and beside any publisher, which leaves
``collecting`` runs alone. Finalize takes the publisher lock like any publish; the run stays
``collecting`` on an unexpected error, so finalize can be retried, and fails for good only when a
shard is missing (or after ``topx cleanup``'s timeout).
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from batch.config import GateConfig
from batch.data.interactions import IdMap
from batch.errors import ConfigError, PublishError
from batch.lists import KeyedLists, TopLists
from batch.log import log
from batch.publish import gate as gates
from batch.publish import keyed, registry, slots, upkeep
from batch.publish.base import CollectingSink, Sink, sink_for
from batch.publish.connect import engine_scope, session, shown
from batch.publish.migrate import ensure_schema
from batch.publish.models import (
    COLLECTING,
    FAILED,
    PUBLISHED,
    REJECTED,
    STATUSES,
    create_shard_schema,
)
from batch.publish.publisher import DEFAULT_CHUNK_ROWS, reject
from batch.publish.registry import RunInfo
from batch.publish.rows import RunRows, titled_items

# Pending or loaded: what a shard job finds before it computes anything.
PENDING, LOADED = "pending", "loaded"


class IncompleteRunError(PublishError):
    """A sharded run was finalized with shards missing: it failed, the previous run stays current."""


def open_collection(database_url: str | None, run: RunInfo, shards: int, *,
                    engine: Engine | None = None) -> dict[str, Any]:
    """Register the run as ``collecting`` with ``shards`` slots and empty storage for its rows.

    Idempotent: a run already collecting with as many shards is left as it is (its loaded shards
    stay loaded). A run that failed before starts collecting afresh. Raises
    :class:`PublishError` for a run that is published or being published whole."""
    if shards < 1:
        raise ConfigError(f"a sharded run needs at least 1 shard; got {shards}")
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        sink = sink_for(eng)
        _schema(conn, sink)
        with sink.writing(conn), conn.begin():
            status = _collect(conn, run, shards)
            if status in (None, FAILED, REJECTED):
                slots.open_slots(conn, run.run_id, shards, registry.now())
                sink.open_collection(conn, run.run_id)
    log.info("run %s is collecting %d shards", run.run_id, shards)
    return {"run_id": run.run_id, "status": COLLECTING, "shards": shards, "reopened": status in (FAILED, REJECTED),
            "database": shown(eng.url), "sink": sink.name}


def _schema(conn: Connection, sink: Sink) -> None:
    sink.prepare(conn)
    with conn.begin():
        ensure_schema(conn)
        create_shard_schema(conn)


def _collect(conn: Connection, run: RunInfo, shards: int) -> str | None:
    try:
        status = registry.collect(conn, run, registry.now())
    except IntegrityError as exc:
        if "ck_runs_status" not in str(exc.orig):
            raise
        allowed = ", ".join(f"'{name}'" for name in STATUSES)
        raise PublishError(f"the runs table predates sharded runs: its check constraint ck_runs_status does not allow "
                           f"'{COLLECTING}'. As the table's owner, run: ALTER TABLE runs DROP CONSTRAINT "
                           f"ck_runs_status, ADD CONSTRAINT ck_runs_status CHECK (status IN ({allowed})) "
                           f"(SQLite cannot alter a constraint: start a new database file)") from None
    if status == COLLECTING:
        expected = len(slots.slots(conn, run.run_id))
        if expected != shards:
            raise ConfigError(f"run {run.run_id} is already collecting {expected} shards, not {shards}")
    elif status not in (None, FAILED, REJECTED):
        raise PublishError(f"run {run.run_id} is {status}: a sharded run cannot reuse it; start a new run")
    return status


def shard_state(database_url: str | None, run_id: str, shard: int, *, engine: Engine | None = None) -> str:
    """:data:`LOADED` if the shard's rows are stored, :data:`PENDING` if they are still
    expected. Raises :class:`ConfigError` for a shard the run does not expect and
    :class:`PublishError` for a run that is not sharded or no longer collecting."""
    with engine_scope(database_url, engine) as eng, session(eng) as conn, conn.begin():
        if not inspect(conn).has_table("run_shards"):
            raise PublishError(f"run {run_id} is not a sharded run: no sharded run was ever started in "
                               f"{shown(eng.url)} (topx run --shards N)")
        return _state(conn, run_id, shard)


def _state(conn: Connection, run_id: str, shard: int) -> str:
    found = slots.slots(conn, run_id)
    if not found:
        raise PublishError(f"run {run_id} is not a sharded run (no shard slots): start it with topx run --shards N")
    if not 0 <= shard < len(found):
        raise ConfigError(f"run {run_id} expects shards 0 to {len(found) - 1}; there is no shard {shard}")
    if found[shard].loaded_at is not None:
        return LOADED
    status = registry.status(conn, run_id)
    if status != COLLECTING:
        raise PublishError(f"run {run_id} is {status}, no longer collecting: shard {shard} is not wanted")
    return PENDING


def load_shard(database_url: str | None, run_id: str, shard: int, lists: TopLists, users: IdMap, items: IdMap, *,
               engine: Engine | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict[str, Any]:
    """Store shard ``shard``'s ``lists`` in collecting run ``run_id`` and mark its slot loaded,
    in one transaction. A shard already loaded is left alone (``loaded`` False in the summary).
    ``users``/``items`` map the lists' internal indices to external ids, as in publish_run."""
    rows = RunRows.build(run_id, lists, users, items, chunk_rows=chunk_rows)
    stats = rows.stats()
    start = perf_counter()
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        sink = sink_for(eng)
        with sink.writing(conn), conn.begin():
            # The marker first: it locks the slot before a row is written (see slots.claim).
            loaded = slots.claim(conn, run_id, shard, len(rows), stats["n_users"], registry.now())
            if loaded:
                _still_collecting(conn, run_id, shard)
                phases = sink.load_part(conn, rows)
            else:
                phases = {}
                _state(conn, run_id, shard)  # loaded by an earlier attempt, or raises why not
        seconds = perf_counter() - start
    log.info("run %s shard %d: %s", run_id, shard, f"{len(rows)} rows in {seconds:.1f} s" if loaded else
             "already loaded, nothing to do")
    return {"run_id": run_id, "shard": shard, "loaded": loaded, "rows": len(rows) if loaded else 0,
            "users": stats["n_users"] if loaded else 0, "seconds": round(seconds, 3),
            "phases": {k: round(v, 3) for k, v in phases.items()},
            "database": shown(eng.url), "sink": sink.name}


def _still_collecting(conn: Connection, run_id: str, shard: int) -> None:
    """The run must still be collecting now that we hold the slot: finalize or cleanup may have
    failed it before we got it (they wait for slots held, so it cannot change after). Raising
    rolls the marker back."""
    status = registry.status(conn, run_id)
    if status != COLLECTING:
        raise PublishError(f"run {run_id} is {status}, no longer collecting: shard {shard} is not wanted")


def finalize_run(database_url: str | None, run: RunInfo, items: IdMap, *, item_titles=None, keep_runs: int = 5,
                 engine: Engine | None = None, collect_timeout_s: float = upkeep.COLLECT_TIMEOUT_S,
                 gate: GateConfig | None = None, users: IdMap | None = None, similar: KeyedLists | None = None,
                 audiences: KeyedLists | None = None, item_attributes: dict | None = None) -> dict[str, Any]:
    """Make collecting run ``run.run_id`` current if every shard loaded: its storage is finished
    and attached, titles upserted and the previous run superseded, in one transaction; then, as
    ``topx cleanup`` does, other runs collecting for over ``collect_timeout_s`` seconds are failed
    and old runs pruned. A run already published is left as it is. ``similar`` / ``audiences``
    (the latter with ``users``): the run's item-keyed lists, and ``item_attributes`` (the item
    file's columns, name → values aligned with ``items``), inserted in the switch transaction.

    Raises :class:`IncompleteRunError` when a shard is missing, after failing the run and
    deleting its rows (the previous run stays current and complete);
    :class:`~.gate.GateRefusedError` when the publish ``gate`` (default settings when None)
    refuses the complete run, after recording it as ``rejected`` and deleting its rows; and
    :class:`PublishError` when the switch fails otherwise (the run stays collecting: finalize
    can be retried)."""
    if keep_runs < 1:
        raise PublishError(f"keep_runs must be ≥ 1; got {keep_runs}")
    titles = titled_items(items, item_titles)
    side = keyed.rows_for(items, users, similar, audiences, item_attributes)
    start = perf_counter()
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        sink = sink_for(eng)
        with sink.locked(conn):
            recovered = upkeep.recover(conn, sink)
            with sink.writing(conn):
                outcome = _switch_or_fail(conn, sink, run, len(items), titles, gate or GateConfig(), side)
            # After the switch: this run, however long it collected, is no longer collecting.
            expired = upkeep.expire_collections(conn, sink, collect_timeout_s)
            pruning = upkeep.prune(conn, sink, keep_runs)
        seconds = perf_counter() - start
    log.info("finalized run %s: %s in %.1f s", run.run_id, outcome.get("status"), seconds)
    return {"run_id": run.run_id, **outcome, "seconds": round(seconds, 3), **pruning, "recovered": recovered,
            "expired": expired, "database": shown(eng.url), "sink": sink.name}


def _switch_or_fail(conn: Connection, sink: CollectingSink, run: RunInfo, n_items: int, titles,
                    gate: GateConfig, side: list) -> dict[str, Any]:
    with conn.begin():
        status = registry.hold(conn, run.run_id)
        if status in PUBLISHED:
            return {"status": status, "already_published": True}
        if status != COLLECTING:
            raise PublishError(f"run {run.run_id} is {status or 'not registered'}, not collecting: nothing to finalize")
        found = slots.slots(conn, run.run_id, lock=True)  # waits for shards loading now
        stats = sink.collected_stats(conn, run.run_id)
        reason = _incomplete(found, stats)
        if reason is None:
            candidate = gates.Candidate(run.run_id, run.metrics, stats["n_rows"], stats["n_users"],
                                        run.counts.get("users"))
            verdict = gates.judge(gate, candidate, registry.current(conn))
            if verdict["passed"]:
                return _switch(conn, sink, run, {**stats, "n_items": n_items}, titles, verdict, side)
            sink.discard_collection(conn, run.run_id)
            reject(conn, run, verdict)
        else:
            sink.discard_collection(conn, run.run_id)
            registry.fail(conn, run.run_id, reason, registry.now(), collecting=True)
    if reason is None:
        raise gates.refusal(run.run_id, verdict)
    log.warning("run %s failed: %s", run.run_id, reason)
    raise IncompleteRunError(f"run {run.run_id} was not published and is now failed, the previous run stays "
                             f"current: {reason}")


def _incomplete(found: list[slots.Slot], stats: dict[str, int]) -> str | None:
    """Why the collected rows cannot be published, or None."""
    missing = slots.missing(found)
    if missing:
        return f"shard(s) {slots.listed(missing)} of {len(found)} never loaded"
    expected = sum(slot.n_rows for slot in found)
    if stats["n_rows"] != expected:  # a marker without its rows: must never happen, never publish it
        return f"the shards' markers count {expected} rows but {stats['n_rows']} are stored"
    return None


def _switch(conn: Connection, sink: CollectingSink, run: RunInfo, stats: dict[str, int], titles,
            verdict: dict[str, Any], side: list) -> dict[str, Any]:
    phases = sink.seal(conn, run.run_id)
    start = perf_counter()
    sink.attach(conn, run.run_id)
    counts = keyed.load(conn, run.run_id, side)
    superseded = registry.switch(conn, run, stats, registry.now(), verdict)
    if titles is not None:
        sink.upsert_titles(conn, *titles)
    phases["switch_s"] = perf_counter() - start
    return {"status": "current", "already_published": False, "rows": stats["n_rows"], "users": stats["n_users"],
            "superseded": superseded, **counts, "phases": {k: round(v, 3) for k, v in phases.items()},
            "gate": verdict}

