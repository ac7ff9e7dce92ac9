"""The lists of a few users, recomputed with a published run's model from their current activity
(``topx refresh --users FILE``: new sign-ups, users with new interactions).

"Current activity" is every interaction the job's data source holds for the user now, read as
``topx run`` ingests it, together with those the run itself was trained and evaluated on. A user
has *new activity* when the data source holds interactions of theirs with items the model knows
that the run's data (train and held-out) did not, or, when the model has a user feature block,
other feature values than the run's data. A user of the run without new activity keeps the
run's own vector (``vectors.npz``, built at training time from the training history only), so
their refreshed list is the run's list, row for row (``runs_vectors`` counts them). Every other
user's vector is the model's, built from a design row as at training time
(:mod:`batch.features.design`) over their whole current history:

* the user's id column when the model trained it (a free user vector cannot learn from new
  interactions, but the new interactions are still excluded from its list);
* the user's side features, when the model's layout has user features (the data source's
  current features, else the run's);
* the user history block, when the layout has one: one column per item the user interacted with
  and the model knows, |history|^-½ each, so new interactions move the vector.

With implicit mode's item-item member (EASE, :mod:`batch.train.item_item`) the member's user
row β·m_u, made from the user's training profile, sits on the user's id column (see
:func:`batch.train.ials_engine.with_item_item`); a rebuilt vector has that block recomputed from
the user's profile over their current history (the run's interactions and the data source's, by
timestamp, each pair at its latest interaction, with the recency and rating weights the run's
training used) by
:func:`batch.train.item_item.member_user_rows`, exactly what training would have given that
profile, so new interactions move both parts of the score, and a user without an id column (a
new sign-up) gets one too.

A user with none of these (unknown to the model, no known item in their history, no features)
gets the popularity list, as in every run. Items the model does not know cannot enter a vector;
their interactions are counted (``unknown_item_interactions``).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from batch import storage
from batch.artifact import FMModel
from batch.config import JobConfig
from batch.data.interactions import Dataset, IdMap
from batch.errors import DataError, EmptyDataError, InvalidValueError
from batch.features.design import HISTORY_EXPONENT, DesignLayout, normalise_rows
from batch.lists import SOURCE_RERANKED, TopLists
from batch.serve.recommend import candidates, category_cap, recommend
from batch.serve.repackage import COLD, FEATURES_ONLY, TRAINED, Vectors, user_vectors
from batch.serve.search import Searcher
from batch.train.item_item import ItemItemSettings, latest, member_user_rows, profiles, rating_weights

log = logging.getLogger("topx.serve")

# The run's re-ranker: NeuMF and the boolean masks of the run's users and items it knows.
Reranker = tuple[Any, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class RefreshUsers:
    """The users a FILE names: ``ids`` their external ids (sorted, unique; int64 when the run's
    user ids are integers), ``duplicates`` lines naming a user named before, ``lines`` the line
    first naming each id (int64, aligned with ``ids``; None when not read from a file)."""

    ids: IdMap
    duplicates: int = 0
    lines: np.ndarray | None = None


@dataclass
class Refreshed:
    """The refreshed users' lists (user indices into ``users``) and what was done: counts of
    users by where their vector came from, new activity, the candidate rules' report."""

    lists: TopLists
    users: IdMap
    report: dict[str, Any] = field(default_factory=dict)


def read_users(location: str, users: IdMap, header: str = "user_id") -> RefreshUsers:
    """The user ids of a file, one a line (a CSV field: quote an id holding a comma), ``#``
    comment and blank lines skipped; UTF-8, a byte order mark at its start dropped; a first line
    equal to ``header`` (the data's user column name) or ``user_id`` is a header. Ids take the
    run's user id type: where the run's ids are integers a line that is not one is an
    :class:`InvalidValueError` naming file and line. Raises :class:`EmptyDataError` for a file
    naming no user."""
    try:
        text = storage.read_bytes(location).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", file=str(location)) from None
    values: list = []
    numbers: list[int] = []
    first = True
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in next(csv.reader(io.StringIO(line)))]
        if len(fields) != 1 or not fields[0]:
            raise DataError(f"expected one user id a line; got {len(fields)} fields", file=str(location), line=number)
        if first and fields[0] in (header, "user_id"):
            first = False
            continue
        first = False
        values.append(_user_id(fields[0], users.is_int, location, number))
        numbers.append(number)
    if not values:
        raise EmptyDataError("names no user id", file=str(location))
    ids = np.array(values, dtype=np.int64 if users.is_int else str)
    unique, at = np.unique(ids, return_index=True)
    return RefreshUsers(IdMap(unique), duplicates=len(ids) - len(unique), lines=np.array(numbers, np.int64)[at])


