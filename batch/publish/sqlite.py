"""The embedded SQLite sink: one ``WITHOUT ROWID`` table, rows inserted in the switch
transaction.

SQLite has a single writer anyway, so the rows and the switch share one transaction: readers
(in WAL mode) keep seeing the previous run until it commits, and a crash mid-load leaves
nothing behind, since SQLite rolls back the uncommitted transaction on the next open.

A sharded run's rows go straight into the table, one transaction per shard, hidden by the view
until ``topx finalize`` switches to the run. Shards on one machine take turns through a blocking
``flock``: SQLite's own busy wait gives up after seconds, a shard's insert can take longer.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import repeat
from time import perf_counter

import numpy as np
from sqlalchemy import delete, text
from sqlalchemy.engine import Connection, Engine

from batch.publish import keyed
from batch.publish.base import PublishLockedError, stats_of
from batch.publish.models import ROW_COLUMNS, recommendations
from batch.publish.rows import RunRows

_INSERT = "INSERT INTO recommendations (run_id, {}) VALUES ({})".format(
    ", ".join(ROW_COLUMNS), ", ".join("?" * (len(ROW_COLUMNS) + 1)))

# A refresh run's rows of every user it did not refresh: the source run's, copied in the database.
_CARRY = ("INSERT INTO recommendations (run_id, {0}) SELECT :run_id, {0} FROM recommendations r "
          "WHERE r.run_id = :source AND r.user_id NOT IN (SELECT user_id FROM temp.topx_refresh_users)"
          ).format(", ".join(ROW_COLUMNS))

_UPSERT_TITLE = ("INSERT INTO items (item_id, title) VALUES (?, ?) ON CONFLICT (item_id) "
                 "DO UPDATE SET title = excluded.title WHERE items.title IS NOT excluded.title")


class SqliteSink:
    """Rows of every run in one table clustered on (run_id, user_id, rank)."""

    name = "sqlite"

    def __init__(self, engine: Engine):
        database = engine.url.database
        self.path = None if database in (None, "", ":memory:") else database

    @contextmanager
    def locked(self, conn: Connection) -> Iterator[None]:
        """An exclusive ``flock`` on ``<database>.publish-lock``; the kernel drops it when the
        process dies, which SQLite's own locks cannot promise across transactions."""
        with self._flock("publish-lock", wait=False):
            yield

    @contextmanager
    def writing(self, conn: Connection) -> Iterator[None]:
        """A blocking exclusive ``flock`` on ``<database>.write-lock``: writers of collecting runs
        wait for each other instead of failing on SQLite's busy timeout."""
        with self._flock("write-lock", wait=True):
            yield

    @contextmanager
    def _flock(self, suffix: str, *, wait: bool) -> Iterator[None]:
        if self.path is None:  # a private in-memory database has no other writer
            yield
            return
        fd = os.open(f"{self.path}.{suffix}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise PublishLockedError(f"another process is publishing to {self.path}") from None
            yield
        finally:
            os.close(fd)

    def prepare(self, conn: Connection) -> None:
        # WAL lets dashboards read the old run while a new one loads (persistent per file).
        with conn.begin():
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")

    def load(self, conn: Connection, rows: RunRows) -> dict[str, float]:
        self.drop_run(conn, rows.run_id)  # a re-run replaces its rows, in this transaction
        return self.load_part(conn, rows)

    def load_part(self, conn: Connection, rows: RunRows) -> dict[str, float]:
        start = perf_counter()
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.executemany(_INSERT, _tuples(rows))
        finally:
            cursor.close()
        return {"insert_s": perf_counter() - start}

    def load_refresh(self, conn: Connection, rows: RunRows, source_run_id: str, users: np.ndarray) -> dict[str, float]:
        """The refreshed rows inserted, then the source run's other users' rows copied by one
        INSERT … SELECT; the refreshed users' ids go through a temporary table, created and
        dropped in this transaction."""
        phases = self.load(conn, rows)
        start = perf_counter()
        conn.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS topx_refresh_users (user_id TEXT PRIMARY KEY)")
        conn.exec_driver_sql("DELETE FROM temp.topx_refresh_users")
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.executemany("INSERT INTO temp.topx_refresh_users (user_id) VALUES (?)",
                               ((user,) for user in users.tolist()))
        finally:
            cursor.close()
        conn.execute(text(_CARRY), {"run_id": rows.run_id, "source": source_run_id})
        conn.exec_driver_sql("DROP TABLE temp.topx_refresh_users")
        phases["carry_s"] = perf_counter() - start
        return phases

    def open_collection(self, conn: Connection, run_id: str) -> None:
        """The table is the storage: only rows an earlier attempt left need to go."""
        self.drop_run(conn, run_id)

    def collected_stats(self, conn: Connection, run_id: str) -> dict[str, int]:
        return stats_of(conn, "recommendations", run_id)

    def seal(self, conn: Connection, run_id: str) -> dict[str, float]:
        """Nothing to finish: the primary key was kept up to date row by row."""
        return {}

    def discard_collection(self, conn: Connection, run_id: str) -> None:
        self.drop_run(conn, run_id)

    def attach(self, conn: Connection, run_id: str) -> None:
        """Nothing to do: the rows are already in the table, hidden until the switch commits."""

    def retire(self, conn: Connection, run_id: str) -> None:
        """Nothing to do: in WAL mode readers never wait for the DELETE of :meth:`drop_run`."""

    def drop_run(self, conn: Connection, run_id: str) -> None:
        conn.execute(delete(recommendations).where(recommendations.c.run_id == run_id))
        keyed.drop(conn, run_id)

    def upsert_titles(self, conn: Connection, item_ids: np.ndarray, titles: np.ndarray) -> None:
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.executemany(_UPSERT_TITLE, zip(item_ids.tolist(), titles.tolist(), strict=True))
        finally:
            cursor.close()


def _tuples(rows: RunRows) -> Iterator[tuple]:
    """Row tuples in ``_INSERT`` order, converted to Python values a chunk at a time."""
    for chunk in rows.chunks():
        probability = chunk.probability.astype(object)
        probability[np.isnan(chunk.probability)] = None  # NULL, not NaN, for "no probability"
        yield from zip(repeat(rows.run_id), rows.user_text[chunk.user].tolist(), chunk.rank.tolist(),
                       rows.item_text[chunk.item].tolist(), chunk.score.tolist(),
                       probability.tolist(), chunk.source.tolist())
