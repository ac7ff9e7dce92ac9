"""What every publisher does around its own run, holding the publisher lock: recover runs a
crashed publisher left ``loading``, fail sharded runs that stopped collecting long ago, and
prune old published runs. :func:`batch.publish.cleanup` runs all three alone."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from batch.log import log, redact
from batch.publish import registry, slots
from batch.publish.base import Sink
from batch.publish.migrate import ensure_schema
from batch.publish.models import COLLECTING

# How long a sharded run may wait for its shards and `topx finalize` before cleanup fails it.
COLLECT_TIMEOUT_S = 24 * 3600.0


def recover(conn: Connection, sink: Sink) -> list[str]:
    """Schema in place, runs left behind by a crashed publisher failed and cleared. A
    ``collecting`` run is not among them: its shard jobs, not a publisher, are loading it."""
    sink.prepare(conn)
    with conn.begin():
        ensure_schema(conn)
        stale = registry.stale_loads(conn)
        for run_id in stale:
            log.warning("run %s was left loading by a publisher that stopped; marking it failed", run_id)
            sink.drop_run(conn, run_id)
            registry.fail(conn, run_id, registry.STALE_REASON, registry.now())
    return stale


def prune(conn: Connection, sink: Sink, keep_runs: int) -> dict[str, list[str]]:
    """Delete the rows of published runs beyond the newest ``keep_runs``, oldest first, one run at
    a time, without making readers wait (see :meth:`Sink.retire`). When readers still use a run's
    rows, its prune is deferred: the run stays ``superseded``, the next publish or cleanup goes
    on from it, and the runs after it wait for that too.
    Returns ``{"pruned": [...], "prune_deferred": [...]}``."""
    with conn.begin():
        expired = registry.expired(conn, keep_runs)
    pruned: list[str] = []
    for position, run_id in enumerate(reversed(expired)):
        try:
            sink.retire(conn, run_id)
            with conn.begin():
                sink.drop_run(conn, run_id)
                registry.mark_pruned(conn, run_id)
        except DBAPIError as exc:  # e.g. lock_timeout: readers still use the run's rows
            deferred = list(reversed(expired))[position:]
            log.warning("pruning deferred to a later publish or cleanup for run(s) %s: %s", ", ".join(deferred),
                        redact(str(exc.orig or exc)).strip())
            return {"pruned": pruned, "prune_deferred": deferred}
        pruned.append(run_id)
    return {"pruned": pruned, "prune_deferred": []}


def expire_collections(conn: Connection, sink: Sink, timeout_s: float) -> list[str]:
    """Fail the sharded runs still ``collecting`` ``timeout_s`` seconds after they started to,
    and delete what their shards loaded; one run per transaction, like :func:`prune`."""
    with conn.begin():
        waiting = registry.collecting(conn)
        # run_shards is only read when a sharded run exists (it may not exist, or not be ours to read).
        old = slots.opened_before(conn, waiting, registry.now() - timedelta(seconds=timeout_s)) if waiting else []
    expired = []
    for run_id in old:
        try:
            if _expire(conn, sink, run_id, timeout_s):
                expired.append(run_id)
        except DBAPIError as exc:  # a shard still loading held the run's table past lock_timeout
            log.warning("could not fail run %s yet: %s", run_id, redact(str(exc.orig or exc)))
    return expired


def _expire(conn: Connection, sink: Sink, run_id: str, timeout_s: float) -> bool:
    with sink.writing(conn), conn.begin():
        if registry.hold(conn, run_id) != COLLECTING:  # finalized or failed meanwhile
            return False
        missing = slots.missing(slots.slots(conn, run_id, lock=True))
        reason = (f"not finalized within {timeout_s:g} s: " +
                  (f"shard(s) {slots.listed(missing)} never loaded" if missing else "topx finalize never ran"))
        log.warning("run %s: %s; marking it failed", run_id, reason)
        sink.discard_collection(conn, run_id)
        registry.fail(conn, run_id, reason, registry.now(), collecting=True)
    return True

