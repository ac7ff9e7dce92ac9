"""The schema as it stood when topx adopted migrations: runs (with the publish gate's verdict),
recommendations, items, similar_items, audiences, publish_lock and the views
current_recommendations, current_similar_items and current_audiences (run_shards is created by
the first sharded run, outside migrations).

The DDL is frozen here, independent of :mod:`batch.publish.models`, so later revisions start
from exactly this schema.

It also adopts a database made before topx used migrations (no ``alembic_version``; tables from
an older topx): what that database lacks is created, ``runs`` gets the ``gate`` column, and its
status check is replaced by one that accepts ``rejected`` (PostgreSQL: DROP and ADD CONSTRAINT;
SQLite, which cannot alter a constraint: the table is recreated with its rows, Alembic's batch
mode). Objects that already exist are kept with their rows.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

STATUSES = ("loading", "current", "superseded", "failed", "pruned", "collecting", "rejected")
STATUS_CHECK = "status IN ({})".format(", ".join(f"'{status}'" for status in STATUSES))
ONE_CURRENT = sa.text("status = 'current'")

_CURRENT_RUN = "(SELECT runs.id\nFROM runs\nWHERE runs.status = 'current')"
# As each dialect writes them; {similar} is the alias, a reserved word PostgreSQL quotes.
VIEWS = {
    "current_recommendations": (
        "CREATE VIEW current_recommendations AS SELECT recommendations.user_id, recommendations.rank, "
        "recommendations.item_id, recommendations.score, recommendations.probability, recommendations.source, "
        "items.title, recommendations.run_id\n"
        "FROM recommendations LEFT OUTER JOIN items ON items.item_id = recommendations.item_id\n"
        f"WHERE recommendations.run_id = {_CURRENT_RUN}"
    ),
    "current_similar_items": (
        "CREATE VIEW current_similar_items AS SELECT similar_items.item_id, items.title, similar_items.rank, "
        "similar_items.similar_item_id, {similar}.title AS similar_title, similar_items.score, "
        "similar_items.run_id\n"
        "FROM similar_items LEFT OUTER JOIN items ON items.item_id = similar_items.item_id LEFT OUTER JOIN "
        "items AS {similar} ON {similar}.item_id = similar_items.similar_item_id\n"
        f"WHERE similar_items.run_id = {_CURRENT_RUN}"
    ),
    "current_audiences": (
        "CREATE VIEW current_audiences AS SELECT audiences.item_id, items.title, audiences.rank, audiences.user_id, "
        "audiences.score, audiences.run_id\n"
        "FROM audiences LEFT OUTER JOIN items ON items.item_id = audiences.item_id\n"
        f"WHERE audiences.run_id = {_CURRENT_RUN}"
    ),
}


def _runs_columns() -> list:
    return [
        sa.Column("id", Id, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp),
        sa.Column("finished_at", Timestamp),
        sa.Column("published_at", Timestamp),
        sa.Column("model_location", sa.Text),
        sa.Column("config", Json),
        sa.Column("metrics", Json),
        sa.Column("counts", Json),
        sa.Column("n_users", sa.BigInteger),
        sa.Column("n_items", sa.BigInteger),
        sa.Column("n_items_recommended", sa.BigInteger),
        sa.Column("n_fallback_users", sa.BigInteger),
        sa.Column("n_rows", sa.BigInteger),
        sa.Column("error", sa.Text),
        sa.Column("gate", Json),
        sa.CheckConstraint(STATUS_CHECK, name="ck_runs_status"),
    ]


def _item_keyed(name: str, other: str) -> None:
    """similar_items (other = similar_item_id) or audiences (other = user_id)."""
    op.create_table(
        name,
        sa.Column("run_id", Id, nullable=False),
        sa.Column("item_id", Id, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column(other, Id, nullable=False),
        sa.Column("score", sa.REAL, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "item_id", "rank", name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    inspector = sa.inspect(bind)
    tables = set(inspector.get_table_names())

    if "runs" in tables:
        _adopt_runs(bind, inspector)
    else:
        op.create_table("runs", *_runs_columns())
        op.create_index("uq_runs_one_current", "runs", ["status"], unique=True,
                        postgresql_where=ONE_CURRENT, sqlite_where=ONE_CURRENT)
    if "items" not in tables:
        op.create_table("items", sa.Column("item_id", Id, primary_key=True), sa.Column("title", sa.Text))
    if "recommendations" not in tables:
        op.create_table(
            "recommendations",
            sa.Column("run_id", Id, nullable=False),
            sa.Column("user_id", Id, nullable=False),
            sa.Column("rank", sa.Integer, nullable=False),
            sa.Column("item_id", Id, nullable=False),
            sa.Column("score", sa.REAL, nullable=False),
            sa.Column("probability", sa.REAL),
            sa.Column("source", sa.SmallInteger, nullable=False),
            *([sa.PrimaryKeyConstraint("run_id", "user_id", "rank", name="pk_recommendations")] if sqlite else []),
            postgresql_partition_by="LIST (run_id)",
            sqlite_with_rowid=False,
        )
        if not sqlite:
            op.create_index("brin_recommendations_user", "recommendations", ["user_id"], postgresql_using="brin",
                            postgresql_with={"pages_per_range": 16})
    if "publish_lock" not in tables:
        op.create_table("publish_lock", sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False))
    if "similar_items" not in tables:
        _item_keyed("similar_items", "similar_item_id")
    if "audiences" not in tables:
        _item_keyed("audiences", "user_id")

    views = set(sa.inspect(bind).get_view_names())
    similar = "similar" if sqlite else '"similar"'
    for name, ddl in VIEWS.items():
        if name not in views:
            op.execute(ddl.replace("{similar}", similar))


def _adopt_runs(bind, inspector) -> None:
    """Bring a ``runs`` table made before migrations to this revision: the ``gate`` column and a
    status check that accepts every status above."""
    if "gate" not in {column["name"] for column in inspector.get_columns("runs")}:
        op.add_column("runs", sa.Column("gate", Json))
    checks = inspector.get_check_constraints("runs")
    if checks and all("'rejected'" in check["sqltext"] for check in checks):
        return
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE runs DROP CONSTRAINT IF EXISTS ck_runs_status, "
                   f"ADD CONSTRAINT ck_runs_status CHECK ({STATUS_CHECK})")
        return
    # SQLite recreates the table; views over it are dropped first (renaming the new table into
    # place re-checks every view) and created again by upgrade().
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    runs = sa.Table("runs", sa.MetaData(), *_runs_columns())
    sa.Index("uq_runs_one_current", runs.c.status, unique=True, sqlite_where=ONE_CURRENT)
    with op.batch_alter_table("runs", copy_from=runs, recreate="always"):
        pass


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name in ("audiences", "similar_items", "publish_lock", "recommendations", "items", "runs"):
        op.drop_table(name)
