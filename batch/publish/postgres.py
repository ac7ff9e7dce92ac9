"""The PostgreSQL sink: one partition of ``recommendations`` per run, bulk loaded with COPY.

A run's rows go into a new, index-free table created in the publish transaction, by binary
``COPY ... FREEZE`` (no hint-bit writes on first read, no vacuum-freeze pass later), in
(user_id, rank) order; then its BRIN index is built in one scan and the table is attached as
the run's LIST partition in the same transaction that makes the run current. Until that
commits no other session can even see the table; a crash rolls all of it back. Dropping an old
run drops its partition.

Only one publisher may work on a database at a time: it holds an EXCLUSIVE lock on the
``publish_lock`` table in a transaction of its own connection, open for the whole publish, which
the server releases when that connection dies. Only roles with UPDATE rights on that table (the
writer role of sql/roles.sql) can take it, so a read-only dashboard login cannot block publishing
(as it could hold an advisory lock: those need no rights at all).

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
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from batch.errors import PublishError
from batch.log import log
from batch.publish import keyed
from batch.publish.base import PublishLockedError, stats_of
from batch.publish.models import BRIN_PAGES_PER_RANGE, ROW_COLUMNS, publish_lock
from batch.publish.pgcopy import Number, PrefetchReader, TextFields, copy_stream
from batch.publish.rows import RunRows

_PARENT = sql.Identifier("recommendations")
_LOCK_TABLE = publish_lock.name
# SQLSTATEs: lock_not_available (NOWAIT), insufficient_privilege, undefined_table.
_LOCK_NOT_AVAILABLE, _INSUFFICIENT_PRIVILEGE, _UNDEFINED_TABLE = "55P03", "42501", "42P01"
_CHECK = sql.Identifier("topx_load_run")


def partition_names(run_id: str) -> tuple[str, str]:
    """(load table, partition) names of a run: fixed-length, safe whatever the run id holds."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=16).hexdigest()
    return f"recommendations_load_{digest}", f"recommendations_{digest}"


