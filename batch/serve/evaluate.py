"""Offline evaluation on the held-out split: ranking metrics at k, next to a popularity baseline.

Lists are made as in production, except that only the *training* interactions are excluded (the
held-out ones are what we hope to find). An item is relevant to a user when the user's held-out
rating is ≥ the threshold, or, for data without ratings, when the user has any held-out
interaction with it. Metrics are averaged over users with at least one relevant held-out item:

    precision@k = hits / k            recall@k = hits / relevant
    NDCG@k      = DCG / ideal DCG     MAP@k    = Σ_i P@i·rel_i / min(relevant, k)
    hit rate@k  = share of users with any hit
    coverage    = share of recommendable items that appear in at least one list
"""

from __future__ import annotations

from typing import Any

import numpy as np

from batch.config import JobConfig
from batch.data.interactions import Dataset, Interactions
from batch.features.negatives import is_seen, seen_keys
from batch.rundir import RunDir
from batch.serve.lists import TopLists
from batch.serve.recommend import candidates, exclusion, popularity_order, recommend, top_unseen
from batch.serve.repackage import vectors_for


def relevant_pairs(test: Interactions, threshold: float) -> Interactions:
    """The held-out interactions that count as relevant."""
    if len(test) and not np.isnan(test.rating).all():
        return test.take(test.rating >= threshold)
    return test


def ranking_metrics(top_items: np.ndarray, users: np.ndarray, relevant: Interactions, n_items: int,
                    recommendable: int) -> dict[str, float]:
    """Metrics of lists ``top_items`` (int (n, k), best first, -1 for empty slots) of ``users``.

    ``relevant``: the relevant held-out pairs; ``recommendable``: how many items could appear
    (the denominator of coverage).
    """
    k = top_items.shape[1]
    n_rel = np.bincount(relevant.user, minlength=int(users.max(initial=-1)) + 1)[users]
    keys = seen_keys(relevant.user, relevant.item, n_items)
    hit = is_seen(keys, np.repeat(users, k), np.maximum(top_items.ravel(), 0), n_items).reshape(-1, k)
    hit &= top_items >= 0
    ok = n_rel > 0
    hits, n_rel, hit = hit.sum(1)[ok], n_rel[ok], hit[ok]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    precision_at = np.cumsum(hit, 1) / np.arange(1, k + 1)
    listed = np.unique(top_items[top_items >= 0])
    return {
        f"precision@{k}": _mean(hits / k),
        f"recall@{k}": _mean(hits / n_rel),
        f"ndcg@{k}": _mean((hit * discount).sum(1) / ideal),
        f"map@{k}": _mean((precision_at * hit).sum(1) / np.minimum(n_rel, k)),
        f"hit_rate@{k}": _mean(hits > 0),
        "coverage": round(len(listed) / max(recommendable, 1), 6),
        "users_evaluated": int(ok.sum()),
    }


def popularity_top(dataset: Dataset, users: np.ndarray, k: int, candidates: np.ndarray) -> np.ndarray:
    """The baseline: each user's k most popular (in training) candidate items not seen in training.
    int (n, k), -1 for empty slots; ties by smaller item index."""
    popularity = np.bincount(dataset.train.item, minlength=dataset.n_items)
    order = popularity_order(popularity, candidates)
    return top_unseen(order, users, k, dataset.train.matrix(dataset.n_users, dataset.n_items))


def _mean(values: np.ndarray) -> float:
    return round(float(np.mean(values)), 6) if len(values) else float("nan")


def evaluate_run(cfg: JobConfig, run: RunDir) -> dict[str, Any]:
    """Evaluate a run directory's model on its held-out split; stored under ``evaluate`` in
    metrics.json. Uses the local exact search whatever the production search engine is."""
    from batch.serve.search.local import LocalSearcher

    dataset, vectors, k = run.load_dataset(), vectors_for(run), cfg.evaluate.k
    relevant = relevant_pairs(dataset.test, cfg.train.threshold)
    users = _sample(np.unique(relevant.user).astype(np.int64), cfg.evaluate.max_users, cfg.data.seed)
    allowed, _ = candidates(vectors, dataset.items, cfg.search)
    result: dict[str, Any] = {"k": k, "relevance": _relevance(dataset, cfg.train.threshold)}
    if not len(users):
        result.update(skipped="no relevant held-out interactions (split none?)", headline={})
        run.update_metrics("evaluate", result)
        return result
    searcher = LocalSearcher(method="exact", batch_size=cfg.search.batch_size)
    lists = recommend(vectors, searcher, top=k, candidates=allowed, users=users,
                      exclude=exclusion(dataset, include_held_out=False))
    model = ranking_metrics(_as_matrix(lists, users, k), users, relevant, dataset.n_items, int(allowed.sum()))
    baseline = ranking_metrics(popularity_top(dataset, users, k, allowed), users, relevant, dataset.n_items,
                               int(allowed.sum()))
    classifier = run.read_json("metrics.json").get("train", {}).get("test", {})
    result.update(model=model, popularity=baseline, classifier=classifier,
                  headline={key: model[key] for key in (f"precision@{k}", f"ndcg@{k}", f"hit_rate@{k}", "coverage")}
                  | {f"popularity_ndcg@{k}": baseline[f"ndcg@{k}"]})
    run.update_metrics("evaluate", result)
    return result


def _as_matrix(lists: TopLists, users: np.ndarray, k: int) -> np.ndarray:
    """Lists of ``users`` (sorted) as an int (n, k) matrix of items, -1 for empty slots."""
    out = np.full((len(users), k), -1, np.int64)
    out[np.searchsorted(users, lists.user), lists.rank - 1] = lists.item
    return out


def _sample(users: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(users) <= limit:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=limit, replace=False))


def _relevance(dataset: Dataset, threshold: float) -> str:
    if len(dataset.test) and not np.isnan(dataset.test.rating).all():
        return f"held-out rating >= {threshold:g}"
    return "any held-out interaction"