# Ids of users in neither the run nor the data source named one by one in the report (the rest counted).
SHOWN_UNKNOWN = 20


def in_data(wanted: RefreshUsers, source: Dataset, current: Dataset | None, location: str
            ) -> tuple[RefreshUsers, dict[str, Any]]:
    """The users of ``wanted`` that the run's data set ``source`` or the data source read now
    (``current``: interactions or user features) has; and a report of the others: ids in
    neither are taken for typos and skipped, each logged as a warning with its file and line
    (``not_in_data`` counts them, ``not_in_data_ids`` names the first :data:`SHOWN_UNKNOWN`). A
    new sign-up is in the data source before it is refreshed. Raises :class:`DataError` when no
    user of the file is in either."""
    found = source.users.contains(wanted.ids.ids)
    if current is not None:
        found |= current.users.contains(wanted.ids.ids)
    missing = np.flatnonzero(~found)
    for at in missing:
        log.warning("%s line %d: user %s is neither in the run's data set nor in the data source: skipped (a typo?)",
                    location, wanted.lines[at], wanted.ids.ids[at])
    report = {"not_in_data": len(missing),
              "not_in_data_ids": [str(value) for value in wanted.ids.ids[missing[:SHOWN_UNKNOWN]].tolist()]}
    if not found.any():
        raise DataError(f"none of its {len(wanted.ids)} user id(s) is in the run's data set or the data source "
                        f"(first: {report['not_in_data_ids'][0]!r} on line {wanted.lines[missing[0]]})",
                        file=str(location))
    keep = np.flatnonzero(found)
    return RefreshUsers(IdMap(wanted.ids.ids[keep]), wanted.duplicates, wanted.lines[keep]), report


def _user_id(text: str, integer: bool, location: str, line: int):
    if not integer:
        return text
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not -(2**63) <= value < 2**63:
        raise InvalidValueError(f"user id {text!r} is not an integer, as the run's user ids are",
                                file=str(location), line=line, column=1)
    return value


