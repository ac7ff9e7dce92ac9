"""Schema migrations (Alembic): every database records its schema revision in
``alembic_version``, and :func:`upgrade` (``topx db upgrade``) brings it to the revision this
version of topx writes.

A new database gets the current schema and is stamped with it when first published to. Every
publish checks the revision first (:func:`ensure_schema`) and, when it differs, stops with a
:class:`~batch.errors.SchemaError` that names the command to run: nothing is written to a
database whose tables topx does not know. A database made before topx adopted migrations (no
``alembic_version``) is recognised by its ``runs`` table; upgrading adds the columns it lacks
and stamps it with the first revision, the schema it then has.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from batch.errors import SchemaError
from batch.publish.models import ADDED_COLUMNS, create_schema

LOCATION = Path(__file__).parent / "migrations"
BASELINE = "0001"  # the schema when migrations began (what create_all made until then)


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(LOCATION))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The revision this version of topx writes."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def revision(connection: Connection) -> str | None:
    """The database's recorded revision; None when it has none (empty, or made before migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def ensure_schema(connection: Connection) -> None:
    """Inside the caller's transaction: create and stamp the schema of a new database, or check
    that an existing one is at :func:`head` (raising :class:`SchemaError` that says to run
    ``topx db upgrade`` otherwise)."""
    fresh = not inspect(connection).has_table("runs")
    if not fresh:
        found, wanted = revision(connection), head()
        if found != wanted:
            shown = found or "none (made before topx used migrations)"
            raise SchemaError(f"the database's schema is at revision {shown}, this topx writes revision {wanted}: "
                              f"run `topx db upgrade` (with the same --database-url or TOPX_DATABASE_URL) first")
    create_schema(connection)
    if fresh:
        MigrationContext.configure(connection).stamp(ScriptDirectory.from_config(_config()), "head")


def upgrade(engine: Engine) -> dict[str, str | None]:
    """Bring the database to :func:`head` in one transaction; returns the revisions before and after."""
    with engine.begin() as connection:
        before = revision(connection)
        if before is None and inspect(connection).has_table("runs"):
            _adopt(connection)
        command.upgrade(_config(connection), "head")
        return {"from": before, "to": revision(connection)}


def _adopt(connection: Connection) -> None:
    """A database from before migrations: add the ``runs`` columns it lacks, then record it as
    the baseline revision, which it now matches."""
    have = {column["name"] for column in inspect(connection).get_columns("runs")}
    for name, types in ADDED_COLUMNS.items():
        if name not in have:
            connection.execute(text(f"ALTER TABLE runs ADD COLUMN {name} {types.get(connection.dialect.name, 'JSON')}"))
    MigrationContext.configure(connection).stamp(ScriptDirectory.from_config(_config()), BASELINE)
