"""The published database: tables ``runs``, ``recommendations``, ``items``, ``similar_items``,
``audiences``, ``item_attributes`` and the views ``current_recommendations``,
``current_similar_items``, ``current_audiences`` and ``current_item_attributes``, as SQLAlchemy
Core models.

``sql/schema.sql`` is generated from these models, never edited by hand::

    topx schema --out sql/schema.sql        # or: schema_sql() in Python

A test compiles the models again and compares, and applies the file to a real PostgreSQL
database to check it builds the same tables, indexes and view as :func:`create_schema`.

Design, and why:

* External ids are ``TEXT`` so integer and text ids both work. On PostgreSQL every id column
  uses ``COLLATE "C"``: ids are identifiers, byte order is all anyone needs (it is also numpy's
  and SQLite's order), and comparing and sorting them is several times cheaper than with a
  linguistic collation.
* On PostgreSQL ``recommendations`` is LIST-partitioned by ``run_id``: each run is loaded
  into its own new table, indexed, then attached in the switch transaction; dropping an old run
  is a catalogue operation instead of a 2M-row DELETE. A partition is written once, in
  (user_id, rank) order, and never changes, so a BRIN index on ``user_id`` finds a user's list
  in under a millisecond for a fraction of a B-tree's cost (measured on 2M rows: a primary-key
  B-tree took 234 MB of WAL against 127 MB and 0.8 CPU-s to build against 0.3, and was as big
  as the table). Uniqueness of (run_id, user_id, rank) is checked by the publisher instead.
  SQLite keeps one ``WITHOUT ROWID`` table clustered on that primary key.
* There is no foreign key from ``recommendations`` to ``runs``: attaching a partition would
  re-check every row against ``runs``. The publisher is the only writer and keeps them paired.
* ``publish_lock`` holds no rows: PostgreSQL publishers lock it to work one at a time.
* ``alembic_version`` records the schema's revision (:data:`SCHEMA_REVISION`; migrations in
  :mod:`batch.publish.migrate`): ``schema.sql`` stamps it, every publish checks it.
* At most one run is ``current`` (a unique partial index enforces it); the view shows that
  run's rows, so switching runs is one ``UPDATE runs`` committed together with the new rows.
* A sharded run (``topx run --shards N``) is ``collecting`` while its N shard jobs load their
  rows; ``run_shards`` holds one slot per expected shard, marked loaded in the transaction that
  holds that shard's rows. It has its own metadata (:data:`shard_metadata`, DDL in
  ``sql/run_shards.sql`` from :func:`shard_schema_sql`) and is created by the first sharded run
  only, so databases that never shard keep exactly the tables above.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    REAL,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    create_mock_engine,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateView

from batch.errors import SchemaError

# Run states. A run is `loading` from registration until its switch transaction commits (or it
# fails); exactly one published run is `current`, older published ones are `superseded` until
# pruned (rows deleted, history row kept). A sharded run is `collecting` until it is finalized.
LOADING, CURRENT, SUPERSEDED, FAILED, PRUNED = "loading", "current", "superseded", "failed", "pruned"
COLLECTING = "collecting"
# Refused by the publish gate: kept (with the verdict in `gate`), never made current.
REJECTED = "rejected"
STATUSES = (LOADING, CURRENT, SUPERSEDED, FAILED, PRUNED, COLLECTING, REJECTED)
PUBLISHED = (CURRENT, SUPERSEDED)

Id = Text().with_variant(Text(collation="C"), "postgresql")
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)

metadata = MetaData()
DRIVERS = {"postgresql": "postgresql+psycopg2"}  # the driver topx ships for each dialect

runs = Table(
    "runs", metadata,
    Column("id", Id, primary_key=True),
    Column("status", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("started_at", Timestamp),
    Column("finished_at", Timestamp),
    Column("published_at", Timestamp),
    Column("model_location", Text),
    Column("config", Json),
    Column("metrics", Json),
    Column("counts", Json),
    Column("n_users", BigInteger),
    Column("n_items", BigInteger),
    Column("n_items_recommended", BigInteger),
    Column("n_fallback_users", BigInteger),
    Column("n_rows", BigInteger),
    Column("error", Text),
    Column("gate", Json),
    CheckConstraint("status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES)), name="ck_runs_status"),
)
Index("uq_runs_one_current", runs.c.status, unique=True,
      postgresql_where=runs.c.status == CURRENT, sqlite_where=runs.c.status == CURRENT)

items = Table(
    "items", metadata,
    Column("item_id", Id, primary_key=True),
    Column("title", Text),
)

recommendations = Table(
    "recommendations", metadata,
    Column("run_id", Id, nullable=False),
    Column("user_id", Id, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("item_id", Id, nullable=False),
    Column("score", REAL, nullable=False),
    Column("probability", REAL),
    Column("source", SmallInteger, nullable=False),
    PrimaryKeyConstraint("run_id", "user_id", "rank", name="pk_recommendations").ddl_if(dialect="sqlite"),
    postgresql_partition_by="LIST (run_id)",
    sqlite_with_rowid=False,
)
# The publishers' mutex on PostgreSQL: a publisher holds an EXCLUSIVE lock on this table (it
# never holds rows) for as long as it works. Unlike an advisory lock, which any role may take,
# LOCK TABLE needs UPDATE rights here, which sql/roles.sql gives the writer role only, so a
# read-only login cannot block publishing. SQLite publishers take a file lock instead.
publish_lock = Table(
    "publish_lock", metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
)

# Alembic's own table, as Alembic makes it, so that schema.sql can record the revision it builds.
SCHEMA_REVISION = "0002"  # the newest migration's revision (a test checks they agree)
alembic_version = Table(
    "alembic_version", metadata,
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)

# Heap pages per BRIN range: ~120 rows a page, so a user lookup reads about 2,000 rows.
BRIN_PAGES_PER_RANGE = 16
Index("brin_recommendations_user", recommendations.c.user_id, postgresql_using="brin",
      postgresql_with={"pages_per_range": BRIN_PAGES_PER_RANGE}).ddl_if(dialect="postgresql")

# Columns of `recommendations` in COPY / INSERT order after run_id.
ROW_COLUMNS = ("user_id", "rank", "item_id", "score", "probability", "source")

_current_id = select(runs.c.id).where(runs.c.status == CURRENT).scalar_subquery()
_view = CreateView(
    select(recommendations.c.user_id, recommendations.c.rank, recommendations.c.item_id,
           recommendations.c.score, recommendations.c.probability, recommendations.c.source,
           items.c.title, recommendations.c.run_id)
    .select_from(recommendations.outerjoin(items, items.c.item_id == recommendations.c.item_id))
    .where(recommendations.c.run_id == _current_id),
    "current_recommendations",
    metadata=metadata,
)
current_recommendations = _view.table

# Item-keyed lists published with a run (batch.serve.similar): similar items per item and each
# listed item's audience. They are items × x rows, not users × x, so a plain table per kind serves
# them on both databases: rows are inserted in the switch transaction and deleted with their run
# (readers never wait for a DELETE: SQLite in WAL mode and PostgreSQL's MVCC both keep the old
# rows visible to them).
similar_items = Table(
    "similar_items", metadata,
    Column("run_id", Id, nullable=False),
    Column("item_id", Id, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("similar_item_id", Id, nullable=False),
    Column("score", REAL, nullable=False),
    PrimaryKeyConstraint("run_id", "item_id", "rank", name="pk_similar_items"),
    sqlite_with_rowid=False,
)
audiences = Table(
    "audiences", metadata,
    Column("run_id", Id, nullable=False),
    Column("item_id", Id, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("user_id", Id, nullable=False),
    Column("score", REAL, nullable=False),
    PrimaryKeyConstraint("run_id", "item_id", "rank", name="pk_audiences"),
    sqlite_with_rowid=False,
)
# The item file's columns as each run read them (genres, price, available_from, ...): one row per
# item and column with a value, the value as text as it stood in the file.
item_attributes = Table(
    "item_attributes", metadata,
    Column("run_id", Id, nullable=False),
    Column("item_id", Id, nullable=False),
    Column("name", Text, nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "item_id", "name", name="pk_item_attributes"),
    sqlite_with_rowid=False,
)
# The item-keyed tables by the name their rows are handed over under.
KEYED_TABLES = {"similar_items": similar_items, "audiences": audiences, "item_attributes": item_attributes}

_similar = items.alias("similar")
current_similar_items = CreateView(
    select(similar_items.c.item_id, items.c.title, similar_items.c.rank, similar_items.c.similar_item_id,
           _similar.c.title.label("similar_title"), similar_items.c.score, similar_items.c.run_id)
    .select_from(similar_items.outerjoin(items, items.c.item_id == similar_items.c.item_id)
                 .outerjoin(_similar, _similar.c.item_id == similar_items.c.similar_item_id))
    .where(similar_items.c.run_id == _current_id),
    "current_similar_items",
    metadata=metadata,
).table
current_audiences = CreateView(
    select(audiences.c.item_id, items.c.title, audiences.c.rank, audiences.c.user_id, audiences.c.score,
           audiences.c.run_id)
    .select_from(audiences.outerjoin(items, items.c.item_id == audiences.c.item_id))
    .where(audiences.c.run_id == _current_id),
    "current_audiences",
    metadata=metadata,
).table
current_item_attributes = CreateView(
    select(item_attributes.c.item_id, item_attributes.c.name, item_attributes.c.value, item_attributes.c.run_id)
    .where(item_attributes.c.run_id == _current_id),
    "current_item_attributes",
    metadata=metadata,
).table

# One slot per expected shard of a collecting run; ``loaded_at`` (with the shard's counts) is set
# in the transaction that loads the shard's rows, so a slot is loaded exactly when its rows are.
shard_metadata = MetaData()
run_shards = Table(
    "run_shards", shard_metadata,
    Column("run_id", Id, nullable=False),
    Column("shard", Integer, nullable=False),
    Column("opened_at", Timestamp, nullable=False),
    Column("loaded_at", Timestamp),
    Column("n_rows", BigInteger),
    Column("n_users", BigInteger),
    PrimaryKeyConstraint("run_id", "shard", name="pk_run_shards"),
)

SCHEMA_HEADER = (
    "-- topx database schema ({dialect}). GENERATED from batch/publish/models.py: do not edit.\n"
    "-- Regenerate with: topx schema --out sql/schema.sql\n\n"
)


def create_schema(connection) -> None:
    """Create every table, index and the view that does not exist yet (idempotent), and check
    that an existing ``runs`` table has every column (:func:`check_runs_table`)."""
    metadata.create_all(connection, checkfirst=True)
    check_runs_table(connection)


# Columns added to `runs` after its first release, with what adds them to an older table.
ADDED_COLUMNS = {"gate": {"postgresql": "JSONB", "sqlite": "JSON"}}


def check_runs_table(connection) -> None:
    """Raise :class:`~batch.errors.SchemaError`, saying which ALTER TABLE statements to run, when
    the ``runs`` table predates columns topx now stores (no-op when the table does not exist)."""
    inspector = inspect(connection)
    if not inspector.has_table("runs"):
        return
    have = {column["name"] for column in inspector.get_columns("runs")}
    missing = [name for name in ADDED_COLUMNS if name not in have]
    if not missing:
        return
    if not inspector.has_table("alembic_version"):
        raise SchemaError(f"the database was made before topx used migrations (runs has no {', '.join(missing)} "
                          f"column): run `topx db upgrade` (with the same --database-url or TOPX_DATABASE_URL), "
                          f"as the tables' owner, to bring it up to date")
    dialect = connection.dialect.name
    alters = "; ".join(f"ALTER TABLE runs ADD COLUMN {name} {ADDED_COLUMNS[name].get(dialect, 'JSON')}"
                       for name in missing)
    raise SchemaError(f"the runs table predates the publish gate: it has no {', '.join(missing)} column. As the "
                      f"table's owner, run: {alters}; then {status_check_fix(dialect)}")


def status_check_fix(dialect: str) -> str:
    """How to let an older ``runs`` table's check constraint accept every status in
    :data:`STATUSES`."""
    if dialect != "postgresql":
        return "SQLite cannot alter a check constraint: start a new database file to record every run status"
    allowed = ", ".join(f"'{status}'" for status in STATUSES)
    return (f"as the table's owner, run: ALTER TABLE runs DROP CONSTRAINT ck_runs_status, ADD CONSTRAINT "
            f"ck_runs_status CHECK (status IN ({allowed}))")


def create_shard_schema(connection) -> None:
    """Create ``run_shards`` if it does not exist yet (idempotent)."""
    shard_metadata.create_all(connection, checkfirst=True)


SHARD_SCHEMA_HEADER = (
    "-- topx sharded-run bookkeeping ({dialect}), created by the first `topx run --shards N`.\n"
    "-- GENERATED from batch/publish/models.py: do not edit. Regenerate with:\n"
    "-- python -c \"import batch.publish.models as m; print(m.shard_schema_sql(), end='')\" > sql/run_shards.sql\n\n"
)


def schema_sql(dialect: str = "postgresql") -> str:
    """The DDL :func:`create_schema` runs on an empty database of ``dialect``, as a script."""
    name, ddl = _ddl(metadata, dialect)
    stamp = f"\nINSERT INTO alembic_version (version_num) VALUES ('{SCHEMA_REVISION}');\n"
    return SCHEMA_HEADER.format(dialect=name) + ddl + stamp


def shard_schema_sql(dialect: str = "postgresql") -> str:
    """The DDL :func:`create_shard_schema` runs on a database of ``dialect``, as a script."""
    name, ddl = _ddl(shard_metadata, dialect)
    return SHARD_SCHEMA_HEADER.format(dialect=name) + ddl


def _ddl(tables: MetaData, dialect: str) -> tuple[str, str]:
    """(dialect name, the statements creating ``tables``)."""
    statements: list[str] = []

    def record(ddl, *args, **kwargs):
        text = str(ddl.compile(dialect=engine.dialect)).strip()
        statements.append("\n".join(line.rstrip() for line in text.splitlines()) + ";")

    engine = create_mock_engine(f"{DRIVERS.get(dialect, dialect)}://", record)
    tables.create_all(engine, checkfirst=False)
    return engine.dialect.name, "\n\n".join(statements) + "\n"
