"""The schema as it stood when topx adopted migrations: runs (with the publish gate's verdict),
recommendations, items, similar_items, audiences, publish_lock and the views
current_recommendations, current_similar_items and current_audiences (run_shards is created by
the first sharded run, outside migrations).

Revision ID: 0001
Revises:
"""

from alembic import op

from batch.publish.models import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    metadata.drop_all(op.get_bind(), checkfirst=True)
