"""Ranking accuracy at k against the held-out split.

Averaged over users with at least one relevant held-out item (``rel`` relevant items, ``hit_i``
= 1 when the item at rank i is relevant)::

    precision@k = hits / k            recall@k = hits / rel
    NDCG@k      = DCG / ideal DCG     MAP@k    = Σ_i P@i·hit_i / min(rel, k)
    hit rate@k  = share of users with any hit

NDCG uses binary gains and log2(i + 1) discounts, with the ideal list cut at k, as trec_eval's
``ndcg_cut``. MAP divides by min(rel, k), so a perfect list scores 1 even when a user has more
than k relevant items (trec_eval's ``map_cut`` divides by rel; a test checks both against it).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from batch.data.interactions import Interactions
from batch.features.negatives import is_seen, seen_keys

NAMES = ("precision", "recall", "ndcg", "map", "hit_rate")


def ranking_metrics(top_items: np.ndarray, users: np.ndarray, relevant: Interactions, n_items: int,
                    ks: Iterable[int] | None = None) -> dict[str, float]:
    """Metrics of lists ``top_items`` (int (n, depth), best first, -1 for empty slots) of
    ``users`` (int (n,)) at each k of ``ks`` (default: the depth); a k beyond the depth sees
    the lists as they are. Keys ``precision@k`` …, plus ``users_evaluated``."""
    depth = top_items.shape[1]
    hit, n_rel = _hits(top_items, users, relevant, n_items)
    out: dict[str, float] = {}
    for k in sorted(set(ks or [depth])):
        out.update(_at(hit[:, :k], n_rel, k))
    out["users_evaluated"] = int(len(n_rel))
    return out


def _hits(top_items: np.ndarray, users: np.ndarray, relevant: Interactions,
          n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """bool (m, depth): which slots hold a relevant item, and int (m,) relevant items per user,
    for the m users with any relevant item."""
    depth = top_items.shape[1]
    n_rel = np.bincount(relevant.user, minlength=int(users.max(initial=-1)) + 1)[users]
    keys = seen_keys(relevant.user, relevant.item, n_items)
    hit = is_seen(keys, np.repeat(users, depth), np.maximum(top_items.ravel(), 0), n_items).reshape(-1, depth)
    hit &= top_items >= 0
    ok = n_rel > 0
    return hit[ok], n_rel[ok]


def _at(hit: np.ndarray, n_rel: np.ndarray, k: int) -> dict[str, float]:
    """The metrics at k from ``hit`` (bool (m, ≤k)); a list shorter than k counts as padded."""
    hit = np.pad(hit, ((0, 0), (0, k - hit.shape[1])))
    hits = hit.sum(1)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    precision_at = np.cumsum(hit, 1) / np.arange(1, k + 1)
    return {
        f"precision@{k}": _mean(hits / k),
        f"recall@{k}": _mean(hits / n_rel),
        f"ndcg@{k}": _mean((hit * discount).sum(1) / ideal),
        f"map@{k}": _mean((precision_at * hit).sum(1) / np.minimum(n_rel, k)),
        f"hit_rate@{k}": _mean(hits > 0),
    }


def _mean(values: np.ndarray) -> float:
    return round(float(np.mean(values)), 6) if len(values) else float("nan")
