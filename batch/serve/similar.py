"""Item-keyed lists from the same vectors and the same exact search as the users' lists.

* **Similar items** ("because you liked X"): for each item the ``top`` items whose factors are
  closest, cosine by default or plain inner product. The factors are the item half of the model,
  p_i = Vᵀx_i (the item's id column plus its item features, without the linear term that
  :class:`~batch.serve.repackage.Vectors` appends): the space in which a user's half is scored
  against items. In implicit mode the users' history block is another set of item rows of V, on
  the *user* side; it says which items shape a user, not what an item is, and is not used here.
* **Audiences** (email campaigns): for each given item the ``size`` users with the highest FM
  prediction ŷ = a_u·a_i + c_u who have not interacted with it. Adding the user constant as one
  more coordinate, user ``[a_u, c_u]`` against item ``[a_i, 1]``, makes the inner product ŷ
  itself, so the exact engine ranks users by the score that is published.

Both search with :func:`~batch.serve.search.exact.exact_topk` (memory bounded by its blocks of
queries; ties to the smaller index, so lists are deterministic), or, with ``search.backend =
"sagemaker"``, with SageMaker k-NN (:func:`knn_keyed`): an index of the item factors queried by
the item factors (similar items), an index of the users queried by the items (audiences), each
ranked by the same exactly rounded inner products, so the lists are the local search's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from batch.aws.knn_output import MAX_K
from batch.config import JobConfig, SimilarConfig
from batch.data.interactions import IdMap
from batch.errors import ConfigError, DataError
from batch.lists import KeyedLists
from batch.rundir import RunDir
from batch.serve.repackage import COLD, TRAINED, Vectors, vectors_for
from batch.serve.search import Searcher, SearchRequest
from batch.serve.search.exact import exact_topk

log = logging.getLogger("topx.serve")

METRICS = ("cosine", "inner_product")


def item_factors(vectors: Vectors, metric: str) -> np.ndarray:
    """float32 (n_items, k): p_i, scaled to unit length for ``cosine`` (a zero vector stays zero)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    factors = vectors.items[:, :-1].astype(np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(factors, axis=1, keepdims=True)
        factors = np.divide(factors, norms, out=np.zeros_like(factors), where=norms > 0)
    return factors.astype(np.float32)


def knn_keyed(searcher: Searcher, keys: np.ndarray, queries: np.ndarray, index: np.ndarray, top: int,
              exclude: sp.csr_matrix | None, candidates: np.ndarray) -> KeyedLists:
    """The ``top`` rows of ``index`` (float32 (m, d)) with the largest inner product for each of
    ``queries`` (float32 (n, d)), keyed by ``keys`` (int64 (n,)), found by ``searcher`` (SageMaker
    k-NN): the queries are its "users" with a constant of 0, the index its "items". ``exclude``:
    CSR (n, m); ``candidates``: bool (m,)."""
    n, m = len(queries), len(index)
    vectors = Vectors(users=queries, user_const=np.zeros(n, np.float32), items=index,
                      user_status=np.full(n, TRAINED, np.uint8), item_status=np.full(m, TRAINED, np.uint8),
                      popularity=np.zeros(m, np.int64), predictor_type="regressor")
    lists = searcher.search(SearchRequest(vectors, top, exclude, candidates)).lists
    return KeyedLists(np.asarray(keys, np.int64)[lists.user].astype(np.int32), lists.rank, lists.item, lists.score)


def similar_items(vectors: Vectors, cfg: SimilarConfig, candidates: np.ndarray | None = None,
                  items: np.ndarray | None = None, cap: tuple[np.ndarray, int] | None = None,
                  searcher: Searcher | None = None) -> KeyedLists:
    """The ``cfg.top`` most similar candidates of each of ``items`` (default every item the
    model knows, trained or from features alone), never the item itself. ``candidates``: bool
    (n_items,) items that may be listed (default: every item the model knows). ``cap``: at most
    so many items per category in a list (:func:`~batch.serve.recommend.category_cap`).
    ``searcher``: SageMaker k-NN instead of the local exact search (no ``cap``)."""
    known = vectors.item_status != COLD
    candidates = known if candidates is None else candidates & known
    items = np.flatnonzero(known) if items is None else np.asarray(items, np.int64)
    factors = item_factors(vectors, cfg.metric)
    n = len(factors)
    itself = sp.csr_matrix((np.ones(len(items), bool), (np.arange(len(items)), items)), shape=(len(items), n))
    if searcher is not None:
        if cap is not None:
            raise ConfigError("search.max_per_category needs the local exact search, not SageMaker k-NN")
        return knn_keyed(searcher, items, factors[items], factors, cfg.top, itself, candidates)
    if cap is None:
        value, score = exact_topk(factors[items], factors, cfg.top, exclude=itself, candidates=candidates,
                                  batch_size=cfg.batch_size)
    else:
        from batch.serve.capped import capped_topk

        value, score = capped_topk(factors[items], factors, cfg.top, *cap, exclude=itself, candidates=candidates,
                                   batch_size=cfg.batch_size)
    return KeyedLists.from_slots(items, value, score)


def audiences(vectors: Vectors, items: np.ndarray, size: int, exclude: sp.csr_matrix | None,
              batch_size: int = 128, searcher: Searcher | None = None) -> KeyedLists:
    """For each of ``items`` (int64 internal indices) the ``size`` users with the highest FM
    prediction, users without a model vector (COLD) left out. ``exclude``: CSR (n_users,
    n_items) of interactions; a user is never in the audience of an item it interacted with.
    ``searcher``: SageMaker k-NN (an index of the users) instead of the local exact search."""
    items = np.asarray(items, np.int64)
    users = np.hstack([vectors.users, vectors.user_const[:, None]]).astype(np.float32)
    queries = np.hstack([vectors.items[items], np.ones((len(items), 1), np.float32)])
    # the listed items' columns first, then transposed: transposing all of it costs 3× more
    seen = None if exclude is None else sp.csr_matrix(exclude[:, items].T, dtype=bool)
    if searcher is not None:
        return knn_keyed(searcher, items, queries, users, size, seen, vectors.user_status != COLD)
    value, score = exact_topk(queries, users, size, exclude=seen, candidates=vectors.user_status != COLD,
                              batch_size=batch_size)
    return KeyedLists.from_slots(items, value, score)


def similar_for_run(cfg: JobConfig, run: RunDir, searcher: Searcher | None = None) -> KeyedLists:
    """The run's similar items as ``cfg.similar`` asks, among the candidates its users' lists
    may hold (known to the model, allow list, deny list: :func:`~batch.serve.recommend.candidates`);
    ``searcher``: :func:`~batch.serve.search.make_keyed_searcher`'s."""
    from batch.serve.recommend import candidates, category_cap

    vectors, dataset = vectors_for(run), run.load_dataset()
    allowed, _ = candidates(vectors, dataset.items, cfg.search, dataset.item_features, dataset)
    return similar_items(vectors, cfg.similar, allowed, cap=category_cap(cfg.search, dataset), searcher=searcher)


def audience_items(location: str, items: IdMap) -> np.ndarray:
    """Internal indices (int64, ascending) of the item ids listed in the file ``location`` (one
    per line, ``#`` comments and blank lines ignored), or of every item for ``*``. Raises
    :class:`DataError` naming each unknown id by file and line."""
    from batch.serve.recommend import item_list

    if location == "*":
        return np.arange(len(items), dtype=np.int64)
    mask, unknown = item_list(location, items)
    if unknown:
        shown = "; ".join(f"{location}:{line}: {value!r}" for line, value in unknown[:10])
        raise DataError(f"{len(unknown)} item id(s) not in the catalogue: {shown}"
                        f"{' …' if len(unknown) > 10 else ''}", file=str(location))
    return np.flatnonzero(mask).astype(np.int64)


def audiences_for_run(cfg: JobConfig, run: RunDir, location: str | None = None, size: int | None = None,
                      searcher: Searcher | None = None) -> KeyedLists:
    """The audiences of the items listed in ``location`` (default ``cfg.audience.items``), of
    ``size`` users (default ``cfg.audience.size``); every interaction (train and held-out)
    excludes its user from that item's audience, as does a pair of the ``[search] suppress``
    file. Items that may not be recommended (unknown to the model, allow/deny lists, attribute
    and availability rules: :func:`~batch.serve.recommend.candidates`) get no audience.
    ``searcher``: :func:`~batch.serve.search.make_keyed_searcher`'s; SageMaker k-NN returns at
    most 1,024 neighbours, so an audience there is at most 1,024 users less the item's own."""
    from batch.serve.recommend import candidates, exclusion, suppressed_pairs

    dataset, vectors = run.load_dataset(), vectors_for(run)
    chosen = audience_items(location or cfg.audience.items, dataset.items)
    allowed, _ = candidates(vectors, dataset.items, cfg.search, dataset.item_features, dataset)
    if not allowed[chosen].all():
        log.warning("%d listed item(s) get no audience: unknown to the model, or left out by the allow/deny lists "
                    "or the attribute and availability rules", int((~allowed[chosen]).sum()))
    chosen = chosen[allowed[chosen]]
    exclude, _ = suppressed_pairs(cfg.search, dataset, exclusion(dataset, include_held_out=True))
    size = size or cfg.audience.size
    if searcher is not None and size > MAX_K:
        raise ConfigError(f"audience.size = {size}: SageMaker k-NN returns at most {MAX_K} users per item; use a "
                          f"smaller size or search.backend = local")
    return audiences(vectors, chosen, size, exclude, searcher=searcher)


def write_csv(lists: KeyedLists, keys: IdMap, values: IdMap, header: tuple[str, str], path: str | Path,
              titles=None) -> None:
    """``lists`` as CSV with external ids: ``item_id, rank, <header[1]>, score`` (``header[0]``
    names the key column), plus ``title`` of the listed item when ``titles`` (aligned with
    ``values``) is given."""
    from batch.serve.recommend import _csv_field

    names = [header[0], "rank", header[1], "score"] + (["title"] if titles is not None else [])
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(",".join(names) + "\n")
        for part in lists.chunks(100_000):
            cols = [keys.ids[part.key], part.rank, values.ids[part.value], np.char.mod("%.6g", part.score)]
            if titles is not None:
                cols.append([("" if t is None else t) for t in np.asarray(titles, dtype=object)[part.value]])
            out.writelines(",".join(map(_csv_field, row)) + "\n" for row in zip(*cols, strict=True))
