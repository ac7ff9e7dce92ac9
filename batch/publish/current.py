"""The current run's lists of chosen users, read back from the database (to compare a new run
with what is published before it replaces it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine

from batch.publish import registry
from batch.publish.connect import engine_scope, session
from batch.publish.models import recommendations as recs

# User ids per query: well under SQLite's bound-parameter limit, a short IN list for PostgreSQL.
_IDS_PER_QUERY = 500


def current_lists(database_url: str | None, user_ids: Sequence[str], *, engine: Engine | None = None
                  ) -> tuple[str | None, np.ndarray, np.ndarray, np.ndarray]:
    """(current run id, user ids, ranks, item ids) of the current run's rows for ``user_ids``
    (external ids as published), by user then rank; run id None and no rows when nothing is
    published. Ids come back as str arrays, ranks as int32."""
    users, ranks, items = [], [], []
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        run = registry.current(conn)
        if run is None:
            return None, np.empty(0, str), np.empty(0, np.int32), np.empty(0, str)
        for start in range(0, len(user_ids), _IDS_PER_QUERY):
            wanted = [str(u) for u in user_ids[start:start + _IDS_PER_QUERY]]
            query = (select(recs.c.user_id, recs.c.rank, recs.c.item_id)
                     .where(recs.c.run_id == run["id"], recs.c.user_id.in_(wanted)))
            for user, rank, item in conn.execute(query):
                users.append(user), ranks.append(rank), items.append(item)
    order = np.lexsort((np.asarray(ranks, np.int32), np.asarray(users, str)))
    return (run["id"], np.asarray(users, str)[order], np.asarray(ranks, np.int32)[order],
            np.asarray(items, str)[order])