def refresh_lists(cfg: JobConfig, model: FMModel, layout: DesignLayout, source: Dataset, vectors: Vectors,
                  wanted: IdMap, current: Dataset | None, searcher: Searcher, reranker: Reranker | None = None,
                  member: tuple[ItemItemSettings, int] | None = None) -> Refreshed:
    """The lists of the ``wanted`` users: vectors from ``model`` (trained on ``layout`` over the
    run's data set ``source``, repackaged as ``vectors``) and their current history (the run's
    interactions and ``current``'s, the data source read now; None: the run's only), searched
    with the run's candidate rules (``cfg.search``: allow/deny lists, attribute rules,
    availability at the run's reference time, suppression, category cap, seen items), and
    re-ranked as the run's lists were when the run re-ranks (``reranker``: the run's NeuMF and
    the users and items it knows, :func:`batch.rerank.stage.reranker_for`). ``member``: the
    item-item member's settings and factors when the model has one (the last factors of its
    vectors): rebuilt vectors get that block recomputed from the user's current profile."""
    history, activity, fresh = current_history(source, current, wanted)
    rows = design_rows(layout, source, current, wanted, history)
    users, const = user_vectors(model, rows)
    status = np.full(len(wanted), COLD, np.uint8)
    status[np.diff(rows[:, layout.user_feature_offset:].tocsr().indptr) > 0] = FEATURES_ONLY
    trained = _trained(source, wanted)
    status[trained] = TRAINED
    known = source.users.contains(wanted.ids)
    changed = fresh | _features_changed(layout, source, current, wanted)
    same = np.flatnonzero(known & ~changed)  # the run's users without new activity: the run's own vectors
    at = source.users.index(wanted.ids[same], what="user")
    users[same], const[same], status[same] = vectors.users[at], vectors.user_const[at], vectors.user_status[at]
    rebuilt = ~(known & ~changed)
    if member is not None and rebuilt.any():
        settings, rank = member
        k = users.shape[1] - 1
        profile = current_profiles(source, current, wanted, settings)[rebuilt]
        users[rebuilt, k - rank:k] = (settings.weight * member_user_rows(
            vectors.items[:, k - rank:k], profile)).astype(np.float32)
    mine = Vectors(users=users, user_const=const, items=vectors.items, user_status=status,
                   item_status=vectors.item_status, popularity=vectors.popularity,
                   predictor_type=vectors.predictor_type)
    allowed, report = candidates(vectors, source.items, cfg.search, source.item_features, source)
    exclude = history if cfg.search.exclude_seen else None
    exclude, suppressed = _suppressed(cfg, source, wanted, exclude)
    depth = cfg.search.top if reranker is None else max(cfg.rerank.candidates, cfg.search.top)
    found = recommend(mine, searcher, top=depth, exclude=exclude, candidates=allowed,
                      cap=category_cap(cfg.search, source))
    lists = found.lists if reranker is None else _reranked(found.lists, reranker, cfg.search.top, source, wanted)
    by_vector = np.bincount(status, minlength=3)
    summary = {**report, **suppressed, **found.report,
               "users": len(wanted), "known_to_run": int(known.sum()), "unknown_to_run": int((~known).sum()),
               "vectors": {"trained": int(by_vector[TRAINED]), "history_or_features": int(by_vector[FEATURES_ONLY]),
                           "popularity": int(by_vector[COLD])}, "runs_vectors": len(same), **activity,
               "users_with_changed_features": int((known & ~fresh & changed).sum()),
               "rebuilt_vectors": int(rebuilt.sum())}
    if reranker is not None:
        summary["reranked_users"] = int(np.unique(lists.user[lists.source == SOURCE_RERANKED]).size)
    return Refreshed(lists, wanted, summary)


def _reranked(lists: TopLists, reranker: Reranker, top: int, source: Dataset, wanted: IdMap) -> TopLists:
    """``lists`` (each user's FM candidates) re-ranked by the run's NeuMF and cut to ``top``, as
    the run's search stage does (:func:`batch.rerank.rerank.rerank`): NeuMF knows users by the
    run's indices, so the wanted users the run has are re-ranked under those; the others keep
    their FM list, as users NeuMF did not train on do in the run."""
    from batch.rerank.rerank import rerank

    model, known_users, known_items = reranker
    found = source.users.contains(wanted.ids)
    at = np.full(len(wanted), -1, np.int64)
    at[found] = source.users.index(wanted.ids[found], what="user")
    back = np.full(source.n_users, -1, np.int64)
    back[at[found]] = np.flatnonzero(found)
    in_run = at[lists.user] >= 0
    theirs = lists.take(np.flatnonzero(in_run))
    done = rerank(TopLists(at[theirs.user].astype(np.int32), *theirs.columns()[1:]), model, top, known_users,
                  known_items)
    done = TopLists(back[done.user].astype(np.int32), *done.columns()[1:])
    merged = TopLists.concat([done, lists.take(np.flatnonzero(~in_run & (lists.rank <= top)))])
    return merged.take(np.argsort(merged.user, kind="stable"))


