"""Search: each user's best x items by inner product of the repackaged vectors.

One small contract, two engines: ``local`` (exact BLAS/faiss search, or approximate faiss
IVF/HNSW) and ``sagemaker`` (k-NN INNER_PRODUCT index + batch transform). The engine is chosen in
:func:`make_searcher` and nowhere else. Every engine returns the same :class:`TopLists` for the
same request: best first, ties broken by the smaller item index, excluded items never listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from batch.config import JobConfig
from batch.serve.lists import TopLists
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


class Searcher(Protocol):
    def search(self, request: SearchRequest) -> TopLists:
        """Top-x lists of the request's users whose vectors come from the model; users with
        status COLD are left out (the caller gives them the popularity list)."""


def make_searcher(cfg: JobConfig, **context: Any) -> Searcher:
    """The engine for ``cfg.search``: local exact/approximate, or SageMaker k-NN. ``context`` is
    for SageMaker only: ``run_id`` and injected boto3 clients (``sagemaker_client``, ``s3_client``)."""
    if cfg.search.backend == "sagemaker":
        from batch.serve.search.sagemaker import SageMakerKnnSearcher

        return SageMakerKnnSearcher(cfg, **context)
    from batch.serve.search.local import LocalSearcher

    return LocalSearcher(method=cfg.search.method, batch_size=cfg.search.batch_size, nprobe=cfg.search.nprobe,
                         recall_sample=cfg.search.recall_sample)


def probabilities(scores: np.ndarray, predictor_type: str) -> np.ndarray:
    """sigmoid(score) for a binary classifier, NaN for a regressor: float32."""
    if predictor_type != "binary_classifier":
        return np.full(len(scores), np.nan, np.float32)
    return (1.0 / (1.0 + np.exp(-scores.astype(np.float64)))).astype(np.float32)
