"""Alembic's environment for topx's database: always run on a connection topx hands in
(``config.attributes["connection"]``, see :mod:`batch.publish.migrate`), never from a URL here."""

from alembic import context

from batch.publish.models import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
