"""The offline ranking protocol that ``topx tune`` and ``bench/quality.py`` share.

A split holds out, per user, the ``holdout`` latest (``last``) or random (``random``)
interactions; **relevant = any held-out item** (ratings ignored); items seen in training are
excluded; lists are cut at k. Hyperparameters are chosen on a *validation* split carved the same
way from the training part only, so the test split is never looked at while choosing.

This differs on purpose from ``topx evaluate``, which counts a held-out item as relevant only
when its rating is ≥ the threshold: here every system, topx and its peers, is judged by whether
it finds what the user went on to interact with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from batch.config import JobConfig
from batch.data import split as splits
from batch.data.interactions import Dataset
from batch.metrics.accuracy import ranking_metrics
from batch.metrics.beyond import gini

RELEVANCE = "any held-out interaction"
_SCORE_USERS = 1024  # users scored at once by top_k: memory 1024 × n_items × 4 bytes


def validation_split(dataset: Dataset, method: str, holdout: int, seed: int) -> Dataset:
    """``dataset`` with its training part split again: the new ``test`` is each user's
    ``holdout`` latest (``last``) or random (``random``) training interactions, the new ``train``
    the rest; the original test part is dropped. Id maps and features are kept."""
    train = dataset.train
    mask = splits.holdout_mask(method, train.user, train.timestamp, n_users=dataset.n_users,
                               holdout=holdout, seed=seed)
    return replace(dataset, train=train.take(~mask), test=train.take(mask),
                   report={**dataset.report, "validation": splits.summary(method, train.user, mask,
                                                                          dataset.n_users)})


def eval_users(dataset: Dataset) -> np.ndarray:
    """int64 sorted indices of the users with any held-out interaction."""
    return np.unique(dataset.test.user).astype(np.int64)


def list_metrics(top: np.ndarray, users: np.ndarray, dataset: Dataset, k: int = 10) -> dict[str, float]:
    """precision/recall/NDCG/MAP/hit rate at ``k`` of lists ``top`` (int (n, ≥k), best first, -1
    for empty slots) of ``users``, relevant = any held-out item; plus ``coverage@k`` (share of
    the items that appear in any list) and ``gini@k`` of how often each item is listed."""
    top = top[:, :k]
    out = ranking_metrics(top, users, dataset.test, dataset.n_items, [k])
    counts = np.bincount(top[top >= 0], minlength=dataset.n_items)
    out[f"coverage@{k}"] = round(float(np.count_nonzero(counts) / max(dataset.n_items, 1)), 6)
    out[f"gini@{k}"] = round(gini(counts), 6)
    return out


def top_k(score: Callable[[np.ndarray], np.ndarray], users: np.ndarray, seen: sp.csr_matrix,
          k: int) -> np.ndarray:
    """Each user's ``k`` best items by ``score`` (users int (b,) → float (b, n_items)), the
    items of its row of ``seen`` excluded: int64 (n, k), best first, ties by smaller index,
    -1 where a user has fewer than k unseen items."""
    out = np.full((len(users), k), -1, np.int64)
    seen = seen.tocsr()
    for start in range(0, len(users), _SCORE_USERS):
        part = users[start:start + _SCORE_USERS]
        scores = np.asarray(score(part), np.float64)
        rows = seen[part]
        scores[np.repeat(np.arange(len(part)), np.diff(rows.indptr)), rows.indices] = -np.inf
        depth = min(k, scores.shape[1])
        head = np.argpartition(-scores, depth - 1, axis=1)[:, :depth] if depth < scores.shape[1] else \
            np.tile(np.arange(scores.shape[1]), (len(part), 1))
        head_scores = np.take_along_axis(scores, head, 1)
        order = np.lexsort((head, -head_scores), axis=1)
        best, best_scores = np.take_along_axis(head, order, 1), np.take_along_axis(head_scores, order, 1)
        out[start:start + len(part), :depth] = np.where(np.isfinite(best_scores), best, -1)
    return out


def fm_top(cfg: JobConfig, run_path: str | Path, users: np.ndarray, k: int) -> np.ndarray:
    """The lists of a trained run directory's FM for ``users``, made as ``topx evaluate`` makes
    them (exact search, training items excluded, the configured allow/deny lists, popularity for
    users the model does not know; with ``[rerank] model``, each user's FM top
    ``rerank.candidates`` re-ranked by the run's re-ranker): int64 (n, k), -1 for empty slots."""
    from batch.rundir import RunDir
    from batch.serve.evaluate import as_matrix
    from batch.serve.recommend import candidates, exclusion, recommend
    from batch.serve.repackage import vectors_for
    from batch.serve.search.local import LocalSearcher

    run = RunDir(run_path)
    dataset, vectors = run.load_dataset(), vectors_for(run)
    allowed, _ = candidates(vectors, dataset.items, cfg.search, dataset.item_features, dataset)
    searcher = LocalSearcher(method="exact", batch_size=cfg.search.batch_size)
    depth = max(k, cfg.rerank.candidates) if cfg.rerank.enabled else k
    lists = recommend(vectors, searcher, top=depth, candidates=allowed, users=users,
                      exclude=exclusion(dataset, include_held_out=False)).lists
    if cfg.rerank.enabled:
        from batch.rerank.rerank import rerank
        from batch.rerank.stage import reranker_for

        model, known_users, known_items = reranker_for(cfg, run, dataset)
        lists = rerank(lists, model, k, known_users, known_items)
    return as_matrix(lists, users, k)
