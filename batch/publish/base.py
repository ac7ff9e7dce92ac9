"""The sink contract: how one database kind stores a run's rows. Sinks are siblings
(:mod:`.sqlite`, :mod:`.postgres`); :func:`sink_for` is the one place that picks one.

The publisher (:mod:`.publisher`) owns the run bookkeeping and the transactions; a sink only
moves rows. Every method except :meth:`Sink.locked` runs inside a transaction the caller began
on ``conn``, so the caller decides what commits together.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np
from sqlalchemy.engine import Connection, Engine

from batch.errors import PublishError
from batch.publish.rows import RunRows


class PublishLockedError(PublishError):
    """Another process is publishing to the same database right now."""


class Sink(Protocol):
    """Row storage of one database kind."""

    name: str

    def locked(self, conn: Connection) -> AbstractContextManager[None]:
        """Hold the database's publisher lock, or raise :class:`PublishLockedError`.

        The lock dies with the process, so a run found ``loading`` while holding it belongs to
        a publisher that crashed."""

    def prepare(self, conn: Connection) -> None:
        """Per-database settings needed before the schema is created (outside a transaction)."""

    def load(self, conn: Connection, rows: RunRows) -> dict[str, float]:
        """Write the run's rows where the view cannot see them yet, replacing any earlier rows
        of the same run id on commit. Returns seconds per phase."""

    def attach(self, conn: Connection, run_id: str) -> None:
        """Make the loaded rows the stored rows of ``run_id`` (after :meth:`load`, same
        transaction)."""

    def drop_run(self, conn: Connection, run_id: str) -> None:
        """Delete every stored row of ``run_id``."""

    def upsert_titles(self, conn: Connection, item_ids: np.ndarray, titles: np.ndarray) -> None:
        """Insert or update the titles of the given items."""


def sink_for(engine: Engine) -> Sink:
    """The sink for the engine's database kind."""
    name = engine.dialect.name
    if name == "sqlite":
        from batch.publish.sqlite import SqliteSink

        return SqliteSink(engine)
    if name == "postgresql":
        if engine.dialect.driver != "psycopg2":  # COPY goes through psycopg2's copy_expert
            raise PublishError(f"publishing to PostgreSQL needs the psycopg2 driver (postgresql:// or "
                               f"postgresql+psycopg2:// URLs), not {engine.dialect.driver}")
        from batch.publish.postgres import PostgresSink

        return PostgresSink(engine)
    raise PublishError(f"cannot publish to a {name} database: use SQLite or PostgreSQL")
