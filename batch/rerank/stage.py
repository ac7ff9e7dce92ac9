"""The re-ranker in a run: the published lists re-ranked, and the held-out evaluation's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from batch.config import JobConfig
from batch.data.interactions import Dataset
from batch.lists import SOURCE_RERANKED, TopLists
from batch.rerank.rerank import known, rerank

if TYPE_CHECKING:
    from batch.rerank.ncf import NeuMF
    from batch.rundir import RunDir


def reranker_for(cfg: JobConfig, run: RunDir, dataset: Dataset) -> tuple[NeuMF, np.ndarray, np.ndarray]:
    """The run's NeuMF and which users and items it knows (boolean masks: a training interaction)."""
    from batch.rerank.train import load_reranker

    model = load_reranker(cfg, run, dataset)
    return (model, known(dataset.train.user, dataset.n_users), known(dataset.train.item, dataset.n_items))


def rerank_run(cfg: JobConfig, run: RunDir, candidates: TopLists) -> tuple[TopLists, dict[str, Any]]:
    """The run's lists: ``candidates`` (each user's FM top ``rerank.candidates``) re-ranked and
    cut to ``search.top``; and what re-ranking did, for the search stage's summary."""
    dataset = run.load_dataset()
    model, known_users, known_items = reranker_for(cfg, run, dataset)
    lists = rerank(candidates, model, cfg.search.top, known_users, known_items)
    reranked = lists.user[lists.source == SOURCE_RERANKED]
    return lists, {"rerank_candidates": int(max(cfg.rerank.candidates, cfg.search.top)),
                   "reranked_users": int(np.unique(reranked).size)}


def evaluate_reranked(cfg: JobConfig, run: RunDir, dataset: Dataset, candidates: TopLists, users: np.ndarray,
                      relevant: Any, ks: list[int], catalogue: Any, result: dict[str, Any]):
    """Add the re-ranked evaluation lists' metrics to ``result`` (``reranked``, ``beyond.reranked``
    and the re-ranker's digest); returns NeuMF as a scorer for the sampled protocol.
    ``candidates``: the evaluated ``users``' FM lists, training interactions excluded, each at
    least ``rerank.candidates`` long."""
    from batch import lineage
    from batch.metrics.accuracy import ranking_metrics
    from batch.metrics.beyond import beyond_accuracy
    from batch.rerank.ncf import predict
    from batch.serve.evaluate import as_matrix

    model, known_users, known_items = reranker_for(cfg, run, dataset)
    top = as_matrix(rerank(candidates, model, max(ks), known_users, known_items), users, max(ks))
    result["reranked"] = ranking_metrics(top, users, relevant, dataset.n_items, ks)
    result["beyond"]["reranked"] = beyond_accuracy(top, catalogue, (cfg.evaluate.k, cfg.search.top))
    result.update(lineage.reranker(run))
    return lambda u, i: predict(model, u, i)
