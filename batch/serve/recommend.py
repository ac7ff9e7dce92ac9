"""Top-x lists for every user: the search engine for users the model knows, popularity for the rest.

The caller decides what is excluded: publishing excludes every known interaction (train and
held-out: the user has seen them all); evaluation excludes training interactions only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from batch import storage
from batch.config import JobConfig, SearchConfig
from batch.data.interactions import Dataset, FeatureTable, IdMap, Interactions
from batch.errors import ConfigError, DataError, NoCandidatesError
from batch.lists import SOURCE_NAMES, SOURCE_POPULARITY, TopLists
from batch.serve.repackage import COLD, Vectors, vectors_for
from batch.serve.search import Searcher, SearchRequest, SearchResult, probabilities

if TYPE_CHECKING:
    from batch.rundir import RunDir

log = logging.getLogger("topx.serve")


@dataclass
class RunSearch:
    """A run's lists and what the search did: the allow/deny lists' counts and the engine's report."""

    lists: TopLists
    report: dict[str, Any] = field(default_factory=dict)


def search_run(cfg: JobConfig, run: RunDir, searcher: Searcher, users: np.ndarray | None = None) -> RunSearch:
    """The lists of ``users`` (default all) of the run in ``run``, as ``cfg.search`` asks: its
    vectors, the allowed candidates, seen items (train and held-out) excluded unless
    ``exclude_seen`` is off. The one search path of ``topx run``, ``topx shard`` and ``topx recommend``."""
    dataset, vectors = run.load_dataset(), vectors_for(run)
    allowed, report = candidates(vectors, dataset.items, cfg.search, dataset.item_features, dataset)
    exclude = exclusion(dataset, include_held_out=True) if cfg.search.exclude_seen else None
    exclude, suppressed = suppressed_pairs(cfg.search, dataset, exclude)
    report.update(suppressed)
    found = recommend(vectors, searcher, top=cfg.search.top, candidates=allowed, exclude=exclude, users=users,
                      cap=category_cap(cfg.search, dataset))
    return RunSearch(found.lists, {**report, **found.report})


Cap = tuple[np.ndarray, int]  # (bool (n_items, n_categories), at most this many per category)


def category_cap(search: SearchConfig, dataset: Dataset) -> Cap | None:
    """The ``max_per_category`` cap as :mod:`batch.serve.capped` takes it, or None without one.
    The cap needs the local exact engine (it widens exact searches): :class:`ConfigError` for
    any other."""
    if not search.max_per_category:
        return None
    if search.backend != "local" or search.method != "exact":
        raise ConfigError(f"search.max_per_category needs the local exact search (search.backend local, "
                          f"search.method exact); got {search.backend} {search.method}")
    from batch.serve.capped import category_matrix

    return category_matrix(dataset.item_features, search.category, "search.max_per_category"), search.max_per_category


def suppressed_pairs(search: SearchConfig, dataset: Dataset, exclude: sp.csr_matrix | None
                     ) -> tuple[sp.csr_matrix | None, dict]:
    """``exclude`` with the pairs of the ``search.suppress`` file in force at the run's
    reference time added, and the file's report (:func:`~batch.serve.suppress.read_suppression`);
    unchanged without a file."""
    if search.suppress is None:
        return exclude, {}
    from batch.data.availability import reference_time
    from batch.serve.suppress import read_suppression

    pairs, report = read_suppression(search.suppress, dataset.users, dataset.items,
                                     lambda: reference_time(search, dataset.report, "search.suppress with until times"))
    return (pairs if exclude is None else sp.csr_matrix(exclude + pairs, dtype=bool)), report


def item_list(location: str, items: IdMap) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """A boolean mask over items from a file of external item ids, one per line (``#`` comments
    and blank lines ignored), and the listed ids not in the catalogue as ``(line, id)``. Each id
    is parsed with the catalogue's id type on its own: one bad line does not hide the others."""
    try:
        text = storage.read_bytes(location).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", file=str(location)) from None
    listed = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
              if line.strip() and not line.lstrip().startswith("#")]
    wanted = np.array([value for _, value in listed], dtype=str)
    known = items.contains(wanted) if listed else np.zeros(0, bool)
    mask = np.zeros(len(items), bool)
    if known.any():
        mask[items.index(wanted[known], what="item")] = True
    return mask, [pair for pair, ok in zip(listed, known.tolist(), strict=True) if not ok]


