"""Beyond accuracy: what a set of lists does to the catalogue, whatever the held-out split says.

For lists at depth k (int (n, k) item indices, -1 for empty slots), over the candidate items C
(those that could be recommended) and c_i = how many lists hold item i:

    catalogue_coverage@k  |{i ∈ C: c_i > 0}| / |C|
    gini@k                Gini index of (c_i, i ∈ C): 0 when every candidate is listed equally
                          often, → 1 when a few items fill every list
    novelty@k             mean over filled slots of −log2(u_i / n_users), u_i = training users of
                          item i (taken as 1 when none): the self-information of a recommendation
    ild@k                 intra-list diversity: mean over lists of the mean pairwise cosine
                          distance 1 − cos(v_i, v_j) of the items' factor vectors
    ild_genre@k           the same over binary genre vectors, for items with a genre (when the
                          catalogue has genres)
    top1pct_share@k       share of filled slots taken by the 1% most popular candidates (at least
                          one item; by training users, ties by smaller index)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.data.interactions import Dataset

GENRE_PREFIX = "genre="  # item feature columns that name a genre (MovieLens: genre=Comedy)


@dataclass(frozen=True)
class Catalogue:
    """What the metrics need to know about the items.

    ``candidates``: bool (n_items,); ``popularity``: int64 (n_items,) distinct training users per
    item; ``n_users``: users in the data set; ``factors``: float32 (n_items, d) item factor vectors;
    ``genres``: float32 (n_items, g) 0/1 genre flags, or None when items have no genres.
    """

    candidates: np.ndarray
    popularity: np.ndarray
    n_users: int
    factors: np.ndarray
    genres: np.ndarray | None = None

    @classmethod
    def of(cls, dataset: Dataset, factors: np.ndarray, candidates: np.ndarray) -> Catalogue:
        """The catalogue of ``dataset`` with item ``factors`` (float (n_items, d))."""
        seen = dataset.train.matrix(dataset.n_users, dataset.n_items)
        popularity = np.diff(seen.tocsc().indptr).astype(np.int64)
        return cls(candidates, popularity, dataset.n_users, np.asarray(factors, np.float32), genre_flags(dataset))

    def most_popular(self, share: float = 0.01) -> np.ndarray:
        """bool (n_items,): the ``share`` most popular candidates (at least one)."""
        cand = np.flatnonzero(self.candidates)
        n = max(1, math.ceil(share * len(cand)))
        order = cand[np.lexsort((cand, -self.popularity[cand]))]
        mask = np.zeros(len(self.candidates), bool)
        mask[order[:n]] = True
        return mask


def genre_flags(dataset: Dataset) -> np.ndarray | None:
    """float32 (n_items, g) 0/1 flags of the item feature columns named ``genre=…``; None if none."""
    table = dataset.item_features
    if table is None:
        return None
    cols = [j for j, name in enumerate(table.columns) if name.startswith(GENRE_PREFIX)]
    if not cols:
        return None
    return (sp.csr_matrix(table.matrix)[:, cols].toarray() != 0).astype(np.float32)


def beyond_accuracy(top_items: np.ndarray, catalogue: Catalogue, ks: Iterable[int] | None = None) -> dict[str, float]:
    """The metrics above for the first k columns of ``top_items`` at each k of ``ks`` (default:
    the depth). Keys ``catalogue_coverage@k`` …; ``ild_genre@k`` only when there are genres."""
    out: dict[str, float] = {}
    top1 = catalogue.most_popular()
    for k in sorted(set(ks or [top_items.shape[1]])):
        top = top_items[:, :k]
        filled = top[top >= 0]
        counts = np.bincount(filled, minlength=len(catalogue.candidates))[catalogue.candidates]
        out[f"catalogue_coverage@{k}"] = _round(np.count_nonzero(counts) / max(len(counts), 1))
        out[f"gini@{k}"] = _round(gini(counts))
        out[f"novelty@{k}"] = _round(novelty(filled, catalogue.popularity, catalogue.n_users))
        out[f"ild@{k}"] = _round(intra_list_diversity(top, catalogue.factors))
        if catalogue.genres is not None:
            out[f"ild_genre@{k}"] = _round(intra_list_diversity(top, catalogue.genres, skip_empty=True))
        out[f"top1pct_share@{k}"] = _round(top1[filled].mean() if len(filled) else float("nan"))
    return out


def gini(counts: np.ndarray) -> float:
    """Gini index of non-negative ``counts``: Σ_i (2i − n − 1) x_(i) / (n Σ x), x ascending.
    NaN when all are zero."""
    x = np.sort(np.asarray(counts, np.float64))
    n, total = len(x), x.sum()
    if not n or total == 0:
        return float("nan")
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def novelty(items: np.ndarray, popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information −log2(u_i / n_users) of ``items`` (int (m,)), u_i ≥ 1."""
    if not len(items):
        return float("nan")
    return float(np.mean(-np.log2(np.maximum(popularity[items], 1) / max(n_users, 1))))


def intra_list_diversity(top: np.ndarray, vectors: np.ndarray, *, skip_empty: bool = False) -> float:
    """Mean over lists of the mean pairwise cosine distance between the ``vectors`` (float
    (n_items, d)) of each list's items. A zero vector is at distance 1 from every other, unless
    ``skip_empty``, which leaves it out of its list. Lists with fewer than two items are skipped.

    Uses Σ_{i≠j} u_i·u_j = ‖Σ u_i‖² − Σ ‖u_i‖² for unit vectors u, with Σ u_i as one sparse
    (lists × items) by dense (items × d) product: O(n k d), no n × k × d gather."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors, dtype=np.float64), where=norms > 0)
    present = (norms[:, 0] > 0) if skip_empty else np.ones(len(vectors), bool)
    member = (top >= 0) & present[np.maximum(top, 0)]
    m = member.sum(1)
    lists = sp.csr_matrix((np.ones(int(m.sum())), top[member], np.r_[0, np.cumsum(m)]),
                          shape=(len(top), len(vectors)))
    cos_sum = ((lists @ unit) ** 2).sum(1) - lists @ (unit ** 2).sum(1)
    ok = m >= 2
    values = 1.0 - cos_sum[ok] / (m[ok] * (m[ok] - 1.0))
    return float(values.mean()) if len(values) else float("nan")


def _round(value: float) -> float:
    return round(float(value), 6)
