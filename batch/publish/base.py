"""The sink contract: how one database kind stores a run's rows. Sinks are siblings
(:mod:`.sqlite`, :mod:`.postgres`); :func:`sink_for` is the one place that picks one.

The publisher (:mod:`.publisher`, and :mod:`.collect` for sharded runs) owns the run
bookkeeping and the transactions; a sink only moves rows. Every method except
:meth:`Sink.locked` and :meth:`Sink.writing` runs inside a transaction the caller began on
``conn``, so the caller decides what commits together.

A sharded run's rows arrive in parts, through the wider :class:`CollectingSink`:
:meth:`~CollectingSink.open_collection` once, :meth:`~CollectingSink.load_part` per shard
(possibly side by side), then :meth:`~CollectingSink.seal` and :meth:`Sink.attach` in the
switch transaction, or :meth:`~CollectingSink.discard_collection` when the run fails.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from batch.errors import PublishError, TransientError
from batch.lists import SOURCE_POPULARITY
from batch.publish.rows import RunRows

# The counts `runs` stores (see RunRows.stats), computed over a table holding one run's rows. Per-user
# and per-item GROUP BYs rather than COUNT(DISTINCT ...), which PostgreSQL answers by sorting every
# row once per count: about 5 s instead of under 1 s for 2M rows.
_STATS = ("SELECT COALESCE(SUM(n), 0), COUNT(*), COALESCE(SUM(fallback), 0), "
          "(SELECT COUNT(*) FROM (SELECT item_id FROM {table} WHERE run_id = :run_id GROUP BY item_id) i) "
          "FROM (SELECT user_id, COUNT(*) AS n, MAX(CASE WHEN source = {fallback} THEN 1 ELSE 0 END) AS fallback "
          "FROM {table} WHERE run_id = :run_id GROUP BY user_id) u")


class PublishLockedError(PublishError, TransientError):
    """Another process is publishing to the same database right now. Temporary: the same job
    can publish once the other one is done, so it exits with 75 and AWS Batch retries it."""


class Sink(Protocol):
    """Row storage of one database kind."""

    name: str

    def locked(self, conn: Connection) -> AbstractContextManager[None]:
        """Hold the database's publisher lock, or raise :class:`PublishLockedError`.

        The lock dies with the process, so a run found ``loading`` while holding it belongs to
        a publisher that crashed."""

    def prepare(self, conn: Connection) -> None:
        """Per-database settings needed before the schema is created (outside a transaction)."""

    def load(self, conn: Connection, rows: RunRows) -> dict[str, float]:
        """Write the run's rows where the view cannot see them yet, replacing any earlier rows
        of the same run id on commit. Returns seconds per phase."""

    def attach(self, conn: Connection, run_id: str) -> None:
        """Make the loaded rows the stored rows of ``run_id`` (after :meth:`load`, same
        transaction)."""

    def retire(self, conn: Connection, run_id: str) -> None:
        """Outside a transaction: take a published run's rows out of readers' way before
        :meth:`drop_run` deletes them, so that deleting never makes a reader wait. Raises
        :class:`~sqlalchemy.exc.DBAPIError` (a lock timeout) while readers still use them."""

    def drop_run(self, conn: Connection, run_id: str) -> None:
        """Delete every stored row of ``run_id``."""

    def upsert_titles(self, conn: Connection, item_ids: np.ndarray, titles: np.ndarray) -> None:
        """Insert or update the titles of the given items."""

    def load_refresh(self, conn: Connection, rows: RunRows, source_run_id: str, users: np.ndarray) -> dict[str, float]:
        """Like :meth:`load`, for a refresh run: ``rows`` (the refreshed users' lists) plus every
        stored row of ``source_run_id`` whose user is not among ``users`` (unicode array of the
        refreshed users' ids, those with or without a new list), copied inside the database
        (INSERT … SELECT). Returns seconds per phase."""

    def collected_stats(self, conn: Connection, run_id: str) -> dict[str, int]:
        """``RunRows.stats()`` of every row loaded so far for the run (before :meth:`attach`),
        less ``n_items``."""


class CollectingSink(Sink, Protocol):
    """A sink that also collects a sharded run's rows part by part (:mod:`.collect`)."""

    def writing(self, conn: Connection) -> AbstractContextManager[None]:
        """Wait for, then hold, the right to write a collecting run's rows where the database
        takes one writer at a time; a no-op where writers work side by side."""

    def open_collection(self, conn: Connection, run_id: str) -> None:
        """Empty storage for a sharded run's rows, replacing any an earlier attempt left."""

    def load_part(self, conn: Connection, rows: RunRows) -> dict[str, float]:
        """Add one shard's rows (users no other shard has) to a collecting run's storage."""

    def seal(self, conn: Connection, run_id: str) -> dict[str, float]:
        """Finish a collecting run's storage so :meth:`attach` can take it. Seconds per phase."""

    def discard_collection(self, conn: Connection, run_id: str) -> None:
        """Delete every row collected for the run, and its storage."""


def stats_of(conn: Connection, table: str, run_id: str) -> dict[str, int]:
    """Counts of one run's rows in ``table`` (an SQL-quoted name): n_rows, n_users,
    n_items_recommended, n_fallback_users."""
    sql = text(_STATS.format(fallback=int(SOURCE_POPULARITY), table=table))
    n_rows, n_users, n_fallback, n_items = (int(v) for v in conn.execute(sql, {"run_id": run_id}).one())
    return {"n_rows": n_rows, "n_users": n_users, "n_items_recommended": n_items, "n_fallback_users": n_fallback}


def sink_for(engine: Engine) -> CollectingSink:
    """The sink for the engine's database kind (every kind collects sharded runs too)."""
    name = engine.dialect.name
    if name == "sqlite":
        from batch.publish.sqlite import SqliteSink

        return SqliteSink(engine)
    if name == "postgresql":
        if engine.dialect.driver != "psycopg2":  # COPY goes through psycopg2's copy_expert
            raise PublishError(f"publishing to PostgreSQL needs the psycopg2 driver (postgresql:// or "
                               f"postgresql+psycopg2:// URLs), not {engine.dialect.driver}")
        from batch.publish.postgres import PostgresSink

        return PostgresSink(engine)
    raise PublishError(f"cannot publish to a {name} database: use SQLite or PostgreSQL")