def candidates(vectors: Vectors, items: IdMap, search: SearchConfig,
               features: FeatureTable | None = None, dataset: Dataset | None = None) -> tuple[np.ndarray, dict]:
    """Items that may be recommended: known to the model, in the allow list (if any), not in the
    deny list (if any), with one of the ``include_attributes`` item features and none of the
    ``exclude_attributes`` (``features``: the data set's item features), and, with
    ``search.availability``, available at the run's reference time (``dataset``'s item
    attributes, :mod:`batch.data.availability`). Returns the mask and a
    report of what each list and rule did; raises :class:`NoCandidatesError` when no item is
    left (lists would all be empty)."""
    mask = vectors.recommendable.copy()
    report = {"not_recommendable": int((~mask).sum())}
    for name, location in (("allow", search.allow), ("deny", search.deny)):
        if location is None:
            continue
        listed, unknown = item_list(location, items)
        if unknown:
            shown = "; ".join(f"{location}:{line}: {value!r}" for line, value in unknown[:10])
            log.warning("%s list: %d item id(s) not in the catalogue: %s%s", name, len(unknown), shown,
                        " …" if len(unknown) > 10 else "")
        mask &= listed if name == "allow" else ~listed
        report[f"{name}_listed"], report[f"{name}_unknown"] = int(listed.sum()), len(unknown)
        report[f"{name}_unknown_lines"] = [line for line, _ in unknown[:10]]
    for name, names in (("include", search.include_attributes), ("exclude", search.exclude_attributes)):
        if names is not None:
            having = items_with(features, names, f"search.{name}_attributes")
            mask &= having if name == "include" else ~having
            report[f"{name}_attributes_items"] = int(having.sum())
    if search.availability:
        from batch.data.availability import available

        if dataset is None:
            raise ConfigError("search.availability needs the run's data set (its item attributes)")
        usable, availability = available(search, dataset)
        mask &= usable
        report["available_items"] = int(usable.sum())
        report.update(availability)
    report["candidates"] = int(mask.sum())
    if not mask.any():
        raise NoCandidatesError(_no_candidates(report, search))
    return mask, report


def items_with(features: FeatureTable | None, names: str, setting: str) -> np.ndarray:
    """Boolean per item: does it have a non-zero value in one of the comma-separated item
    feature columns ``names`` (e.g. ``genre=Comedy,genre=Drama``). :class:`ConfigError` naming
    ``setting`` for a column the data does not have."""
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    columns = {name: j for j, name in enumerate(features.columns)} if features is not None else {}
    unknown = [name for name in wanted if name not in columns]
    if unknown or not wanted:
        known = ", ".join(sorted(columns)[:20]) or "none: the data has no item features"
        raise ConfigError(f"{setting}: no item feature {', '.join(map(repr, unknown)) or 'named'}; the item "
                          f"features are {known}{' …' if len(columns) > 20 else ''}")
    picked = features.matrix[:, [columns[name] for name in wanted]]
    return np.asarray((picked != 0).sum(axis=1)).ravel() > 0


def _no_candidates(report: dict, search: SearchConfig) -> str:
    why = [f"{report['not_recommendable']} item(s) unknown to the model"]
    if search.allow is not None:
        why.append(f"the allow list {search.allow} names {report['allow_listed']} known item(s)"
                   f" ({report['allow_unknown']} id(s) not in the catalogue)")
    if search.deny is not None:
        why.append(f"the deny list {search.deny} removes {report['deny_listed']}")
    if search.include_attributes is not None:
        why.append(f"{report['include_attributes_items']} item(s) have one of {search.include_attributes}")
    if search.exclude_attributes is not None:
        why.append(f"{report['exclude_attributes_items']} item(s) with one of {search.exclude_attributes} removed")
    if search.availability:
        why.append(f"{report['available_items']} item(s) available at {report['reference_time']}")
    return "no item is left to recommend: " + "; ".join(why)


def recommend(vectors: Vectors, searcher: Searcher, *, top: int, exclude: sp.csr_matrix | None,
              candidates: np.ndarray, users: np.ndarray | None = None, cap: Cap | None = None) -> SearchResult:
    """Lists for ``users`` (default all): the searcher's for users with a vector, the popularity
    list for COLD users, rows grouped by user in ascending user order; and the searcher's report
    (empty when no user has a vector). ``cap``: at most so many items per category in a list
    (:func:`category_cap`), searched with the exact engine."""
    users = np.arange(len(vectors.users)) if users is None else np.asarray(users, np.int64)
    known = users[vectors.user_status[users] != COLD]
    cold = users[vectors.user_status[users] == COLD]
    if not len(known):
        found = SearchResult(TopLists.empty())
    elif cap is not None:
        found = _capped_search(vectors, known, top, exclude, candidates, cap)
    else:
        found = searcher.search(SearchRequest(vectors, top, exclude, candidates, known))
    parts = [found.lists] + ([popularity_lists(vectors, cold, top, exclude, candidates, cap)] if len(cold) else [])
    lists = TopLists.concat(parts)
    return SearchResult(lists.take(np.argsort(lists.user, kind="stable")), found.report)


def _capped_search(vectors: Vectors, users: np.ndarray, top: int, exclude: sp.csr_matrix | None,
                   candidates: np.ndarray, cap: Cap) -> SearchResult:
    from batch.serve.capped import capped_topk
    from batch.serve.search.local import top_lists

    item, inner = capped_topk(vectors.users[users], vectors.items, top, *cap, candidates=candidates,
                              exclude=None if exclude is None else exclude[users])
    return SearchResult(top_lists(vectors, users, item, inner),
                        {"method": "exact", "users": len(users), "max_per_category": cap[1]})


