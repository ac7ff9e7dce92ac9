"""Offline evaluation on the held-out split: ranking metrics at several k, next to a popularity
baseline, and what the lists do beyond accuracy.

Lists are made as in production, except that only the *training* interactions are excluded (the
held-out ones are what we hope to find). An item is relevant to a user when the user's held-out
rating is ≥ the threshold, or, for data without ratings, when the user has any held-out
interaction with it. Accuracy (:mod:`batch.metrics.accuracy`) is averaged over users with at
least one relevant held-out item, at k = 1, 5, 10, 20, 50, the configured k and the published x.
Beyond accuracy (:mod:`batch.metrics.beyond`: coverage, Gini, novelty, diversity, share of the
most popular items) is reported at k and at x for the same users' model and popularity lists,
and for the lists the search stage made for every user (``published``).

With a re-ranker (``[rerank] model``), the FM's lists are re-ranked as in production and
reported as ``reranked`` beside ``model`` (the FM's lists) and ``popularity``; the publish gate
judges the ``reranked`` figures, since those are the lists a run publishes. ``sampled`` holds
the NCF paper's protocol (HR@k and NDCG@k, each held-out item among 100 distinct items the user
never interacted with, sampled without replacement) for the FM and the re-ranker.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from batch.config import EVALUATE_CUTOFFS, JobConfig
from batch.data.interactions import Dataset, Interactions
from batch.errors import StaleArtifactError
from batch.lists import TopLists
from batch.metrics.accuracy import ranking_metrics
from batch.metrics.beyond import Catalogue, beyond_accuracy
from batch.rundir import RunDir
from batch.serve.recommend import candidates, exclusion, popularity_order, recommend, top_unseen
from batch.serve.repackage import vectors_for

# Accuracy is reported at these k, and at the configured k and the published list length x.
CUTOFFS = EVALUATE_CUTOFFS
# held-out pairs the NCF protocol ranks at most (a seeded sample beyond): see sampled_protocol
SAMPLED_PAIRS = 50_000

log = logging.getLogger("topx.serve")


def relevant_pairs(test: Interactions, threshold: float) -> Interactions:
    """The held-out interactions that count as relevant."""
    if len(test) and not np.isnan(test.rating).all():
        return test.take(test.rating >= threshold)
    return test


def popularity_top(dataset: Dataset, users: np.ndarray, k: int, candidates: np.ndarray) -> np.ndarray:
    """The baseline: each user's k most popular (in training) candidate items not seen in training.
    int (n, k), -1 for empty slots; ties by smaller item index."""
    popularity = np.bincount(dataset.train.item, minlength=dataset.n_items)
    order = popularity_order(popularity, candidates)
    return top_unseen(order, users, k, dataset.train.matrix(dataset.n_users, dataset.n_items))


def evaluate_run(cfg: JobConfig, run: RunDir) -> dict[str, Any]:
    """Evaluate a run directory's model on its held-out split; stored under ``evaluate`` in
    metrics.json. Uses the local exact search whatever the production search engine is."""
    from batch.serve.search.local import LocalSearcher

    dataset, vectors, k, x = run.load_dataset(), vectors_for(run), cfg.evaluate.k, cfg.search.top
    ks = sorted({*CUTOFFS, k, x})
    relevant = relevant_pairs(dataset.test, cfg.train.threshold)
    users = _sample(np.unique(relevant.user).astype(np.int64), cfg.evaluate.max_users, cfg.data.seed)
    allowed, _ = candidates(vectors, dataset.items, cfg.search, dataset.item_features, dataset)
    result: dict[str, Any] = {"k": k, "x": x, "ks": ks, "relevance": _relevance(dataset, cfg.train.threshold)}
    if not len(users):
        result.update(skipped="no relevant held-out interactions (split none?)", headline={})
        run.update_metrics("evaluate", result)
        return result
    searcher = LocalSearcher(method="exact", batch_size=cfg.search.batch_size)
    depth = max(max(ks), cfg.rerank.candidates) if cfg.rerank.enabled else max(ks)
    found = recommend(vectors, searcher, top=depth, candidates=allowed, users=users,
                      exclude=exclusion(dataset, include_held_out=False)).lists
    lists = found.take(np.flatnonzero(found.rank <= max(ks)))
    model_top, popular_top = as_matrix(lists, users, max(ks)), popularity_top(dataset, users, max(ks), allowed)
    catalogue = Catalogue.of(dataset, vectors.items[:, :-1], allowed)
    result.update(model=ranking_metrics(model_top, users, relevant, dataset.n_items, ks),
                  popularity=ranking_metrics(popular_top, users, relevant, dataset.n_items, ks),
                  beyond={"model": beyond_accuracy(model_top, catalogue, (k, x)),
                          "popularity": beyond_accuracy(popular_top, catalogue, (k, x)),
                          **_published(run, catalogue, x, cfg.evaluate.max_users, cfg.data.seed)},
                  classifier=run.read_json("metrics.json").get("train", {}).get("test", {}))
    scorers = {"model": vectors.scores}
    if cfg.rerank.enabled:
        from batch.rerank.stage import evaluate_reranked

        scorers["reranked"] = evaluate_reranked(cfg, run, dataset, found, users, relevant, ks, catalogue, result)
    result["sampled"] = sampled_protocol(dataset, relevant, users, scorers, k, cfg.data.seed)
    result["headline"] = _headline(result, k, x)
    run.update_metrics("evaluate", result)
    return result


def sampled_protocol(dataset: Dataset, relevant: Interactions, users: np.ndarray, scorers: dict,
                     k: int, seed: int) -> dict[str, Any]:
    """The NCF paper's figures (:mod:`batch.rerank.protocol`) of each scorer over the evaluated
    ``users``' relevant held-out pairs whose user and item have training interactions, against
    100 distinct items with training interactions that the user never interacted with, drawn
    without replacement per pair (seeded by ``seed``; fewer where the user has not that many).
    Beyond :data:`SAMPLED_PAIRS` such pairs, a seeded sample of that many is ranked
    (``eligible_pairs`` says how many there were): the figures' standard error is then below
    0.003, and the protocol costs seconds, not minutes, on 25M interactions."""
    from batch.rerank.protocol import sampled_ranking

    trained_users = np.bincount(dataset.train.user, minlength=dataset.n_users) > 0
    trained_items = np.bincount(dataset.train.item, minlength=dataset.n_items) > 0
    eligible = np.flatnonzero(np.isin(relevant.user, users) & trained_users[relevant.user]
                              & trained_items[relevant.item])
    pairs = relevant.take(_sample(eligible, SAMPLED_PAIRS, seed))
    every = dataset.all_interactions()
    seen = np.unique(every.user.astype(np.int64) * dataset.n_items + every.item)
    ranked = sampled_ranking(scorers, pairs.user, pairs.item, seen, dataset.n_items, np.flatnonzero(trained_items),
                             k=k, seed=seed)
    return {**ranked, "eligible_pairs": int(len(eligible))}


def _published(run: RunDir, catalogue: Catalogue, x: int, max_users: int, seed: int) -> dict[str, Any]:
    """Beyond-accuracy metrics of the search stage's lists (everything seen excluded) of every
    user, or of a seeded sample of ``max_users`` users, when the run has them (a sharded run
    searches in its shard jobs)."""
    if not run.file("lists.npz").exists():
        return {}
    try:
        lists = run.load_derived("lists.npz", TopLists, "not evaluated")
    except StaleArtifactError as exc:
        log.info("%s", exc)
        return {}
    users = _sample(np.unique(lists.user).astype(np.int64), max_users, seed)
    return {"published": beyond_accuracy(as_matrix(lists, users, x), catalogue, (x,))}


def _headline(result: dict[str, Any], k: int, x: int) -> dict[str, float]:
    """The figures the summary line shows."""
    model, beyond = result["model"], result["beyond"]["model"]
    return {f"precision@{k}": model[f"precision@{k}"], f"ndcg@{k}": model[f"ndcg@{k}"],
            f"hit_rate@{k}": model[f"hit_rate@{k}"], f"catalogue_coverage@{k}": beyond[f"catalogue_coverage@{k}"],
            f"catalogue_coverage@{x}": beyond[f"catalogue_coverage@{x}"],
            f"popularity_ndcg@{k}": result["popularity"][f"ndcg@{k}"],
            **({f"reranked_ndcg@{k}": result["reranked"][f"ndcg@{k}"]} if "reranked" in result else {})}


def as_matrix(lists: TopLists, users: np.ndarray, k: int) -> np.ndarray:
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
