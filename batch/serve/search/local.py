"""The local search engine: exact inner-product top-x (numpy BLAS), or approximate with faiss.

:func:`exact_topk` is the kernel (the SageMaker emulator reuses it to imitate k-NN);
:class:`LocalSearcher` turns a :class:`SearchRequest` into :class:`TopLists` with it or with an
approximate index, and for approximate methods measures recall@x against exact search on a seeded
sample of users.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from batch.errors import ConfigError
from batch.lists import SOURCE_MODEL, TopLists
from batch.serve.repackage import COLD, Vectors
from batch.serve.search import SearchRequest, SearchResult, probabilities
from batch.serve.search.exact import NonFiniteVectorError, exact_topk, finite_vectors
from batch.serve.search.table import ItemTable, empty_slots

__all__ = ["LocalSearcher", "NonFiniteVectorError", "exact_topk", "recall_at", "top_lists"]

METHODS = ("exact", "ivf", "hnsw")
log = logging.getLogger("topx.search")


class LocalSearcher:
    """Top-x lists on this machine.

    ``method``: ``exact``, or approximate ``ivf`` / ``hnsw`` (needs faiss). ``batch_size``: users
    per progress step; exact search holds float32 scores of at most min(batch_size, 128) users ×
    the candidate items per thread. ``nprobe``: IVF lists searched per user. ``recall_sample``:
    users on which an approximate search is checked against exact search (0: not checked);
    ``seed`` picks them.
    After :meth:`search`, ``report`` holds ``method``, ``users`` and for approximate methods
    ``recall_at_x``, ``sample_users`` and the index parameters.
    """

    def __init__(self, method: str = "exact", batch_size: int = 2048, nprobe: int = 16, recall_sample: int = 1000,
                 seed: int = 0):
        if method not in METHODS:
            raise ConfigError(f"search.method must be one of {', '.join(METHODS)}; got {method!r}")
        if batch_size < 1 or nprobe < 1 or recall_sample < 0:
            raise ConfigError(f"search.batch_size and search.nprobe must be > 0 and search.recall_sample ≥ 0; "
                              f"got {batch_size}, {nprobe}, {recall_sample}")
        self.method, self.batch_size, self.nprobe = method, batch_size, nprobe
        self.recall_sample, self.seed = recall_sample, seed

    def search(self, request: SearchRequest) -> SearchResult:
        """Lists of the request's users that are not COLD, grouped by user in request order."""
        vectors = request.vectors
        users = request.user_indices()
        users = users[vectors.user_status[users] != COLD]
        queries = vectors.users[users]
        exclude = request.exclude[users] if request.exclude is not None else None
        if self.method == "exact":
            item, inner = exact_topk(queries, vectors.items, request.top, exclude=exclude,
                                     candidates=request.candidates, batch_size=self.batch_size)
            report = {"method": "exact", "users": len(users)}
        else:
            item, inner, report = self._approximate(queries, vectors.items, request, exclude)
        log.info("search %s", " ".join(f"{key}={value}" for key, value in report.items()))
        return SearchResult(top_lists(vectors, users, item, inner), report)

    def _approximate(self, queries: np.ndarray, items: np.ndarray, request: SearchRequest,
                     exclude: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Item int32 (n, x) and inner float32 (n, x) from the approximate index, and its report."""
        from batch.serve.search.approximate import ApproximateIndex, approximate_topk

        queries, items = finite_vectors(queries, "user"), finite_vectors(items, "item")
        table = ItemTable.build(items, request.candidates, request.top)
        report = {"method": self.method, "users": len(queries)}
        if table.size == 0:  # nothing to index: every list is empty
            return *empty_slots(len(queries), request.top), report
        index = ApproximateIndex(self.method, table, nprobe=self.nprobe)
        item, inner = approximate_topk(queries, index, request.top, exclude=exclude, batch_size=self.batch_size)
        return item, inner, {**report, **index.params, **self._recall(item, queries, items, request, exclude)}

    def _recall(self, item: np.ndarray, queries: np.ndarray, items: np.ndarray, request: SearchRequest,
                exclude: sp.csr_matrix | None) -> dict[str, Any]:
        """recall@x of the approximate lists ``item`` (int32 (n, x)) against exact search on a sample."""
        sample = self._sample(len(queries))
        if not len(sample):
            return {"recall_at_x": None, "sample_users": 0}
        exact, _ = exact_topk(queries[sample], items, request.top, exclude=None if exclude is None else exclude[sample],
                              candidates=request.candidates, batch_size=self.batch_size)
        return {"recall_at_x": round(recall_at(item[sample], exact), 5), "sample_users": len(sample)}

    def _sample(self, n: int) -> np.ndarray:
        """Sorted positions of up to ``recall_sample`` users, the same for the same seed and n."""
        chosen = np.random.default_rng(self.seed).choice(n, size=min(self.recall_sample, n), replace=False)
        return np.sort(chosen)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact lists' items (int (n, x), -1 = empty) that ``found`` (int (n, x)) also
    lists, over all n users together; 1.0 when the exact lists are empty."""
    width = int(max(found.max(initial=0), exact.max(initial=0))) + 1
    rows = np.arange(len(exact), dtype=np.int64)[:, None] * width
    wanted = (rows + exact)[exact >= 0]
    got = (rows + found)[found >= 0]
    return float(np.isin(wanted, got).mean()) if wanted.size else 1.0


def top_lists(vectors: Vectors, users: np.ndarray, item: np.ndarray, inner: np.ndarray) -> TopLists:
    """TopLists from per-user slots: ``users`` int64 (n,), ``item`` int (n, x) with -1 in the empty
    (trailing) slots, ``inner`` float32 (n, x). score = float32(inner + c_u), added in float64."""
    n, x = item.shape
    if (item[:, -1:] >= 0).all():  # the usual case, every list full: no masking needed
        user, rank = np.repeat(users, x), np.tile(np.arange(1, x + 1, dtype=np.int32), n)
        item, inner = item.ravel(), inner.ravel()
    else:
        filled = item >= 0
        user = np.repeat(users, filled.sum(axis=1))
        rank = (np.nonzero(filled)[1] + 1).astype(np.int32)  # empty slots only trail, so ranks are 1..len
        item, inner = item[filled], inner[filled]
    user = user.astype(np.int32)
    score = (inner.astype(np.float64) + vectors.user_const[user].astype(np.float64)).astype(np.float32)
    return TopLists(user, rank, item.astype(np.int32), score, probabilities(score, vectors.predictor_type),
                    np.full(len(user), SOURCE_MODEL, np.uint8))