def current_history(source: Dataset, current: Dataset | None, wanted: IdMap
                    ) -> tuple[sp.csr_matrix, dict, np.ndarray]:
    """Bool CSR (len(wanted), source.n_items): each wanted user's interactions with the run's
    items, in the run's data (train and held-out) and in ``current``; the new activity's counts
    (interactions with the run's items ``current`` holds that the run did not, users with any,
    and interactions with items the run does not know); and bool (len(wanted),): the users
    with new activity (new interactions with items the run knows)."""
    shape = (len(wanted), source.n_items)
    before = _rows_of(source.all_interactions().matrix(source.n_users, source.n_items), source.users, wanted)
    if current is None:
        return before, {"users_with_new_activity": 0, "new_interactions": 0, "unknown_item_interactions": 0}, \
            np.zeros(len(wanted), bool)
    every = current.all_interactions()
    item_known = source.items.contains(current.items.ids)
    to_source = np.full(current.n_items, -1, np.int64)
    to_source[item_known] = source.items.index(current.items.ids[item_known], what="item")
    to_wanted = _positions(current.users, wanted)
    mine = to_wanted[every.user] >= 0
    known_item = mine & (to_source[every.item] >= 0)
    now = sp.csr_matrix((np.ones(int(known_item.sum()), bool),
                         (to_wanted[every.user[known_item]], to_source[every.item[known_item]])), shape=shape)
    now.sum_duplicates()
    new = now.astype(np.int8) - now.multiply(before).astype(np.int8)
    new.eliminate_zeros()
    history = sp.csr_matrix(before + now, dtype=bool)
    fresh = np.diff(new.tocsr().indptr) > 0
    return history, {"users_with_new_activity": int(np.count_nonzero(fresh)), "new_interactions": int(new.nnz),
                     "unknown_item_interactions": int(np.count_nonzero(mine & ~known_item))}, fresh


def current_profiles(source: Dataset, current: Dataset | None, wanted: IdMap, settings: ItemItemSettings
                     ) -> sp.csr_matrix:
    """CSR float64 (len(wanted), source.n_items): each wanted user's item-item profile
    (:func:`batch.train.item_item.profiles`) over their current history with the run's items:
    the run's interactions (train and held-out) and ``current``'s, by their timestamps and with
    their rating weights (:func:`batch.train.item_item.rating_weights`)."""
    parts = [(source.all_interactions(), source.users, np.arange(source.n_items))]
    if current is not None:
        to_source = np.full(current.n_items, -1, np.int64)
        known = source.items.contains(current.items.ids)
        to_source[known] = source.items.index(current.items.ids[known], what="item")
        parts.append((current.all_interactions(), current.users, to_source))
    user, item, time, rating = [], [], [], []
    for every, ids, items in parts:
        at = _positions(ids, wanted)[every.user]
        keep = (at >= 0) & (items[every.item] >= 0)
        user.append(at[keep])
        item.append(items[every.item[keep]])
        time.append(every.timestamp[keep])
        rating.append(every.rating[keep])
    user, item, time, rating = (np.concatenate(part) for part in (user, item, time, rating))
    at = latest(user, item, time, source.n_items)  # a pair rated again counts with its latest rating only
    user, item, time = user[at], item[at], time[at]
    weight = rating_weights(user, rating[at], len(wanted), settings.rating_exponent)
    return profiles(user, item, time, len(wanted), source.n_items, settings.recency, settings.half_life, weight)


def _features_changed(layout: DesignLayout, source: Dataset, current: Dataset | None, wanted: IdMap) -> np.ndarray:
    """Bool (len(wanted),): the users whose features, as the model's user feature block reads
    them, differ between ``current`` (where it has the user) and the run's data."""
    if not layout.user_feature_columns or current is None:
        return np.zeros(len(wanted), bool)
    columns = layout.user_feature_columns
    diff = (_features(columns, source, current, wanted) != _features(columns, source, None, wanted)).tocsr()
    return np.diff(diff.indptr) > 0


def design_rows(layout: DesignLayout, source: Dataset, current: Dataset | None, wanted: IdMap,
                history: sp.csr_matrix) -> sp.csr_matrix:
    """CSR float32 (len(wanted), layout.feature_dim): each wanted user's design row as at training
    time (see the module doc): id column if trained, user features, history block."""
    n, width = len(wanted), layout.feature_dim
    parts = []
    trained = _trained(source, wanted)
    index = np.flatnonzero(trained)
    parts.append(sp.csr_matrix((np.ones(len(index), np.float32),
                                (index, source.users.index(wanted.ids[trained], what="user"))), shape=(n, width)))
    if layout.user_feature_columns:
        feats = _features(layout.user_feature_columns, source, current, wanted)
        feats = sp.coo_matrix(normalise_rows(feats))
        parts.append(sp.csr_matrix((feats.data, (feats.row, feats.col + layout.user_feature_offset)), shape=(n, width)))
    if layout.user_history:
        counts = np.diff(history.indptr)
        scale = np.repeat(np.maximum(counts, 1).astype(np.float64) ** -HISTORY_EXPONENT, counts).astype(np.float32)
        parts.append(sp.csr_matrix((scale, history.indices + layout.user_history_offset, history.indptr),
                                   shape=(n, width)))
    rows = sum(parts[1:], parts[0]).tocsr().astype(np.float32)
    rows.sort_indices()
    return rows


