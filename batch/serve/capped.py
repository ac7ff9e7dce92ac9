"""A cap per category in each list (e.g. at most 3 per genre in a top 10), applied inside the
search so lists stay full.

The capped list is the greedy one: walk the items best first and take each whose categories all
still have room, until ``k`` are taken. An item counts against every category it belongs to;
an item in no category is never held back. The greedy list depends only on the exact ranking's
prefix up to its k-th pick, and :func:`~batch.serve.search.exact.exact_topk` returns that prefix
exactly: fetch ``k + margin`` items, pick, and fetch 4× deeper for the rows left short, until
they are full or every candidate was seen. Popularity lists are capped the same way over the
popularity order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from batch.data.interactions import FeatureTable
from batch.errors import ConfigError
from batch.serve.search.exact import MARGIN, WIDEN, exact_topk


def category_matrix(features: FeatureTable | None, prefix: str, setting: str) -> np.ndarray:
    """bool (n_items, n_categories): the item feature columns named ``<prefix>=…`` (e.g.
    ``genre=Comedy``). :class:`ConfigError` naming ``setting`` when the data has none."""
    columns = [j for j, name in enumerate(features.columns if features is not None else ())
               if name.startswith(f"{prefix}=")]
    if not columns:
        raise ConfigError(f"{setting}: the item features have no {prefix}=… columns to cap lists by")
    return np.asarray(features.matrix[:, columns].toarray() != 0)


def greedy(ranked: np.ndarray, categories: np.ndarray, cap: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (int64 (n, k), -1 empty) of the capped picks in each row of ``ranked`` (int item
    indices best first, -1 empty) and whether each row was filled (bool (n,)). Vectorised over
    rows, one step per ranked column."""
    n, depth = ranked.shape
    counts = np.zeros((n, categories.shape[1]), np.int32)
    picks = np.full((n, k), -1, np.int64)
    taken = np.zeros(n, np.int64)
    rows = np.arange(n)
    for j in range(depth):
        item = ranked[:, j]
        member = categories[np.maximum(item, 0)]
        ok = (item >= 0) & (taken < k) & ~((counts >= cap) & member).any(axis=1)
        picks[rows[ok], taken[ok]] = j
        counts[ok] += member[ok]
        taken += ok
    return picks, taken == k


def capped_topk(queries: np.ndarray, items: np.ndarray, k: int, categories: np.ndarray, cap: int, *,
                exclude: sp.csr_matrix | None = None, candidates: np.ndarray | None = None,
                batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_topk` (same arguments and results) with at most ``cap`` items of each
    category (``categories``: bool (n_items, n_categories)) in each row's list."""
    n_candidates = int(candidates.sum()) if candidates is not None else len(items)
    item_out = np.full((len(queries), k), -1, np.int32)
    inner_out = np.full((len(queries), k), -np.inf, np.float32)
    pending, fetch = np.arange(len(queries)), min(k + MARGIN, max(n_candidates, 1))
    while len(pending):
        ranked, inner = exact_topk(queries[pending], items, fetch, candidates=candidates, batch_size=batch_size,
                                   exclude=None if exclude is None else exclude[pending])
        picks, full = greedy(ranked, categories, cap, k)
        done = full | (ranked[:, -1] < 0) | (fetch >= n_candidates)  # full, or every candidate seen
        _place(item_out, inner_out, pending[done], ranked[done], inner[done], picks[done])
        pending, fetch = pending[~done], min(fetch * WIDEN, n_candidates)
    return item_out, inner_out


def capped_order(order: np.ndarray, users: np.ndarray, k: int, categories: np.ndarray, cap: int,
                 top_unseen) -> np.ndarray:
    """The capped version of ``top_unseen(order, users, k, …)`` (a callable of ``(users, depth)``
    returning int64 (n, depth), -1 empty): each user's first ``k`` unseen items of ``order``
    within the cap. int64 (n, k), -1 for empty slots."""
    out = np.full((len(users), k), -1, np.int64)
    pending, depth = np.arange(len(users)), min(k + MARGIN, max(len(order), 1))
    while len(pending):
        ranked = top_unseen(users[pending], depth)
        picks, full = greedy(ranked, categories, cap, k)
        done = full | (ranked[:, -1] < 0) | (depth >= len(order))
        chosen = np.take_along_axis(ranked[done], np.maximum(picks[done], 0), axis=1)
        out[pending[done]] = np.where(picks[done] >= 0, chosen, -1)
        pending, depth = pending[~done], min(depth * WIDEN, len(order))
    return out


def _place(item_out, inner_out, rows, ranked, inner, picks) -> None:
    safe = np.maximum(picks, 0)
    item_out[rows] = np.where(picks >= 0, np.take_along_axis(ranked, safe, axis=1), -1)
    inner_out[rows] = np.where(picks >= 0, np.take_along_axis(inner, safe, axis=1), -np.inf)
