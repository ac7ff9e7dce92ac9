"""Item-keyed rows published with a run: ``similar_items`` and ``audiences`` (see
:mod:`batch.serve.similar`), and ``item_attributes`` (the item file's columns). Their rows are
checked and given external ids before the database is touched, loaded in the run's switch
transaction (after the sink has loaded and attached the users' lists) and deleted whenever the
sink deletes the run's rows. PostgreSQL takes them by binary COPY (:mod:`batch.publish.pgcopy`,
as the users' lists), SQLite through the driver's ``executemany``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, insert, literal, select
from sqlalchemy.engine import Connection

from batch.data.interactions import IdMap
from batch.errors import PublishError
from batch.lists import KeyedLists
from batch.publish.models import KEYED_TABLES
from batch.publish.pgcopy import Field, Number, PrefetchReader, TextFields, copy_stream
from batch.publish.rows import id_text

CHUNK_ROWS = 20_000
COPY_BLOCK = 1 << 22  # bytes handed to the server per write


@dataclass(frozen=True)
class KeyedRows:
    """One table's rows of one run: ``lists`` with the external id text of keys and values."""

    table: str
    lists: KeyedLists
    key_text: np.ndarray
    value_text: np.ndarray

    @classmethod
    def build(cls, table: str, lists: KeyedLists, keys: IdMap, values: IdMap) -> KeyedRows:
        """Check the lists (indices in range, finite scores, increasing ranks per key) and map
        ids. Raises :class:`PublishError`."""
        if table not in KEYED_TABLES:
            raise PublishError(f"no item-keyed table {table!r}; there are {', '.join(KEYED_TABLES)}")
        _check(table, lists, len(keys), len(values))
        return cls(table, lists, id_text(keys, "item"), id_text(values, "item" if table == "similar_items" else "user"))

    def __len__(self) -> int:
        return len(self.lists)

    def copy_parts(self, run_id: str) -> Iterator[tuple[tuple[Field, ...], Iterator[tuple[np.ndarray, ...]]]]:
        """One binary COPY of the table's columns (run_id, item_id, rank, value id, score): its
        fields and its blocks of columns, text columns as indices into each field's values."""
        fields = (TextFields.from_text(np.array([run_id])), TextFields.from_text(self.key_text), Number(">i4"),
                  TextFields.from_text(self.value_text), Number(">f4"))
        yield fields, ((np.zeros(len(part), np.int64), part.key, part.rank, part.value, part.score)
                       for part in self.lists.chunks(CHUNK_ROWS * 8))

    def records(self, run_id: str) -> Iterator[list[dict]]:
        """Row dicts for the table's insert, :data:`CHUNK_ROWS` at a time."""
        value_column = list(KEYED_TABLES[self.table].c)[3].name
        for part in self.lists.chunks(CHUNK_ROWS):
            yield [{"run_id": run_id, "item_id": k, "rank": r, value_column: v, "score": s}
                   for k, r, v, s in zip(self.key_text[part.key].tolist(), part.rank.tolist(),
                                         self.value_text[part.value].tolist(), part.score.tolist(), strict=True)]