def _features(columns: tuple[str, ...], source: Dataset, current: Dataset | None, wanted: IdMap) -> sp.csr_matrix:
    """CSR float32 (len(wanted), len(columns)): each user's features by the model's column names,
    from ``current`` where it has the user, else from the run's data (columns the model does
    not know are left out)."""
    rows, cols, values = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    taken = np.zeros(len(wanted), bool)
    for data in (current, source):  # current first: it wins where it has the user
        table = data.user_features if data is not None else None
        if table is None:
            continue
        at = _positions(data.users, wanted)
        use = np.flatnonzero((at >= 0) & ~taken[np.maximum(at, 0)])
        to_model = {name: j for j, name in enumerate(columns)}
        column = np.array([to_model.get(name, -1) for name in table.columns], np.int64)
        part = table.matrix.tocsr()[use].tocoo()
        keep = column[part.col] >= 0 if len(column) else np.zeros(part.nnz, bool)
        rows.append(at[use][part.row[keep]])
        cols.append(column[part.col[keep]])
        values.append(part.data[keep].astype(np.float32))
        taken[at[use]] = True
    out = sp.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(wanted), len(columns)), dtype=np.float32)
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def _positions(ids: IdMap, wanted: IdMap) -> np.ndarray:
    """int64 (len(ids),): the position in ``wanted`` of each id of ``ids``, -1 for those not wanted."""
    found = wanted.contains(ids.ids)
    out = np.full(len(ids), -1, np.int64)
    out[found] = wanted.index(ids.ids[found], what="user")
    return out


def _rows_of(matrix: sp.csr_matrix, ids: IdMap, wanted: IdMap) -> sp.csr_matrix:
    """The rows of ``matrix`` (indexed by ``ids``) of the ``wanted`` users, empty for users not in ``ids``."""
    found = ids.contains(wanted.ids)
    at = np.zeros(len(wanted), np.int64)
    at[found] = ids.index(wanted.ids[found], what="user")
    picked = matrix.tocsr()[at]
    return sp.csr_matrix(sp.diags(found.astype(np.float32)) @ picked, dtype=bool)


def _trained(source: Dataset, wanted: IdMap) -> np.ndarray:
    """Bool (len(wanted),): the users the model trained (an id column of their own)."""
    trained = np.zeros(source.n_users, bool)
    trained[source.train.user] = True
    found = source.users.contains(wanted.ids)
    out = np.zeros(len(wanted), bool)
    out[found] = trained[source.users.index(wanted.ids[found], what="user")]
    return out


def _suppressed(cfg: JobConfig, source: Dataset, wanted: IdMap, exclude: sp.csr_matrix | None
                ) -> tuple[sp.csr_matrix | None, dict]:
    """``exclude`` with the suppression file's pairs of the wanted users in force at the run's
    reference time; the file is read against the run's users and the wanted ones together, so
    only ids that are neither count as unknown."""
    if cfg.search.suppress is None:
        return exclude, {}
    from batch.data.availability import reference_time
    from batch.serve.suppress import read_suppression

    every = IdMap(np.unique(np.concatenate([source.users.ids, wanted.ids])))
    pairs, report = read_suppression(cfg.search.suppress, every, source.items, lambda: reference_time(
        cfg.search, source.report, "search.suppress with until times"))  # the run's time, as its lists used
    mine = pairs[every.index(wanted.ids, what="user")]
    return (mine if exclude is None else sp.csr_matrix(exclude + mine, dtype=bool)), report
