"""Schema migrations (Alembic): every database records its schema revision in
``alembic_version``, and :func:`upgrade` (``topx db upgrade``) brings it to the revision this
version of topx writes.

A new database gets the current schema and is stamped with it when first published to. Every
publish checks the revision first (:func:`ensure_schema`) and, when it differs, stops with a
:class:`~batch.errors.SchemaError` that names the command to run: nothing is written to a
database whose tables topx does not know. A database made before topx adopted migrations (no
``alembic_version``) is brought to the first revision by that revision itself, which creates
what such a database lacks and alters its ``runs`` table. A database at a revision this topx
does not know was written by a newer topx: nothing is done to it, and the error says to upgrade
topx.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from batch.errors import NewerSchemaError, SchemaError
from batch.publish.models import create_schema

LOCATION = Path(__file__).parent / "migrations"


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
        _check_known(found)
        if found != wanted:
            shown = found or "none (made before topx used migrations)"
            raise SchemaError(f"the database's schema is at revision {shown}, this topx writes revision {wanted}: "
                              f"run `topx db upgrade` (with the same --database-url or TOPX_DATABASE_URL) first")
    create_schema(connection)
    if fresh:
        MigrationContext.configure(connection).stamp(ScriptDirectory.from_config(_config()), "head")


def _check_known(found: str | None) -> None:
    """Raise :class:`NewerSchemaError` when ``found`` is a revision this topx does not know."""
    if found is None:
        return
    try:
        ScriptDirectory.from_config(_config()).get_revision(found)
    except CommandError:
        raise NewerSchemaError(
            f"the database's schema is at revision {found}, which this topx does not know (it writes revision "
            f"{head()}): a newer topx wrote it. Upgrade topx to the version that wrote it; do not publish to or "
            f"upgrade this database with this one") from None


def upgrade(engine: Engine) -> dict[str, str | None]:
    """Bring the database to :func:`head` in one transaction; returns the revisions before and after.
    A database made before migrations is adopted by the first revision (see its docstring)."""
    with engine.begin() as connection:
        before = revision(connection)
        _check_known(before)
        command.upgrade(_config(connection), "head")
        return {"from": before, "to": revision(connection)}
