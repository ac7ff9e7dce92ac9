"""The ``run_shards`` slots of a sharded run: one per expected shard, opened when the run starts
collecting and marked loaded in the transaction that loads the shard's rows (luigi's marker
row), so a slot says loaded exactly when the shard's rows are stored.

Every function runs inside the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from batch.publish.models import run_shards as table


@dataclass(frozen=True)
class Slot:
    """One expected shard: ``loaded_at`` None until its rows are stored."""

    shard: int
    loaded_at: datetime | None
    n_rows: int | None
    n_users: int | None


def open_slots(conn: Connection, run_id: str, shards: int, at: datetime) -> None:
    """Expect shards 0..``shards``-1 of the run, forgetting any slots of an earlier attempt."""
    conn.execute(delete(table).where(table.c.run_id == run_id))
    conn.execute(insert(table), [{"run_id": run_id, "shard": k, "opened_at": at} for k in range(shards)])


def claim(conn: Connection, run_id: str, shard: int, n_rows: int, n_users: int, at: datetime) -> bool:
    """Mark the slot loaded if it is not yet; False if it is loaded or does not exist.

    The caller's first write: it locks the slot (PostgreSQL: the row, so a second attempt of the
    same shard waits here, then finds it loaded; SQLite: the database) before any row is written."""
    result = conn.execute(update(table).where(table.c.run_id == run_id, table.c.shard == shard,
                                              table.c.loaded_at.is_(None))
                          .values(loaded_at=at, n_rows=n_rows, n_users=n_users))
    return result.rowcount == 1


def slots(conn: Connection, run_id: str, *, lock: bool = False) -> list[Slot]:
    """The run's slots by shard number. ``lock``: hold them until the transaction ends, after
    waiting for shards that are loading now (PostgreSQL; SQLite's callers hold the write lock)."""
    query = select(table.c.shard, table.c.loaded_at, table.c.n_rows, table.c.n_users) \
        .where(table.c.run_id == run_id).order_by(table.c.shard)
    if lock:
        query = query.with_for_update()
    return [Slot(*row) for row in conn.execute(query)]


def missing(found: list[Slot]) -> list[int]:
    """Shards whose rows are not loaded."""
    return [slot.shard for slot in found if slot.loaded_at is None]


def opened_before(conn: Connection, run_ids: list[str], cutoff: datetime) -> list[str]:
    """Of ``run_ids``, those whose slots were opened before ``cutoff``."""
    if not run_ids:
        return []
    query = (select(table.c.run_id).where(table.c.run_id.in_(run_ids)).group_by(table.c.run_id)
             .having(func.min(table.c.opened_at) < cutoff).order_by(table.c.run_id))
    return list(conn.execute(query).scalars())


def listed(shards: list[int], limit: int = 20) -> str:
    """Shard numbers for a message: the first ``limit``, then how many more."""
    shown = ", ".join(map(str, shards[:limit]))
    return shown + (f" and {len(shards) - limit} more" if len(shards) > limit else "")
