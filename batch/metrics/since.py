"""Change since the current run: the new lists of a sample of users against the lists the
database publishes for them now, before the new run replaces them (stored as ``churn`` in
metrics.json and ``runs.metrics``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from batch.data.interactions import Dataset
from batch.lists import TopLists
from batch.metrics.churn import churn, moved
from batch.rundir import RunDir

log = logging.getLogger("topx.metrics")

SAMPLE_USERS = 20_000  # users compared (a seeded sample when there are more): enough for shares
TOP_MOVED = 10  # items listed as having entered / left the most lists


def record_churn(database_url: str | None, run: RunDir, run_id: str, lists: TopLists, dataset: Dataset,
                 k: int, *, engine=None) -> dict[str, Any]:
    """Compute :func:`since_current` and store it as ``churn`` in the run's metrics.json (read
    by the publish step into ``runs.metrics``). Publishing the same run again keeps the
    comparison made before its first publish."""
    result = since_current(database_url, run_id, lists, dataset, k, engine=engine)
    previous = run.read_json("metrics.json").get("churn")
    if result.get("same_run") and previous and not previous.get("same_run"):
        return previous
    run.update_metrics("churn", result)
    return result


def since_current(database_url: str | None, run_id: str, lists: TopLists, dataset: Dataset, k: int, *,
                  seed: int = 0, engine=None) -> dict[str, Any]:
    """Churn of ``lists`` (the run's, all users) against the current run in the database.
    ``{"against": None}`` when nothing is published; ``{"against": run_id, "same_run": True}``
    when the current run is this run (re-published): compare only with another run."""
    from batch.publish.current import current_lists

    users = _sample(np.unique(lists.user), SAMPLE_USERS, seed)
    external = dataset.users.ids[users].astype(str)
    against, old_users, old_ranks, old_items = current_lists(database_url, external, engine=engine)
    if against is None or against == run_id:
        return {"against": against, **({"same_run": True} if against else {})}
    items = _ItemSpace(dataset, old_items)
    new = _matrix(lists, users)
    old = _old_matrix(external, old_users, old_ranks, items.index, max(new.shape[1], int(old_ranks.max(initial=0))))
    listed = (old >= 0).any(1)  # users the current run has no list for are new users, not churn
    entered, left = moved(new[listed], old[listed], items.size)
    result = {"against": against, "k": k, **churn(new[listed], old[listed], k),
              "new_users": int((~listed).sum()), "entered": items.top(entered, TOP_MOVED),
              "left": items.top(left, TOP_MOVED)}
    log.info("against run %s: jaccard@%d %.3f, rbo %.3f, %.1f%% of %d lists changed", against, k,
             result[f"jaccard@{k}"], result["rbo"], 100 * result["changed_share"], result["users_compared"])
    return result


class _ItemSpace:
    """The new catalogue's item indices, extended by the current run's items it lacks."""

    def __init__(self, dataset: Dataset, old_items: np.ndarray):
        known = dataset.items.contains(old_items)
        self.gone = np.unique(old_items[~known])
        self.index = np.empty(len(old_items), np.int64)
        self.index[known] = dataset.items.index(old_items[known], what="item")
        self.index[~known] = dataset.n_items + np.searchsorted(self.gone, old_items[~known])
        self.ids = np.concatenate([dataset.items.ids.astype(str), self.gone])
        titles = dataset.item_titles if dataset.item_titles is not None else np.full(dataset.n_items, None)
        self.titles = np.concatenate([titles, np.full(len(self.gone), None)])
        self.size = dataset.n_items + len(self.gone)

    def top(self, counts: np.ndarray, n: int) -> list[dict[str, Any]]:
        """The ``n`` items with the largest non-zero counts: item_id, title, lists."""
        order = np.lexsort((np.arange(len(counts)), -counts))[:n]
        return [{"item_id": str(self.ids[i]), "title": self.titles[i], "lists": int(counts[i])}
                for i in order if counts[i] > 0]


def _matrix(lists: TopLists, users: np.ndarray) -> np.ndarray:
    """The lists of ``users`` (sorted) as int64 (n, depth) item indices, -1 for empty slots."""
    rows = np.isin(lists.user, users)
    depth = int(lists.rank.max(initial=0))
    out = np.full((len(users), depth), -1, np.int64)
    out[np.searchsorted(users, lists.user[rows]), lists.rank[rows] - 1] = lists.item[rows]
    return out


def _old_matrix(external: np.ndarray, users: np.ndarray, ranks: np.ndarray, items: np.ndarray,
                depth: int) -> np.ndarray:
    """The current rows as int64 (len(external), depth), aligned with ``external`` (a user's
    row position in the new lists)."""
    order = np.argsort(external)
    out = np.full((len(external), depth), -1, np.int64)
    pos = order[np.searchsorted(external, users, sorter=order)]
    out[pos, ranks - 1] = items
    return out


def _sample(users: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(users) <= limit:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=limit, replace=False))