@dataclass(frozen=True)
class AttributeRows:
    """The run's ``item_attributes`` rows: (item id text, column name, value text), one per item
    and item-file column with a non-empty value."""

    item_text: np.ndarray
    names: list[str]
    values: list[str]
    table: str = "item_attributes"

    @classmethod
    def build(cls, items: IdMap, attributes: dict[str, np.ndarray]) -> AttributeRows:
        """``attributes``: column name → values aligned with ``items`` (None or "" for none).
        Raises :class:`PublishError` when a column's length differs from the item map's."""
        keys, names, values = [], [], []
        text = id_text(items, "item")
        for name, column in attributes.items():
            column = np.asarray(column, dtype=object)
            if column.shape != (len(items),):
                raise PublishError(f"item_attributes: column {name!r} has {column.size} values for {len(items)} items")
            for index, value in enumerate(column.tolist()):
                if value is not None and str(value) != "" and value == value:  # value == value: not NaN
                    keys.append(index)
                    names.append(name)
                    values.append(str(value))
        return cls(text[np.asarray(keys, dtype=np.int64)], names, values)

    def __len__(self) -> int:
        return len(self.values)

    def copy_parts(self, run_id: str) -> Iterator[tuple[tuple[Field, ...], Iterator[tuple[np.ndarray, ...]]]]:
        """Binary COPYs of the table's columns (run_id, item_id, name, value), :data:`CHUNK_ROWS`
        rows each: a text field is laid out as wide as its longest value, so a long value widens
        only its own chunk."""
        run = TextFields.from_text(np.array([run_id]))
        for start in range(0, len(self), CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, len(self))
            names, name_index = np.unique(np.array(self.names[start:stop], dtype=str), return_inverse=True)
            rows = np.arange(stop - start)
            fields = (run, TextFields.from_text(self.item_text[start:stop]), TextFields.from_text(names),
                      TextFields.from_text(np.array(self.values[start:stop], dtype=str)))
            yield fields, iter([(np.zeros(len(rows), np.int64), rows, name_index, rows)])

    def records(self, run_id: str) -> Iterator[list[dict]]:
        """Row dicts for the table's insert, :data:`CHUNK_ROWS` at a time."""
        keys = self.item_text.tolist()
        for start in range(0, len(self), CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            yield [{"run_id": run_id, "item_id": k, "name": n, "value": v}
                   for k, n, v in zip(keys[start:stop], self.names[start:stop], self.values[start:stop], strict=True)]


def _check(table: str, lists: KeyedLists, n_keys: int, n_values: int) -> None:
    if not len(lists):
        return
    if lists.key.min() < 0 or lists.key.max() >= n_keys or lists.value.min() < 0 or lists.value.max() >= n_values:
        raise PublishError(f"{table}: rows name indices outside the id maps")
    if not np.all(np.isfinite(lists.score)):
        raise PublishError(f"{table}: rows hold non-finite scores (NaN or infinity)")
    same = lists.key[1:] == lists.key[:-1]
    if np.any(lists.rank[1:][same] <= lists.rank[:-1][same]):
        raise PublishError(f"{table}: ranks must increase within each item's list")


def rows_for(items: IdMap, users: IdMap | None, similar: KeyedLists | None, audiences: KeyedLists | None,
             attributes: dict[str, np.ndarray] | None = None) -> list[KeyedRows | AttributeRows]:
    """The checked rows of a run's similar items, audiences and item attributes (each
    optional); ``users`` is needed only with audiences."""
    rows: list = [KeyedRows.build("similar_items", similar, items, items)] if similar is not None else []
    if attributes:
        rows.append(AttributeRows.build(items, attributes))
    if audiences is not None:
        if users is None:
            raise PublishError("audiences need the user id map")
        rows.append(KeyedRows.build("audiences", audiences, items, users))
    return rows


def load(conn: Connection, run_id: str, rows: list[KeyedRows | AttributeRows]) -> dict[str, int]:
    """Replace the run's rows of each table in ``rows`` (in the caller's transaction). Returns
    the rows inserted per table."""
    counts = {}
    for part in rows:
        table = KEYED_TABLES[part.table]
        conn.execute(delete(table).where(table.c.run_id == run_id))
        if conn.dialect.name == "sqlite":
            _sqlite_insert(conn, table, part.records(run_id))
        else:
            _postgres_copy(conn, table, part.copy_parts(run_id))
        counts[part.table] = len(part)
    return counts


def _postgres_copy(conn: Connection, table, parts: Iterator[tuple[tuple[Field, ...], Iterator]]) -> None:
    """Each part by one binary ``COPY … FROM STDIN``, encoded on a thread while the server
    parses (as the users' lists are loaded): 590,000 similar items took 3-6 s, against 30-37 s
    as an ``executemany`` of SQLAlchemy's parameter dicts (2-core machine under load)."""
    from psycopg2 import sql

    conn.exec_driver_sql("SET LOCAL client_encoding = 'UTF8'")  # the COPY sends UTF-8 text
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(column.name) for column in table.c))
    cursor = conn.connection.driver_connection.cursor()
    try:
        for fields, blocks in parts:
            reader = PrefetchReader(copy_stream(fields, blocks))
            try:
                cursor.copy_expert(statement, reader, size=COPY_BLOCK)
            finally:
                reader.close()
    finally:
        cursor.close()


def _sqlite_insert(conn: Connection, table, chunks: Iterator[list[dict]]) -> None:
    """The rows through the driver's own ``executemany`` with plain tuples: SQLAlchemy's per-row
    parameter processing cost more than SQLite's inserts (about 18 s of publish for 59,000
    items' similar items and audiences)."""
    names = [column.name for column in table.c]
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    cursor = conn.connection.driver_connection.cursor()
    try:
        for records in chunks:
            cursor.executemany(sql, [tuple(record[name] for name in names) for record in records])
    finally:
        cursor.close()


def drop(conn: Connection, run_id: str) -> None:
    """Delete every item-keyed row of ``run_id`` (in the caller's transaction)."""
    for table in KEYED_TABLES.values():
        conn.execute(delete(table).where(table.c.run_id == run_id))


def carry(conn: Connection, run_id: str, source_run_id: str) -> dict[str, int]:
    """Replace the run's rows of every item-keyed table by copies of ``source_run_id``'s, inside
    the database (INSERT … SELECT, in the caller's transaction): a refresh run keeps its source
    run's similar items, audiences and item attributes. Returns the rows copied per table."""
    counts = {}
    for name, table in KEYED_TABLES.items():
        conn.execute(delete(table).where(table.c.run_id == run_id))
        columns = [column for column in table.c if column.name != "run_id"]
        rows = select(literal(run_id, table.c.run_id.type).label("run_id"), *columns).where(
            table.c.run_id == source_run_id)
        counts[name] = conn.execute(insert(table).from_select(["run_id", *(c.name for c in columns)], rows)).rowcount
    return counts