def popularity_lists(vectors: Vectors, users: np.ndarray, top: int, exclude: sp.csr_matrix | None,
                     candidates: np.ndarray, cap: Cap | None = None) -> TopLists:
    """Each user's ``top`` most popular candidates they have not interacted with (within the
    category ``cap``, if any), marked as the popularity fallback. The score is still the FM
    prediction for the pair, so it matches ``topx score``."""
    order = popularity_order(vectors.popularity, candidates)
    if cap is None:
        chosen = top_unseen(order, users, top, exclude)
    else:
        from batch.serve.capped import capped_order

        chosen = capped_order(order, np.asarray(users, np.int64), top, *cap,
                              lambda part, depth: top_unseen(order, part, depth, exclude))
    filled = chosen >= 0
    user = np.repeat(users, filled.sum(1)).astype(np.int32)
    item = chosen[filled].astype(np.int32)
    rank = (np.nonzero(filled)[1] + 1).astype(np.int32)  # slots fill from the left
    score = vectors.scores(user, item)
    return TopLists(user, rank, item, score, probabilities(score, vectors.predictor_type),
                    np.full(len(user), SOURCE_POPULARITY, np.uint8))


def popularity_order(popularity: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidate item indices, most popular first, ties by smaller index."""
    order = np.lexsort((np.arange(len(popularity)), -popularity))
    return order[candidates[order]]


def top_unseen(order: np.ndarray, users: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> np.ndarray:
    """For each user, the first ``k`` items of ``order`` not in its row of ``exclude``: int64
    (n_users, k), -1 for empty slots.

    With a user's excluded items at positions s_0 < s_1 < … of ``order``, s_i − i unseen items come
    before s_i, so the j-th unseen item is at position j + #{i: s_i − i ≤ j}: one sort of the
    excluded pairs and users × k binary searches, never a users × (k + history) matrix (which
    made the popularity list of a 5M-interaction evaluation take a minute)."""
    users = np.asarray(users, np.int64)
    n = len(order)
    out = np.full((len(users), k), -1, np.int64)
    if not len(users) or not n:
        return out
    if exclude is None:
        out[:, :min(k, n)] = order[:k]
        return out
    steps = _unseen_steps(order, users, exclude)
    starts = np.searchsorted(steps, np.arange(len(users)) * (n + 1))
    j = np.arange(k, dtype=np.int64)
    for first in range(0, len(users), _USERS_AT_ONCE):
        rows = np.arange(first, min(first + _USERS_AT_ONCE, len(users)), dtype=np.int64)
        before = np.searchsorted(steps, (rows[:, None] * (n + 1) + j).ravel(), side="right").reshape(len(rows), k)
        position = j + before - starts[rows, None]
        out[rows] = np.where(position < n, order[np.minimum(position, n - 1)], -1)
    return out


_USERS_AT_ONCE = 65_536  # top_unseen's queries at once: users × k int64


def _unseen_steps(order: np.ndarray, users: np.ndarray, exclude: sp.csr_matrix) -> np.ndarray:
    """Sorted keys ``row × (n + 1) + (s_i − i)`` over each row's (``users[row]``'s) excluded
    items that are in ``order`` (n items), s_i their positions in ``order`` ascending."""
    n = len(order)
    position = np.full(exclude.shape[1], -1, np.int64)
    position[order] = np.arange(n)
    rows = exclude.tocsr()[users]
    row = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(rows.indptr))
    at = position[rows.indices]
    keys = np.sort(row[at >= 0] * n + at[at >= 0])  # by row, then position
    keys = keys[np.diff(keys, prepend=-1) != 0]  # (np.unique hashes: ten times slower here)
    row, at = keys // n, keys % n
    rank = np.arange(len(keys)) - np.searchsorted(keys, row * n)
    return row * (n + 1) + (at - rank)


def exclusion(dataset: Dataset, *, include_held_out: bool) -> sp.csr_matrix:
    """Users × items CSR of pairs to exclude: training interactions, plus held-out ones if asked."""
    data: Interactions = dataset.all_interactions() if include_held_out else dataset.train
    return data.matrix(dataset.n_users, dataset.n_items)


def write_csv(lists: TopLists, users: IdMap, items: IdMap, path: str | Path) -> None:
    """The lists as CSV (user_id, rank, item_id, score, probability, source) with external ids."""
    source = np.vectorize(SOURCE_NAMES.get, otypes=[object])(lists.source) if len(lists) else lists.source
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("user_id,rank,item_id,score,probability,source\n")
        for start in range(0, len(lists), 100_000):
            part = slice(start, start + 100_000)
            cols = (users.ids[lists.user[part]], lists.rank[part], items.ids[lists.item[part]],
                    np.char.mod("%.6g", lists.score[part]), np.char.mod("%.6g", lists.probability[part]),
                    source[part])
            out.writelines(",".join(map(_csv_field, row)) + "\n" for row in zip(*cols, strict=True))


def _csv_field(value) -> str:
    text = str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text
