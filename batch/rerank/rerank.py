"""Re-ranking: each user's FM candidates re-scored by NeuMF, the best x kept.

The candidates come from the one search path (:func:`batch.serve.recommend.search_run` or
:func:`~batch.serve.recommend.recommend`), so allow and deny lists, attribute rules,
availability, suppression, exclusions and the category cap have shaped them already; re-ranking
only reorders and cuts, it never adds an item. Users NeuMF does not know (no training
interaction: its embeddings for them are untrained) keep their FM or popularity list as it is.
Items NeuMF does not know (known to the FM through their features only) follow the items it
knows, in the FM's order.
"""

from __future__ import annotations

import numpy as np

from batch.lists import SOURCE_RERANKED, TopLists
from batch.rerank.ncf import NeuMF, predict


def known(indices: np.ndarray, size: int) -> np.ndarray:
    """Boolean (size,): which users (or items) have at least one training interaction."""
    return np.bincount(np.asarray(indices, np.int64), minlength=size)[:size] > 0


def rerank(candidates: TopLists, model: NeuMF, top: int, known_users: np.ndarray,
           known_items: np.ndarray) -> TopLists:
    """Each known user's candidate rows ordered by NeuMF probability (best first), cut to
    ``top``, with that probability as score and probability and source
    :data:`~batch.lists.SOURCE_RERANKED`; other users' rows cut to ``top`` unchanged.
    ``candidates``: rows grouped by user, ranks 1, 2, … (a :class:`TopLists` as the search
    makes). ``known_users`` / ``known_items``: boolean masks over the model's users and items."""
    if not len(candidates):
        return candidates
    user, item = candidates.user.astype(np.int64), candidates.item.astype(np.int64)
    mine = known_users[user]
    prob = np.zeros(len(candidates), np.float32)
    prob[mine] = predict(model, user[mine], item[mine])
    stranger_item = mine & ~known_items[item]
    # users in their original order; within a known user: known items by probability, then the rest by FM rank
    order = np.lexsort((candidates.rank, np.where(mine & ~stranger_item, -prob, 0), stranger_item, user))
    ordered = candidates.take(order)
    starts = np.flatnonzero(np.r_[True, ordered.user[1:] != ordered.user[:-1]])
    rank = (np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)])) + 1).astype(np.int32)
    reranked = mine[order]
    score = np.where(reranked, prob[order], ordered.score).astype(np.float32)
    out = TopLists(ordered.user, rank, ordered.item, score,
                   np.where(reranked, prob[order], ordered.probability).astype(np.float32),
                   np.where(reranked, SOURCE_RERANKED, ordered.source).astype(np.uint8))
    return out.take(np.flatnonzero(rank <= top))
