"""The PostgreSQL sink: one partition of ``recommendations`` per run, bulk loaded with COPY.

A run's rows go into a new, index-free table created in the publish transaction, by binary
``COPY ... FREEZE`` (no hint-bit writes on first read, no vacuum-freeze pass later), in
(user_id, rank) order; then its BRIN index is built in one scan and the table is attached as
the run's LIST partition in the same transaction that makes the run current. Until that
commits no other session can even see the table; a crash rolls all of it back. Dropping an old
run drops its partition.

Only one publisher may work on a database at a time: a session-level advisory lock, which the
server releases when the publisher's connection dies.

A sharded run's load table is created (and committed) when the run starts collecting; each shard
COPYs into it in its own transaction, side by side with the others and without the publisher
lock (no FREEZE then: the table is not new in that transaction), and ``topx finalize`` indexes,
analyses and attaches it in the switch transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter

import numpy as np
from psycopg2 import sql
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from batch.log import log
from batch.publish.base import PublishLockedError, stats_of
from batch.publish.models import BRIN_PAGES_PER_RANGE, ROW_COLUMNS
from batch.publish.pgcopy import Number, PrefetchReader, TextFields, copy_stream
from batch.publish.rows import RunRows

# pg_advisory_lock key: the first 8 bytes of sha1(b"topx.publish") as a signed bigint.
LOCK_KEY = int.from_bytes(hashlib.sha1(b"topx.publish").digest()[:8], "big", signed=True)
_PARENT = sql.Identifier("recommendations")
_CHECK = sql.Identifier("topx_load_run")


def partition_names(run_id: str) -> tuple[str, str]:
    """(load table, partition) names of a run: fixed-length, safe whatever the run id holds."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=16).hexdigest()
    return f"recommendations_load_{digest}", f"recommendations_{digest}"