class PostgresSink:
    """Rows of each run in its own partition of ``recommendations``."""

    name = "postgresql"
    # Longest wait for a lock on ``recommendations`` (or a partition): a statement waiting for an
    # exclusive lock queues every new reader behind it, so give up soon and retry later.
    lock_timeout = "500ms"
    # Longest wait for a sharded run's load table, which only shard jobs use, never readers.
    collection_lock_timeout = "60s"
    copy_block = 1 << 22  # bytes handed to the server per write
    refresh_work_mem = "256MB"  # a refresh's sort of the run's rows (2M rows take about 200 MB)

    def __init__(self, engine: Engine):
        """``engine``: where the publisher lock's own connection comes from."""
        self.engine = engine

    @contextmanager
    def locked(self, conn: Connection) -> Iterator[None]:
        """The lock lives in a second connection's open transaction: ``conn`` commits several
        transactions while the lock must last."""
        holder = self.engine.connect()
        try:
            self._lock(holder)
            yield
        finally:
            _release(holder)

    def _lock(self, holder: Connection) -> None:
        for attempt in range(2):
            holder.begin()
            try:
                holder.exec_driver_sql(f"LOCK TABLE {_LOCK_TABLE} IN EXCLUSIVE MODE NOWAIT")
                # The holder idles in its transaction for the whole publish: a server-wide
                # idle_in_transaction_session_timeout must not end it (and the lock) midway.
                holder.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
                return
            except DBAPIError as exc:
                holder.rollback()
                code = getattr(exc.orig, "pgcode", None)
                if code == _LOCK_NOT_AVAILABLE:
                    raise PublishLockedError("another process is publishing to this database") from None
                if code == _INSUFFICIENT_PRIVILEGE:
                    raise PublishError(f"this login may not take the publisher lock (UPDATE on {_LOCK_TABLE}): "
                                       f"publish as a member of the writer role (sql/roles.sql)") from None
                if code != _UNDEFINED_TABLE or attempt:
                    raise
            self._create_lock_table(holder)

    @staticmethod
    def _create_lock_table(holder: Connection) -> None:
        """The lock table of a database made before it existed (or a new one), given to the owner of
        ``recommendations``, like every partition, so that every login of the writer role can lock it."""
        try:
            with holder.begin():
                publish_lock.create(holder, checkfirst=True)
                owner = holder.exec_driver_sql(
                    "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass('recommendations')"
                ).scalar()
                if owner is not None and owner != holder.exec_driver_sql("SELECT current_user").scalar():
                    holder.exec_driver_sql(f'ALTER TABLE {_LOCK_TABLE} OWNER TO "{owner}"')
        except (IntegrityError, ProgrammingError):
            log.debug("another publisher created %s meanwhile", _LOCK_TABLE, exc_info=True)

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

    def load_refresh(self, conn: Connection, rows: RunRows, source_run_id: str, users: np.ndarray) -> dict[str, float]:
        """The refreshed rows and users are COPYed into temporary tables, then one INSERT … SELECT
        fills the run's load table with the source run's other users' rows and the refreshed
        ones, in (user_id, rank) order as a COPY would (the BRIN index needs it), before it is
        indexed like any run's."""
        conn.exec_driver_sql("SET LOCAL client_encoding = 'UTF8'")
        with _cursor(conn) as cursor:
            stage = self._create_stage(cursor, rows.run_id)
            start = perf_counter()
            cursor.execute('CREATE TEMPORARY TABLE topx_refreshed (user_id text COLLATE "C", rank integer, '
                           'item_id text COLLATE "C", score real, probability real, source smallint) ON COMMIT DROP')
            self._copy(cursor, sql.Identifier("topx_refreshed"), rows, freeze=False)
            cursor.execute('CREATE TEMPORARY TABLE topx_refresh_users (user_id text COLLATE "C" PRIMARY KEY) '
                           'ON COMMIT DROP')
            self._copy_blocks(cursor, sql.Identifier("topx_refresh_users"), ("user_id",),
                              (TextFields.from_text(users),), iter([(np.arange(len(users)),)]), freeze=False)
            copied = perf_counter()
            # The ORDER BY sorts every row of the run: in memory, not in temporary files, when it fits.
            cursor.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(self.refresh_work_mem)))
            columns = sql.SQL(", ").join(map(sql.Identifier, ROW_COLUMNS))
            cursor.execute(sql.SQL(
                "INSERT INTO {stage} ({columns}) SELECT {columns} FROM ("
                "SELECT {columns} FROM recommendations r WHERE r.run_id = {source} AND NOT EXISTS "
                "(SELECT FROM topx_refresh_users u WHERE u.user_id = r.user_id) "
                "UNION ALL SELECT {columns} FROM topx_refreshed) t ORDER BY user_id, rank").format(
                    stage=stage, columns=columns, source=sql.Literal(source_run_id)))
            carried = perf_counter()
            self._index(cursor, rows.run_id)
            return {"copy_s": copied - start, "carry_s": carried - copied, "index_s": perf_counter() - carried}

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

    def retire(self, conn: Connection, run_id: str) -> None:
        """``DETACH PARTITION ... CONCURRENTLY``: new queries stop seeing the partition at once,
        and the detach waits for older transactions without holding a lock readers wait for
        (dropping an attached partition would lock all of ``recommendations``). If they outlast
        ``lock_timeout`` the partition stays "detach pending", and a later prune FINALIZEs it."""
        part = partition_names(run_id)[1]
        with conn.begin():
            pending = conn.exec_driver_sql(
                "SELECT inhdetachpending FROM pg_inherits WHERE inhparent = 'recommendations'::regclass "
                "AND inhrelid = to_regclass(%(part)s)", {"part": f'"{part}"'}).scalar()
        if pending is None:  # not a partition (any more): drop_run drops the table alone
            return
        detach = sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(
            _PARENT, sql.Identifier(part), sql.SQL("FINALIZE" if pending else "CONCURRENTLY"))
        with _autocommit(conn):
            conn.exec_driver_sql(f"SET lock_timeout = '{self.lock_timeout}'")
            try:
                conn.exec_driver_sql(detach.as_string(conn.connection.driver_connection))
            finally:
                conn.exec_driver_sql("RESET lock_timeout")

    def drop_run(self, conn: Connection, run_id: str) -> None:
        # Dropping an attached partition (a re-run replacing its rows, or a prune whose retire
        # found it detached already) locks it or the whole table against readers: wait briefly,
        # then fail (a lock timeout, a temporary failure) rather than queue dashboards behind us.
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{self.lock_timeout}'")
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{partition_names(run_id)[1]}"')
        keyed.drop(conn, run_id)

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
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{self.collection_lock_timeout}'")
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
def _autocommit(conn: Connection) -> Iterator[None]:
    """Statements on ``conn`` each commit alone (for those that refuse to run in a transaction),
    then back to the connection's isolation level."""
    level = conn.default_isolation_level
    conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with conn.begin():
            yield
    finally:
        conn.execution_options(isolation_level=level)


def _release(holder: Connection) -> None:
    """End the lock's transaction and return the connection; a connection that cannot roll back
    is discarded (closing the session releases the lock), never handed to the pool locked."""
    try:
        if holder.in_transaction():
            holder.rollback()
        holder.close()
    except DBAPIError:
        log.debug("could not release the publisher lock cleanly; discarding the connection", exc_info=True)
        holder.invalidate()
        holder.close()


@contextmanager
def _cursor(conn: Connection) -> Iterator:
    """A psycopg2 cursor on the connection's current transaction."""
    cursor = conn.connection.driver_connection.cursor()
    try:
        yield cursor
    finally:
        cursor.close()
