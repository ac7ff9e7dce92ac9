"""Helpers shared by the test_publish* modules (this module holds no tests).

Lists are tiny and fully known: user u's list holds items (u + k) mod n_items for k = 0..top-1,
scores falling with rank, so every expected row can be written down.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from sqlalchemy import text

from batch.data.interactions import IdMap
from batch.lists import SOURCE_POPULARITY, TopLists
from batch.publish import RunInfo, make_engine


def make_lists(n_users: int = 6, top: int = 4, n_items: int = 10, *, shift: float = 0.0,
               fallback_users: tuple[int, ...] = (), no_probability: bool = False) -> TopLists:
    """Known lists; ``shift`` offsets every score so two versions of a run differ."""
    user = np.repeat(np.arange(n_users, dtype=np.int32), top)
    rank = np.tile(np.arange(1, top + 1, dtype=np.int32), n_users)
    item = ((user + rank - 1) % n_items).astype(np.int32)
    score = (10.0 - rank + user / 100 + shift).astype(np.float32)
    probability = np.full(len(user), np.nan, np.float32) if no_probability else \
        (1 / (1 + np.exp(-score))).astype(np.float32)
    source = np.isin(user, fallback_users).astype(np.uint8) * SOURCE_POPULARITY
    return TopLists(user, rank, item, score, probability, source)


def id_maps(n_users: int = 6, n_items: int = 10, *, text: bool = False) -> tuple[IdMap, IdMap]:
    """Integer ids 7, 8, 9, 10, … (text lengths differ, so text order ≠ numeric order), or
    sorted unicode ids."""
    if text:
        return (IdMap(np.array(sorted(f"usér-{u}" for u in range(n_users)))),
                IdMap(np.array(sorted(f"itém-日本-{i}" for i in range(n_items)))))
    return (IdMap(np.arange(7, 7 + n_users, dtype=np.int64)),
            IdMap(np.arange(100, 100 + 3 * n_items, 3, dtype=np.int64)))


def titles_for(items: IdMap) -> np.ndarray:
    """A title for every item but the one at index 8 (None: no title), which make_lists()
    recommends to its last user only, at rank 4."""
    titles = np.array([f"Title of {i}, \"quoted\"" for i in items.ids.tolist()], dtype=object)
    titles[8] = None
    return titles


# Metrics as the evaluate stage stores them, enough for the publish gate.
EVALUATED = {"evaluate": {"model": {"ndcg@10": 0.25}, "popularity": {"ndcg@10": 0.05}}}


def run_info(run_id: str, **metrics) -> RunInfo:
    return RunInfo(run_id, {"mode": "implicit", "publish": {"database_url": "postgresql://u:hunter2@db/x"}},
                   f"s3://bucket/{run_id}/model.tar.gz", datetime(2024, 5, 1, 12, tzinfo=UTC),
                   metrics=metrics or EVALUATED, counts={"interactions": 1234})


def expected_rows(lists: TopLists, users: IdMap, items: IdMap, titles=None) -> list[tuple]:
    """(user_id, rank, item_id, score, title) the view must show, sorted by user id text, rank."""
    rows = [(str(users.ids[u]), int(r), str(items.ids[i]), np.float32(s),
             None if titles is None else titles[i])
            for u, r, i, s in zip(lists.user, lists.rank, lists.item, lists.score, strict=True)]
    return sorted(rows, key=lambda row: (row[0].encode(), row[1]))


def query(url: str, sql: str, **params) -> list[tuple]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def view_rows(url: str) -> list[tuple]:
    """What dashboards see: (user_id, rank, item_id, score, title), ordered like the export;
    scores as float32 (PostgreSQL prints REAL in its shortest exact form, SQLite keeps a double)."""
    rows = query(url, "SELECT user_id, rank, item_id, score, title FROM current_recommendations")
    rows = [(u, r, i, np.float32(s), t) for u, r, i, s, t in rows]
    return sorted(rows, key=lambda row: (row[0].encode(), row[1]))


def stored_rows(url: str, run_id: str) -> int:
    """Rows of ``run_id`` in the base table, visible or not."""
    return query(url, "SELECT COUNT(*) FROM recommendations WHERE run_id = :r", r=run_id)[0][0]


def status(url: str, run_id: str) -> str | None:
    rows = query(url, "SELECT status FROM runs WHERE id = :r", r=run_id)
    return rows[0][0] if rows else None


def hook_chunks(monkeypatch, after: int, action) -> None:
    """Run ``action()`` when the publisher asks for chunk number ``after`` (0-based) of a run's
    rows, i.e. in the middle of the load once ``after`` chunks have gone in."""
    from batch.publish.rows import RunRows

    original = RunRows.chunks

    def chunks(self):
        for k, chunk in enumerate(original(self)):
            if k == after:
                action()
            yield chunk

    monkeypatch.setattr(RunRows, "chunks", chunks)