class PostgresSink:
    """Rows of each run in its own partition of ``recommendations``."""

    name = "postgresql"
    lock_timeout = "60s"  # longest wait for readers to let go before dropping a partition
    copy_block = 1 << 22  # bytes handed to the server per write

    def __init__(self, engine: Engine):
        """Nothing to keep: every call gets the connection to work on."""

    @contextmanager
    def locked(self, conn: Connection) -> Iterator[None]:
        with conn.begin():
            got = conn.execute(select(func.pg_try_advisory_lock(LOCK_KEY))).scalar()
        if not got:
            raise PublishLockedError("another process is publishing to this database")
        try:
            yield
        finally:
            self._unlock(conn)

    def _unlock(self, conn: Connection) -> None:
        try:
            if conn.in_transaction():
                conn.rollback()
            with conn.begin():
                conn.execute(select(func.pg_advisory_unlock(LOCK_KEY)))
        except DBAPIError:
            # Closing the session releases its lock; never hand a locked session to the pool.
            log.debug("advisory unlock failed; discarding the connection", exc_info=True)
            conn.invalidate()

    def prepare(self, conn: Connection) -> None:
        """Nothing to set: PostgreSQL readers never block on the loading transaction."""

    def load(self, conn: Connection, rows: RunRows) -> dict[str, float]:
        conn.exec_driver_sql("SET LOCAL client_encoding = 'UTF8'")  # the COPY sends UTF-8 text
        with _cursor(conn) as cursor:
            stage = self._create_stage(cursor, rows.run_id)
            start = perf_counter()
            self._copy(cursor, stage, rows, freeze=True)
            copied = perf_counter()
            self._index(cursor, rows.run_id)
            return {"copy_s": copied - start, "index_s": perf_counter() - copied}

    def _create_stage(self, cursor, run_id: str) -> sql.Identifier:
        """The run's load table: the parent's columns, a CHECK that lets ATTACH skip its scan, and
        run_id filled by default (COPY leaves it out)."""
        stage, run = sql.Identifier(partition_names(run_id)[0]), sql.Literal(run_id)
        cursor.execute(sql.SQL("CREATE TABLE {} (LIKE {}, CONSTRAINT {} CHECK (run_id = {}))")
                       .format(stage, _PARENT, _CHECK, run))
        cursor.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN run_id SET DEFAULT {}").format(stage, run))
        self._give_to_parent_owner(cursor, stage)
        return stage

    @staticmethod
    def _index(cursor, run_id: str) -> None:
        """The parent's BRIN index, built here so ATTACH only links it; ANALYZE of user_id gives
        the planner the correlation that makes it choose that index at once. A small sample
        (3,000 rows) shows that correlation as well as the default 30,000 at a tenth of the
        cost; autovacuum analyses the whole partition later with the server's settings."""
        name = partition_names(run_id)[0]
        cursor.execute(sql.SQL("CREATE INDEX {} ON {} USING brin (user_id) WITH (pages_per_range = {})")
                       .format(sql.Identifier(f"{name}_user"), sql.Identifier(name), sql.Literal(BRIN_PAGES_PER_RANGE)))
        cursor.execute("SET LOCAL default_statistics_target = 10")
        cursor.execute(sql.SQL("ANALYZE {} (user_id)").format(sql.Identifier(name)))
        cursor.execute("RESET default_statistics_target")

    @staticmethod
    def _give_to_parent_owner(cursor, table: sql.Identifier) -> None:
        """Partitions belong to whoever owns ``recommendations`` (the writer role of
        sql/roles.sql), not to the login that loaded them, so any member of the writer role can
        drop them later: only an owner may."""
        cursor.execute("SELECT pg_get_userbyid(relowner), current_user FROM pg_class "
                       "WHERE oid = 'recommendations'::regclass")
        owner, user = cursor.fetchone()
        if owner != user:
            cursor.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(table, sql.Identifier(owner)))

    def _copy(self, cursor, stage: sql.Identifier, rows: RunRows, *, freeze: bool) -> None:
        fields = (TextFields.from_text(rows.user_text), Number(">i4"), TextFields.from_text(rows.item_text),
                  Number(">f4"), Number(">f4", nullable=True), Number(">i2"))
        blocks = ((c.user, c.rank, c.item, c.score, c.probability, c.source) for c in rows.chunks())
        self._copy_blocks(cursor, stage, ROW_COLUMNS, fields, blocks, freeze=freeze)

    def _copy_blocks(self, cursor, table: sql.Identifier, columns, fields, blocks, *, freeze: bool = True) -> None:
        """``freeze``: the table is new in this transaction, so rows can be stored frozen."""
        reader = PrefetchReader(copy_stream(fields, blocks))
        try:
            cursor.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary{})").format(
                table, sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", FREEZE" if freeze else "")), reader, size=self.copy_block)
        finally:
            reader.close()

    def attach(self, conn: Connection, run_id: str) -> None:
        stage, part = partition_names(run_id)
        self.drop_run(conn, run_id)  # a re-run replaces the run's previous partition
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                _PARENT, sql.Identifier(stage), sql.Literal(run_id)))
            cursor.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN run_id DROP DEFAULT, DROP CONSTRAINT {}")
                           .format(sql.Identifier(stage), _CHECK))
            cursor.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(stage), sql.Identifier(part)))
            cursor.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(f"{stage}_user"), sql.Identifier(f"{part}_user")))
        finally:
            cursor.close()

    def drop_run(self, conn: Connection, run_id: str) -> None:
        # Dropping a partition locks the whole table against readers: wait for running
        # queries a bounded time rather than queue every dashboard behind us indefinitely.
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{self.lock_timeout}'")
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{partition_names(run_id)[1]}"')

    @contextmanager
    def writing(self, conn: Connection) -> Iterator[None]:
        """Nothing to wait for: shards COPY into the run's load table side by side."""
        yield

    def open_collection(self, conn: Connection, run_id: str) -> None:
        """The run's load table, created and committed now, so every shard's COPY can reach it;
        it stays invisible to readers until :meth:`attach` makes it a partition."""
        self.discard_collection(conn, run_id)
        with _cursor(conn) as cursor:
            self._create_stage(cursor, run_id)

    def load_part(self, conn: Connection, rows: RunRows) -> dict[str, float]:
        # No FREEZE: the table was created in an earlier transaction (open_collection's).
        conn.exec_driver_sql("SET LOCAL client_encoding = 'UTF8'")
        start = perf_counter()
        with _cursor(conn) as cursor:
            self._copy(cursor, sql.Identifier(partition_names(rows.run_id)[0]), rows, freeze=False)
        return {"copy_s": perf_counter() - start}

    def collected_stats(self, conn: Connection, run_id: str) -> dict[str, int]:
        return stats_of(conn, f'"{partition_names(run_id)[0]}"', run_id)

    def seal(self, conn: Connection, run_id: str) -> dict[str, float]:
        start = perf_counter()
        with _cursor(conn) as cursor:
            self._index(cursor, run_id)
        return {"index_s": perf_counter() - start}

    def discard_collection(self, conn: Connection, run_id: str) -> None:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{self.lock_timeout}'")
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{partition_names(run_id)[0]}"')

    def upsert_titles(self, conn: Connection, item_ids: np.ndarray, titles: np.ndarray) -> None:
        """COPY the titles into a temporary table, then update the titles that changed and
        insert new items (an unchanged catalogue leaves ``items`` untouched). The publisher
        lock keeps other writers out between the two statements."""
        conn.exec_driver_sql('CREATE TEMPORARY TABLE topx_titles (item_id text COLLATE "C", title text) '
                             "ON COMMIT DROP")
        fields = (TextFields.from_text(item_ids), TextFields.from_text(titles.astype(str)))
        index = np.arange(len(item_ids))
        cursor = conn.connection.driver_connection.cursor()
        try:
            self._copy_blocks(cursor, sql.Identifier("topx_titles"), ("item_id", "title"), fields,
                              iter([(index, index)]))
        finally:
            cursor.close()
        # Not INSERT ... ON CONFLICT DO UPDATE: that locks (writes) every conflicting row.
        conn.exec_driver_sql(
            "UPDATE items SET title = t.title FROM topx_titles t "
            "WHERE items.item_id = t.item_id AND items.title IS DISTINCT FROM t.title")
        conn.exec_driver_sql(
            "INSERT INTO items (item_id, title) SELECT item_id, title FROM topx_titles t "
            "WHERE NOT EXISTS (SELECT FROM items i WHERE i.item_id = t.item_id)")


@contextmanager
def _cursor(conn: Connection) -> Iterator:
    """A psycopg2 cursor on the connection's current transaction."""
    cursor = conn.connection.driver_connection.cursor()
    try:
        yield cursor
    finally:
        cursor.close()
