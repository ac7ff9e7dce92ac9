"""Search: each user's best x items by inner product of the repackaged vectors.

One small contract, two engines: ``local`` (exact BLAS/faiss search, or approximate faiss
IVF/HNSW) and ``sagemaker`` (k-NN INNER_PRODUCT index + batch transform). The engine is chosen in
:func:`make_searcher` and nowhere else. Every engine returns the same :class:`TopLists` for the
same request (in a :class:`SearchResult`, with its report): best first, ties broken by the
smaller item index, excluded items never listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from batch.aws.clients import NO_CLIENTS, AwsClients
from batch.config import JobConfig
from batch.lists import TopLists
from batch.serve.repackage import Vectors


@dataclass(frozen=True)
class SearchRequest:
    """What to search.

    ``vectors``: the repackaged model. ``top``: list length x. ``exclude``: CSR bool
    (n_users, n_items) of items each user must not get (already seen), or None.
    ``candidates``: bool (n_items,) of items that may be recommended at all (recommendable,
    allow-listed, not deny-listed). ``users``: int64 internal indices of the users to search
    (sorted), e.g. one shard, or None for every user.
    """

    vectors: Vectors
    top: int
    exclude: sp.csr_matrix | None
    candidates: np.ndarray
    users: np.ndarray | None = None

    def user_indices(self) -> np.ndarray:
        if self.users is None:
            return np.arange(len(self.vectors.users), dtype=np.int64)
        return np.asarray(self.users, dtype=np.int64)


@dataclass
class SearchResult:
    """What a search found: ``lists``, and ``report``, what the engine did (method and users; the
    approximate index's settings and sampled recall; the SageMaker jobs), for the run summary."""

    lists: TopLists
    report: dict[str, Any] = field(default_factory=dict)


class Searcher(Protocol):
    def search(self, request: SearchRequest) -> SearchResult:
        """Top-x lists of the request's users whose vectors come from the model; users with
        status COLD are left out (the caller gives them the popularity list)."""


def make_searcher(cfg: JobConfig, *, run_id: str | None = None, clients: AwsClients = NO_CLIENTS) -> Searcher:
    """The engine for ``cfg.search``: local exact/approximate, or SageMaker k-NN. ``run_id``
    (names its jobs) and ``clients`` are for SageMaker only."""
    if cfg.search.backend == "sagemaker":
        from batch.serve.search.sagemaker import SageMakerKnnSearcher

        return SageMakerKnnSearcher(cfg, run_id=run_id, clients=clients)
    from batch.serve.search.local import LocalSearcher

    return LocalSearcher(method=cfg.search.method, batch_size=cfg.search.batch_size, nprobe=cfg.search.nprobe,
                         recall_sample=cfg.search.recall_sample)


def make_keyed_searcher(cfg: JobConfig, what: str, *, run_id: str, clients: AwsClients = NO_CLIENTS
                        ) -> Searcher | None:
    """The engine of an item-keyed search (``what``: ``similar`` items or ``audience``s,
    :mod:`batch.serve.similar`): SageMaker k-NN when ``cfg.search.backend`` is sagemaker (its jobs
    named ``knn-<what>``), else None: the local exact search, whatever ``search.method`` says."""
    if cfg.search.backend != "sagemaker":
        return None
    from batch.serve.search.sagemaker import SageMakerKnnSearcher

    return SageMakerKnnSearcher(cfg, run_id=run_id, clients=clients, name=f"knn-{what}")


def probabilities(scores: np.ndarray, predictor_type: str) -> np.ndarray:
    """sigmoid(score) for a binary classifier, NaN for a regressor: float32."""
    if predictor_type != "binary_classifier":
        return np.full(len(scores), np.nan, np.float32)
    return (1.0 / (1.0 + np.exp(-scores.astype(np.float64)))).astype(np.float32)
