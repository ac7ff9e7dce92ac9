"""The closed-form item-item member of implicit mode's FM: EASE (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019), written as a block of factors next to iALS's.

EASE's item-item weights B minimise ‖X − XB‖² + λ‖B‖² with diag B = 0:

    P = (XᵀX + λI)⁻¹,   B_ji = −P_ji / P_ii (j ≠ i),   B_ii = 0,

and a user's score of item i is Σ_j w_uj B_ji over the user's items j. Here w_uj is the user's
*profile*: c_uj (1 + ``recency`` × ½^(age / half_life)) where age is how many of the user's items
came after j (0 for the latest), so recent taste counts more at scoring time, while B itself is
fitted on X, whose entries are the c_uj alone. c_uj is the interaction's *rating weight*,
(rating / the user's highest rating)^``rating_exponent``: a film the user rated 2 of 5 says less
about their taste than one they rated 5. It is 1 where the data has no rating (X is then 0/1), and
the ratings are ignored when any is ≤ 0 (a scale without a top to divide by).

With ``sessions`` = γ > 0 the fit also sees each user's *sessions*: runs of interactions with no
gap longer than ``session_gap`` seconds, of at least two distinct items. Their rows Z (the rating
weights of the session's items) join X with weight γ, so the Gram matrix is XᵀX + γZᵀZ: items
taken up in the same sitting by other users count as closer than items merely in the same
history. B is fitted on Y = [X; √γ Z] and still scored on users' profiles. A session that is its
user's whole history is that user's row again, so it is kept as the weight √(1 + γ) on the row
rather than as a row of its own (data without timestamps: every history is one session, and the
member is EASE on X with λ/(1 + γ)).

With ``features`` = g > 0 the items' indicator features (``name=value`` columns such as
``genre=Comedy``; numeric columns are left out) join the fit too: each feature is a row F_f
(1 at the items that have it) with weight g, so the Gram matrix gains g FᵀF and items that share
features count as closer. As a row to reconstruct, a feature asks B to carry a genre's items
to the genre's other items: a side-feature prior that only matters where the interactions say
little (with g large it becomes the constraint F(I − B) = 0). Features can be noise for some
data, so with ``choose_features`` the validation carve below also decides whether they join.

How much recent taste should count depends on what the lists are for: the next items a user
takes up (recent taste first) or items from anywhere in their history. With ``choose_recency``
the member picks ``recency`` itself, as a tuned peer would: it is fitted once on a validation
carve of the training interactions, held out the way the job's own split holds out its test part
(:class:`Carve`), and each of :data:`RECENCY_CHOICES` is scored there (NDCG@10 of the member's
lists; only the profile changes, so B is fitted once, or once with and once without the
features); the best is kept for the real fit.

The member is exact, not an approximation: with r = min(rows of Y, n_items) factors,

- more items than rows of Y (users, sessions and features): by Woodbury, P = (I − YᵀAY) / λ with
  A = (λI + YYᵀ)⁻¹, so for i not among the user's items the score is (W YᵀA)_u · Y_:i / (λ P_ii).
  With any A^½ (A^½ A^½ᵀ = A; here L⁻ᵀ from the Cholesky factor L of λI + YYᵀ), user rows are
  W Yᵀ A^½ and item rows (Yᵀ A^½)_i / (λ P_ii) (r = rows of Y): items' inner products are then
  EASE's item-item affinities YᵀAY (scaled), a fair space for similar items. On a user's own
  items this omits B's zero-diagonal correction, which ranks nothing (they are excluded from
  the lists);
- otherwise: user rows W, item rows Bᵀ (r = n_items), every score exact.

So the cost is r³ (r = min(rows of Y, n_items)), a dense n_users × n_items product and an
n_items × r item block: the engine leaves the feature rows out beyond ``max_rank`` or
``max_session_cells``, then the session rows, and the member too when even X alone is beyond
``max_rank`` or ``max_cells``, and then trains iALS alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from batch.artifact import FMModel
from batch.data.interactions import Interactions
from batch.data.split import holdout_mask
from batch.features.design import Design, DesignLayout
from batch.metrics.accuracy import ranking_metrics
from batch.offline import top_k

log = logging.getLogger("topx.train")

# the profiles' recency weights the carve tries; the metric it compares them by
RECENCY_CHOICES = (0.0, 0.5, 1.0, 2.0, 4.0)
CHOICE_METRIC, CHOICE_K = "ndcg@10", 10


@dataclass(frozen=True)
class ItemItemSettings:
    """``weight``: β, the member's scores are added times β (0: no member); ``l2``: EASE's λ;
    ``recency`` and ``half_life``: the profile's extra weight of recent items (``choose_recency``:
    recency is chosen on a validation carve where :func:`fit_member` is given one);
    ``rating_exponent``: the interactions' rating weights (:func:`rating_weights`); ``sessions``: γ,
    the weight of session rows in the fit (0: none); ``session_gap``: seconds without an
    interaction that end a session; ``features``: g, the weight of the items' indicator
    features as rows of the fit (0: none; ``choose_features``: g or 0 is chosen on the
    validation carve with the recency); ``max_rank`` and ``max_cells``: the member is fitted
    only when its rank r = min(n_users [+ n_sessions + n_features], n_items) ≤ max_rank and
    n_users × n_items ≤ max_cells; ``max_session_cells``: with sessions or features, also only
    when r × n_items (its item block) ≤ max_session_cells."""

    weight: float = 1.0
    l2: float = 300.0
    recency: float = 1.0
    half_life: float = 5.0
    choose_recency: bool = True
    rating_exponent: float = 0.5
    sessions: float = 2.0
    session_gap: float = 1800.0
    features: float = 64.0
    choose_features: bool = True
    max_rank: int = 6144
    max_cells: int = 64_000_000
    max_session_cells: int = 64_000_000

    def applies(self, n_users: int, n_items: int, n_extra: int = 0) -> bool:
        """Whether the member is fitted for data of this size (with this many session and feature
        rows besides the users')."""
        rank = min(n_users + n_extra, n_items)
        return (self.weight > 0 and rank <= self.max_rank and n_users * n_items <= self.max_cells
                and (n_extra == 0 or rank * n_items <= self.max_session_cells))


def rating_exponent(rating: np.ndarray, exponent: float) -> float:
    """The rating weights' exponent the member fits with on data of these ratings: ``exponent``,
    or 0 (ratings ignored, logged) where any rating is ≤ 0: a scale without a top to divide by."""
    rating = np.asarray(rating, np.float64)
    rated = rating[np.isfinite(rating)]
    if exponent and len(rated) and rated.min() <= 0:
        log.info("item-item member: ratings ≤ 0 in the data, so its interactions are not weighted by rating")
        return 0.0
    return exponent


def rating_weights(user: np.ndarray, rating: np.ndarray, n_users: int, exponent: float) -> np.ndarray:
    """float64 (len(user),): each interaction's rating weight, (rating / its user's highest
    rating)^``exponent`` (one interaction per (user, item) pair: see :func:`latest`); 1 where it
    has no positive rating (NaN, or ≤ 0, which :func:`rating_exponent` keeps out of a fit) and
    everywhere when ``exponent`` is 0."""
    rating = np.asarray(rating, np.float64)
    rated = np.isfinite(rating) & (rating > 0)
    weight = np.ones(len(rating))
    if exponent == 0 or not rated.any():
        return weight
    user = np.asarray(user, np.int64)
    highest = np.zeros(n_users)
    np.maximum.at(highest, user[rated], rating[rated])
    weight[rated] = (rating[rated] / highest[user[rated]]) ** exponent
    return weight


def latest(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, n_items: int) -> np.ndarray:
    """int64 indices of each (user, item) pair's latest interaction (by timestamp, then input
    order), in (user, time) order."""
    user, item = np.asarray(user, np.int64), np.asarray(item, np.int64)
    order = np.lexsort((np.arange(len(user)), np.asarray(timestamp), user))  # user, then time, then input
    return order[_last_of_each(user[order] * n_items + item[order])]


def _last_of_each(key: np.ndarray) -> np.ndarray:
    """int64 sorted positions of each distinct value's last occurrence in ``key``."""
    _, last_reversed = np.unique(key[::-1], return_index=True)
    return np.sort(len(key) - 1 - last_reversed)


def profiles(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, n_users: int, n_items: int,
             recency: float, half_life: float, weight: np.ndarray | None = None) -> sp.csr_matrix:
    """CSR float64 (n_users, n_items): w_uj = c_uj (1 + recency × ½^(age / half_life)) at each pair
    the user has, age = the number of the user's other items whose latest interaction came after
    this one's (by timestamp, then input order) and c_uj = ``weight`` (one per interaction; None:
    1) of that latest interaction; 0 elsewhere."""
    user, item = np.asarray(user, np.int64), np.asarray(item, np.int64)
    at = latest(user, item, timestamp, n_items)
    u, i = user[at], item[at]
    ends = np.cumsum(np.bincount(u, minlength=n_users))
    age = ends[u] - 1 - np.arange(len(u))
    w = 1.0 + recency * 0.5 ** (age / half_life) if recency else np.ones(len(u))
    if weight is not None:
        w = w * np.asarray(weight, np.float64)[at]
    W = sp.csr_matrix((w, (u, i)), shape=(n_users, n_items))
    W.sort_indices()
    return W


@dataclass(frozen=True)
class Sessions:
    """The sessions of the training interactions: ``rows`` CSR float64 (n, n_items), each item's
    rating weight (1 without ratings) in each session that is not its user's whole history;
    ``whole`` float64 (n_users,), 1 for each user whose whole history is one session (a copy of
    the user's own row, so it is kept as a weight on that row instead of as a factor of its own)."""

    rows: sp.csr_matrix
    whole: np.ndarray

    def __len__(self) -> int:
        return self.rows.shape[0]


def session_rows(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, n_users: int, n_items: int,
                 gap: float, weight: np.ndarray | None = None) -> Sessions:
    """A user's interactions in time order (then input order) make a new session after more than
    ``gap`` seconds without one; sessions of fewer than two distinct items are dropped. Data
    without timestamps (all 0) makes each user's history one session. An item's entry in a
    session is the ``weight`` (one per interaction; None: 1) of its latest interaction there."""
    user, item = np.asarray(user, np.int64), np.asarray(item, np.int64)
    whole = np.zeros(n_users)
    if len(user) == 0:
        return Sessions(sp.csr_matrix((0, n_items)), whole)
    order = np.lexsort((np.arange(len(user)), np.asarray(timestamp), user))
    u, i, t = user[order], item[order], np.asarray(timestamp, np.float64)[order]
    w = np.ones(len(i)) if weight is None else np.asarray(weight, np.float64)[order]
    new = np.r_[True, (u[1:] != u[:-1]) | (np.diff(t) > gap)]
    session = np.cumsum(new) - 1
    last = _last_of_each(session * n_items + i)  # each (session, item)'s latest interaction
    Z = sp.csr_matrix((w[last], (session[last], i[last])), shape=(int(session[-1]) + 1, n_items))
    sizes, owner = np.diff(Z.indptr), u[new]
    distinct = np.bincount(np.unique(u * n_items + i) // n_items, minlength=n_users)  # each user's items
    is_whole = sizes == distinct[owner]
    whole[owner[(sizes >= 2) & is_whole]] = 1.0
    return Sessions(sp.csr_matrix(Z[np.flatnonzero((sizes >= 2) & ~is_whole)]), whole)


def fit_item_item(X: sp.csr_matrix, W: sp.csr_matrix, l2: float, Z: Sessions | None = None,
                  sessions: float = 0.0, F: sp.csr_matrix | None = None,
                  features: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """EASE on ``X`` (CSR (n_users, n_items), the rating weights, 1 without), with the sessions ``Z`` weighted
    ``sessions`` (γ) and the feature rows ``F`` (CSR (n_features, n_items), 1 where an item has
    the feature) weighted ``features`` (g) next to it (Y = [X; √γ Z; √g F], a user whose whole
    history is one session counting √(1 + γ) times), scored with the profiles ``W`` (same shape
    as X, nonzero where X is): float32 user rows (n_users, r) and item rows (n_items, r) whose
    inner product is Σ_j W_uj B_ji for every item i outside user u's items (module docstring)."""
    if l2 <= 0:
        raise ValueError(f"the item-item member's l2 must be positive, got {l2}")
    X = sp.csr_matrix(X, dtype=np.float64)
    W = sp.csr_matrix(W, dtype=np.float64)
    Y = X
    if Z is not None and sessions > 0:
        Y = sp.csr_matrix(sp.diags(np.sqrt(1.0 + sessions * Z.whole)) @ X)
        if len(Z):
            Y = sp.csr_matrix(sp.vstack([Y, np.sqrt(sessions) * sp.csr_matrix(Z.rows, dtype=np.float64)]))
    if F is not None and features > 0 and F.shape[0]:
        Y = sp.csr_matrix(sp.vstack([Y, np.sqrt(features) * sp.csr_matrix(F, dtype=np.float64)]))
    n_rows, n_items = Y.shape
    if n_items > n_rows:
        # A^½ = L⁻ᵀ with λI + YYᵀ = LLᵀ: items' inner products are then YᵀAY, EASE's own
        # item-item affinities, which similar items (cosine) can use
        L = scipy.linalg.cholesky((Y @ Y.T).toarray() + l2 * np.eye(n_rows), lower=True)
        half = scipy.linalg.solve_triangular(L, np.eye(n_rows), lower=True, overwrite_b=True).T
        YtA = np.asarray(Y.T @ half)  # (n_items, n_rows): rows Yᵀ A^½
        scaled_diag = 1.0 - np.einsum("ir,ir->i", YtA, YtA)  # λ P_ii
        users = np.asarray(W @ YtA)
        items = YtA / scaled_diag[:, None]
    else:
        P = np.linalg.inv((Y.T @ Y).toarray() + l2 * np.eye(n_items))
        B = -P / np.diag(P)[None, :]
        np.fill_diagonal(B, 0.0)
        users, items = W.toarray(), B.T
    return np.ascontiguousarray(users, np.float32), np.ascontiguousarray(items, np.float32)


@dataclass(frozen=True)
class Carve:
    """The validation carve :func:`score_choices` scores on: each user's ``holdout`` latest
    (``last``) or random (``random``, with ``seed``) training interactions held out."""

    method: str
    holdout: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Member:
    """A fitted member: ``users`` float32 (n_users, r), ``items`` float32 (n_items, r) (see
    :func:`fit_item_item`), the number of ``sessions`` its fit saw (0: none), whole-history ones
    included, the number of item ``features`` it saw as rows (0: none), the profiles'
    ``recency``, the ``rating_exponent`` it was fitted with (0 where the data's ratings were
    ignored) and, where they were chosen, each recency's validation metric (``choices``, by
    recency) and each feature weight's best one (``feature_choices``, by weight)."""

    users: np.ndarray
    items: np.ndarray
    sessions: int
    recency: float
    rating_exponent: float
    choices: dict[float, float] = field(default_factory=dict)
    features: int = 0
    feature_choices: dict[float, float] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.items.shape[1]

    def describe(self, settings: ItemItemSettings) -> str:
        """What the training log says of the member fitted with ``settings``."""
        return (f"EASE, λ {settings.l2:g}, weight {settings.weight:g}, {self.sessions} sessions, "
                f"{self.features} item features, recency {self.recency:g}")

    def details(self) -> dict[str, Any]:
        """What the training metrics record of the member (see :data:`NO_MEMBER`)."""
        out = {"item_item_factors": self.rank, "item_item_sessions": self.sessions, "item_item_recency": self.recency,
               "item_item_rating_exponent": self.rating_exponent, "item_item_feature_rows": self.features}
        if self.choices:
            out["item_item_recency_validation"] = {f"{r:g}": round(v, 6) for r, v in self.choices.items()}
        if self.feature_choices:
            out["item_item_features_validation"] = {f"{g:g}": round(v, 6) for g, v in self.feature_choices.items()}
        return out


# the training metrics of a model without the member
NO_MEMBER = {"item_item_factors": 0, "item_item_sessions": 0, "item_item_feature_rows": 0}


def fit_member(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, rating: np.ndarray, n_users: int,
               n_items: int, settings: ItemItemSettings, carve: Carve | None = None,
               item_features: sp.csr_matrix | None = None) -> Member | None:
    """The member for the interactions ``user``, ``item``, ``timestamp``, ``rating`` (NaN: none)
    of ``n_users`` × ``n_items`` and the items' indicator features ``item_features`` (CSR
    (n_features, n_items), see :func:`feature_rows`; None: none), or None where it does not apply
    to data of this size; the sessions or the features are left out (logged) where they take
    it past ``max_rank`` or ``max_session_cells`` (:func:`within_limits`). With ``carve``, the
    profiles' recency (``choose_recency``) and whether the features join (``choose_features``)
    are chosen there (:func:`choose`)."""
    if not settings.applies(n_users, n_items):
        return None
    settings = replace(settings, rating_exponent=rating_exponent(rating, settings.rating_exponent))
    has_features = settings.features > 0 and item_features is not None and item_features.shape[0] > 0
    choices: dict[float, float] = {}
    feature_choices: dict[float, float] = {}
    if carve is not None and (settings.choose_recency or (settings.choose_features and has_features)):
        settings, choices, feature_choices = choose(user, item, timestamp, rating, n_users, n_items, settings,
                                                    carve, item_features if has_features else None)
    c = rating_weights(user, rating, n_users, settings.rating_exponent)
    X = profiles(user, item, timestamp, n_users, n_items, 0.0, settings.half_life, c)  # c of each pair
    W = profiles(user, item, timestamp, n_users, n_items, settings.recency, settings.half_life, c)
    Z = session_rows(user, item, timestamp, n_users, n_items, settings.session_gap, c) \
        if settings.sessions > 0 else None
    F = item_features if has_features and settings.features > 0 else None
    Z, F = within_limits(settings, n_users, n_items, Z, F)
    n_features = 0 if F is None else F.shape[0]
    users, items = fit_item_item(X, W, settings.l2, Z, settings.sessions, F, settings.features)
    return Member(users, items, 0 if Z is None else len(Z) + int(Z.whole.sum()), settings.recency,
                  settings.rating_exponent, choices, n_features, feature_choices)


def within_limits(settings: ItemItemSettings, n_users: int, n_items: int, Z: Sessions | None,
                  F: sp.csr_matrix | None) -> tuple[Sessions | None, sp.csr_matrix | None]:
    """The sessions ``Z`` and feature rows ``F`` (None: none) the member is fitted with: both where
    they keep it within ``max_rank`` and ``max_session_cells``, else the sessions alone (they gain
    more), else the features alone, else neither; what is left out is logged. Leaving the
    sessions out leaves out their rows: the weights √(1 + γ) of users whose whole history is one
    session cost no rank and always stay."""
    n_sessions, n_features = (0 if Z is None else len(Z)), (0 if F is None else F.shape[0])
    rowless = None if Z is None else Sessions(sp.csr_matrix((0, Z.rows.shape[1])), Z.whole)
    for z, f in ((Z, F), (Z, None), (rowless, F), (rowless, None)):
        if settings.applies(n_users, n_items, (0 if z is None else len(z)) + (0 if f is None else n_features)):
            break
    dropped = ([f"{n_sessions} sessions"] if z is not Z and n_sessions else []) + \
        ([f"{n_features} item features"] if f is not F else [])
    if dropped:
        rank = min(n_users + n_sessions + n_features, n_items)
        log.info("item-item member: its %s left out (with %d sessions and %d item features its rank would be %d: "
                 "beyond item_item_max_rank %d, or %d × %d items beyond item_item_max_session_cells %d)",
                 " and ".join(dropped), n_sessions, n_features, rank, settings.max_rank, rank, n_items,
                 settings.max_session_cells)
    return z, f


def choose(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, rating: np.ndarray, n_users: int,
           n_items: int, settings: ItemItemSettings, carve: Carve,
           item_features: sp.csr_matrix | None) -> tuple[ItemItemSettings, dict[float, float], dict[float, float]]:
    """``settings`` with what the validation ``carve`` chose (:func:`score_choices`): the recency
    (with ``choose_recency``, else the configured one) and, with ``choose_features`` and
    ``item_features``, whether the features join the fit (weight ``features`` or 0); also the
    chosen weight's {recency: metric} (empty where the recency was not chosen) and {feature
    weight: its best metric} (empty where the features were not chosen between). Unchanged
    where the carve holds out nothing."""
    weights = (settings.features, 0.0) if settings.choose_features and item_features is not None else \
        (settings.features,)
    recencies = RECENCY_CHOICES if settings.choose_recency else (settings.recency,)
    scored = score_choices(user, item, timestamp, rating, n_users, n_items, settings, carve, item_features, weights,
                           recencies)
    if not scored:
        return settings, {}, {}
    # the best metric; on a tie the lower recency, then the fit without features
    features, recency = max(scored, key=lambda gr: (scored[gr], -gr[1], -gr[0]))
    by_recency = {r: v for (g, r), v in scored.items() if g == features} if settings.choose_recency else {}
    by_weight = {g: max(v for (h, _), v in scored.items() if h == g) for g in weights} if len(weights) > 1 else {}
    log.info("item-item member: recency %g%s chosen on a %s carve (%s %s)", recency,
             f", item features {'in' if features else 'out'}" if by_weight else "", carve.method, CHOICE_METRIC,
             "; ".join((f"features {g:g}: " if by_weight else "") + ", ".join(
                 f"recency {r:g}: {v:.4f}" for (h, r), v in scored.items() if h == g) for g in weights))
    return replace(settings, recency=recency, features=features), by_recency, by_weight


def feature_rows(design: Design) -> sp.csr_matrix | None:
    """CSR float64 (n_features, n_items): the items' indicator features of ``design`` (its item
    feature columns named ``name=value``, as one-hot and multi-hot encodings name them; numeric
    columns are left out), 1 where an item has the feature; features fewer than two items have
    are dropped (such a row links no items, it would only add to the rank). None without any."""
    layout = design.layout
    keep = [k for k, name in enumerate(layout.item_feature_columns) if "=" in name]
    if not keep:
        return None
    block = design.items[:, layout.item_feature_offset:layout.item_feature_offset + len(layout.item_feature_columns)]
    F = sp.csr_matrix(block.tocsc()[:, keep].T, dtype=np.float64)
    F.eliminate_zeros()
    F.data[:] = 1.0
    F = F[np.flatnonzero(np.diff(F.indptr) >= 2)]
    return sp.csr_matrix(F) if F.shape[0] else None


def score_choices(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, rating: np.ndarray, n_users: int,
                  n_items: int, settings: ItemItemSettings, carve: Carve, item_features: sp.csr_matrix | None = None,
                  feature_weights: tuple[float, ...] | None = None,
                  recencies: tuple[float, ...] = RECENCY_CHOICES) -> dict[tuple[float, float], float]:
    """{(feature weight, recency): validation metric} for each of ``feature_weights`` (default:
    ``settings.features`` alone) and ``recencies``: the member (these ``settings``, with that
    weight of ``item_features``) fitted on the interactions less ``carve``'s held-out part, each
    user's lists made with that recency's profile, their :data:`CHOICE_METRIC` on the held-out
    part (relevant = any held-out item; the user's carve training items and the items the carve's
    training part never saw excluded). Empty where the
    carve holds out nothing or leaves the member nothing to fit."""
    user, item = np.asarray(user, np.int64), np.asarray(item, np.int64)
    timestamp, rating = np.asarray(timestamp), np.asarray(rating)
    held = holdout_mask(carve.method, user, timestamp, n_users=n_users, holdout=carve.holdout, seed=carve.seed)
    if not held.any():
        return {}
    keep = ~held
    fit = replace(settings, choose_recency=False, choose_features=False)
    fitted = {g: fit_member(user[keep], item[keep], timestamp[keep], rating[keep], n_users, n_items,
                            replace(fit, features=g), item_features=item_features)
              for g in ((settings.features,) if feature_weights is None else feature_weights)}
    if any(member is None for member in fitted.values()):
        return {}
    c = rating_weights(user[keep], rating[keep], n_users, settings.rating_exponent)
    users = np.unique(user[held])
    seen = sp.csr_matrix((np.ones(int(keep.sum())), (user[keep], item[keep])), shape=(n_users, n_items))
    # items the carve's training part never saw stay out of its lists: a job's artifact has no id
    # column for an item unseen in training, so the member could not rank one there either
    unseen = np.bincount(item[keep], minlength=n_items) == 0
    relevant = Interactions(user[held].astype(np.int32), item[held].astype(np.int32),
                            rating[held].astype(np.float32), timestamp[held].astype(np.int64))
    choices = {}
    for recency in recencies:
        W = profiles(user[keep], item[keep], timestamp[keep], n_users, n_items, recency, settings.half_life, c)[users]
        for g, member in fitted.items():
            rows = member_user_rows(member.items, W)
            top = top_k(lambda part, rows=rows, items=member.items: _without(
                rows[np.searchsorted(users, part)] @ items.T, unseen), users, seen, CHOICE_K)
            choices[g, recency] = ranking_metrics(top, users, relevant, n_items, [CHOICE_K])[CHOICE_METRIC]
    return choices


def _without(scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``scores`` (n, n_items) with the columns where ``items`` (bool) is set at -inf."""
    scores[:, items] = -np.inf
    return scores


def member_user_rows(items: np.ndarray, W: sp.csr_matrix) -> np.ndarray:
    """The member's user rows (float32 (len(W), r)) for the profiles ``W`` (CSR (n, n_items)) from
    its item rows ``items`` (n_items, r) as :func:`fit_item_item` made them: what it would give a
    user of that profile, without the training matrix. With fewer factors than items (more
    items than rows of Y) the item rows are z_i / (λP_ii), z_i = (YᵀA^½)_i and λP_ii = 1 − ‖z_i‖²,
    so s = ‖z_i‖ solves ‖m_i‖ s² + s − ‖m_i‖ = 0 and the user row is Σ_j W_uj z_j; otherwise the
    user row is the profile itself."""
    W = sp.csr_matrix(W, dtype=np.float64)
    if items.shape[1] < items.shape[0]:
        m = np.asarray(items, np.float64)
        norm = np.linalg.norm(m, axis=1)
        s = 2 * norm / (1 + np.sqrt(1 + 4 * norm**2))
        rows = np.asarray(W @ (m * (1 - s**2)[:, None]))
    else:
        rows = W.toarray()
    return np.ascontiguousarray(rows, np.float32)


def fm_with_item_item(model: FMModel, layout: DesignLayout, users: np.ndarray, items: np.ndarray,
                      weight: float) -> FMModel:
    """``model`` with the member appended as a block of factors of its own: the user id columns
    get ``weight`` × users[u], the item id columns items[i], every other column zeros. The block
    is orthogonal to the FM's own factors, so on the design row of (u, i) the FM's score is
    ``model``'s plus ``weight`` × users[u]·items[i] exactly (for a design without the history
    block: the user's member row sits on the user's id column), and the result is still one FM
    (k = model's k + the member's rank)."""
    if layout.user_history:
        raise ValueError("the item-item member joins an FM trained on sampled negatives only without the user "
                         "history block (train.ials.history applies to the iALS engine)")
    if users.shape != (layout.n_users, items.shape[1]) or items.shape[0] != layout.n_items:
        raise ValueError(f"the item-item member's rows {users.shape} and {items.shape} do not fit the design's "
                         f"{layout.n_users} users and {layout.n_items} items")
    block = np.zeros((model.feature_dim, items.shape[1]), np.float32)
    block[:layout.n_users] = weight * users
    block[layout.item_offset:layout.item_offset + layout.n_items] = items
    return FMModel(V=np.hstack([model.V, block]), w=model.w, b=model.b, predictor_type=model.predictor_type)
