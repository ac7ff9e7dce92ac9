"""The item attributes published with each run: table ``item_attributes`` (run_id, item_id,
name, value: the item file's columns as text) and view ``current_item_attributes``.

The DDL is frozen here, like revision 0001's.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

VIEW = (
    "CREATE VIEW current_item_attributes AS SELECT item_attributes.item_id, item_attributes.name, "
    "item_attributes.value, item_attributes.run_id\n"
    "FROM item_attributes\n"
    "WHERE item_attributes.run_id = (SELECT runs.id\nFROM runs\nWHERE runs.status = 'current')"
)


def upgrade() -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("item_attributes"):
        op.create_table(
            "item_attributes",
            sa.Column("run_id", Id, nullable=False),
            sa.Column("item_id", Id, nullable=False),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("value", sa.Text, nullable=False),
            sa.PrimaryKeyConstraint("run_id", "item_id", "name", name="pk_item_attributes"),
            sqlite_with_rowid=False,
        )
    if "current_item_attributes" not in set(sa.inspect(bind).get_view_names()):
        op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS current_item_attributes")
    op.drop_table("item_attributes")
