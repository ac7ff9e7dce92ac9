"""The item-item member (EASE on recency-weighted profiles): its exact factors against EASE's
closed form computed the plain way, the profiles, the FM it joins and the ranking it gives."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from blocks import blocks_dataset

from batch.artifact import FMModel
from batch.config import DataConfig, FMHyperparameters, IALSConfig
from batch.data.interactions import Dataset, FeatureTable, IdMap, Interactions
from batch.data.split import holdout_mask
from batch.features.design import build_design
from batch.offline import eval_users, list_metrics, top_k
from batch.rundir import RunDir
from batch.serve.repackage import repackage
from batch.train.ials import IALSSettings, fit_ials
from batch.train.ials_engine import (
    BIAS,
    IALSTrainer,
    history_block,
    interaction_weights,
    item_item_settings,
    member_carve,
    to_fm,
    with_item_item,
)
from batch.train.item_item import (
    RECENCY_CHOICES,
    Carve,
    ItemItemSettings,
    Sessions,
    feature_rows,
    fit_item_item,
    fit_member,
    fm_with_item_item,
    member_user_rows,
    profiles,
    rating_exponent,
    rating_weights,
    score_choices,
    session_rows,
)
from batch.train.samples import training_source


def brute_force_ease(X: np.ndarray, W: np.ndarray, l2: float, Z: np.ndarray | None = None,
                     sessions: float = 0.0, F: np.ndarray | None = None, features: float = 0.0) -> np.ndarray:
    """Σ_j W_uj B_ji with B = argmin ‖X − XB‖² + γ‖Z − ZB‖² + g‖F − FB‖² + λ‖B‖², diag B = 0
    (Z: every session's 0/1 row, whole histories included; γ: ``sessions``; F: the feature
    rows; g: ``features``), from its Lagrangian solution with the items × items inverse formed
    directly."""
    G = X.T @ X if Z is None else X.T @ X + sessions * Z.T @ Z
    if F is not None:
        G = G + features * F.T @ F
    P = np.linalg.inv(G + l2 * np.eye(X.shape[1]))
    B = np.eye(X.shape[1]) - P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return W @ B


def every_session(Z: Sessions, X: np.ndarray) -> np.ndarray:
    """Each session of ``Z`` as a dense row, whole-history ones (the user's row of ``X``) too."""
    return np.vstack([Z.rows.toarray(), X[Z.whole == 1]])


def random_pairs(n_users, n_items, seed):
    rng = np.random.default_rng(seed)
    X = (rng.random((n_users, n_items)) < 0.4).astype(np.float64)
    X[0, :] = 0
    X[0, 1] = 1  # a user of one item
    X[:, 2] = 0  # an item nobody has
    W = X * rng.uniform(1, 2, X.shape)
    return X, W


@pytest.mark.parametrize("shape", [(6, 11), (11, 6)])
def test_the_factors_give_eases_scores_on_every_pair_a_user_does_not_have(shape):
    X, W = random_pairs(*shape, seed=1)
    users, items = fit_item_item(sp.csr_matrix(X), sp.csr_matrix(W), 3.0)
    assert users.dtype == items.dtype == np.float32
    assert users.shape[1] == items.shape[1] == min(shape)
    expected = brute_force_ease(X, W, 3.0)
    unseen = X == 0
    np.testing.assert_allclose((users.astype(np.float64) @ items.T)[unseen], expected[unseen], rtol=1e-4, atol=1e-5)


def test_ease_weights_solve_the_constrained_least_squares():
    # the closed form is the optimum: the gradient of ‖X − XB‖² + λ‖B‖² vanishes off the diagonal
    X, _ = random_pairs(11, 6, seed=2)
    users, items = fit_item_item(sp.csr_matrix(X), sp.csr_matrix(X), 2.0)
    B = items.T.astype(np.float64)  # user rows are X itself on this side
    np.testing.assert_allclose(users, X)
    gradient = 2 * X.T @ (X @ B - X) + 2 * 2.0 * B
    off = ~np.eye(6, dtype=bool)
    assert np.abs(gradient[off]).max() < 1e-4
    assert np.all(np.diag(B) == 0)


def test_sessions_split_a_users_interactions_at_long_gaps_and_keep_only_those_that_add_a_row():
    # user 0: items 1, 2 at t=0, 100; gap 5000; items 3, 3, 4 at t=5100, 5150, 5200 → two sessions
    # user 1: items 0, 1 at t=0, 10: its only session is its whole history (its own row again)
    # user 2: item 2 at t=0, item 0 at t=9000: two sessions of one item each
    # user 3: no timestamps (all 0): one session, the whole history
    # user 4: no interactions
    user = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3])
    item = np.array([1, 2, 3, 3, 4, 0, 1, 2, 0, 0, 1, 2])
    time = np.array([100, 0, 5150, 5100, 5200, 0, 10, 0, 9000, 0, 0, 0])
    Z = session_rows(user, item, time, 5, 5, gap=1000)
    np.testing.assert_array_equal(Z.rows.toarray(), [[0, 1, 1, 0, 0], [0, 0, 0, 1, 1]])
    np.testing.assert_array_equal(Z.whole, [0, 1, 0, 1, 0])  # users 1 and 3: their row again
    assert len(Z) == 2
    flat = session_rows(user, item, np.zeros_like(time), 5, 5, gap=1000)  # no timestamps
    assert flat.rows.shape == (0, 5)
    np.testing.assert_array_equal(flat.whole, [1, 1, 1, 1, 0])
    empty = session_rows(user[:0], item[:0], time[:0], 5, 5, gap=1000)
    assert empty.rows.shape == (0, 5) and not empty.whole.any()


@pytest.mark.parametrize("shape, sessions", [((4, 30), 6), ((5, 8), 9), ((5, 7), 2)])  # Woodbury side / items side
def test_the_factors_with_sessions_give_eases_scores_fitted_on_users_and_weighted_sessions(shape, sessions):
    X, W = random_pairs(*shape, seed=4)
    rows = (np.random.default_rng(5).random((sessions, shape[1])) < 0.3).astype(np.float64)
    whole = np.zeros(shape[0])
    whole[[1, 3]] = 1  # users 1 and 3 made their whole history in one session
    Z = Sessions(sp.csr_matrix(rows), whole)
    users, items = fit_item_item(sp.csr_matrix(X), sp.csr_matrix(W), 3.0, Z, 0.6)
    assert users.shape[1] == items.shape[1] == min(shape[0] + sessions, shape[1])
    unseen = X == 0
    np.testing.assert_allclose((users.astype(np.float64) @ items.T)[unseen],
                               brute_force_ease(X, W, 3.0, every_session(Z, X), 0.6)[unseen], rtol=1e-4, atol=1e-5)
    # and the user rows follow from the item rows alone (what a refresh uses)
    np.testing.assert_allclose(member_user_rows(items, sp.csr_matrix(W)), users, rtol=1e-4, atol=1e-5)
    # weight 0: the sessions change nothing
    unweighted = fit_item_item(sp.csr_matrix(X), sp.csr_matrix(W), 3.0, Z, 0.0)
    np.testing.assert_allclose((unweighted[0].astype(np.float64) @ unweighted[1].T)[unseen],
                               brute_force_ease(X, W, 3.0)[unseen], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape, n_features", [((4, 30), 3), ((5, 9), 3), ((5, 7), 2)])  # Woodbury / items side
def test_the_factors_with_feature_rows_give_eases_scores_with_the_features_in_the_gram_matrix(shape, n_features):
    X, W = random_pairs(*shape, seed=12)
    rng = np.random.default_rng(13)
    Z = Sessions(sp.csr_matrix((rng.random((2, shape[1])) < 0.3).astype(np.float64)), np.zeros(shape[0]))
    F = (rng.random((n_features, shape[1])) < 0.4).astype(np.float64)
    users, items = fit_item_item(sp.csr_matrix(X), sp.csr_matrix(W), 3.0, Z, 0.6, sp.csr_matrix(F), 5.0)
    assert users.shape[1] == items.shape[1] == min(shape[0] + 2 + n_features, shape[1])
    unseen = X == 0
    expected = brute_force_ease(X, W, 3.0, every_session(Z, X), 0.6, F, 5.0)
    np.testing.assert_allclose((users.astype(np.float64) @ items.T)[unseen], expected[unseen], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(member_user_rows(items, sp.csr_matrix(W)), users, rtol=1e-4, atol=1e-5)
    # the features change the scores; weight 0 or no rows: as without them
    assert not np.allclose(expected[unseen], brute_force_ease(X, W, 3.0, every_session(Z, X), 0.6)[unseen])
    for off in (fit_item_item(sp.csr_matrix(X), sp.csr_matrix(W), 3.0, Z, 0.6, sp.csr_matrix(F), 0.0),
                fit_item_item(sp.csr_matrix(X), sp.csr_matrix(W), 3.0, Z, 0.6, sp.csr_matrix((0, shape[1])), 5.0)):
        np.testing.assert_allclose((off[0].astype(np.float64) @ off[1].T)[unseen],
                                   brute_force_ease(X, W, 3.0, every_session(Z, X), 0.6)[unseen], rtol=1e-4, atol=1e-5)


def test_feature_rows_are_the_items_indicator_columns_and_leave_numeric_and_unshared_ones_out():
    inter = Interactions(np.array([0, 1], np.int32), np.array([0, 1], np.int32), np.ones(2, np.float32),
                         np.zeros(2, np.int64))
    # items' columns: two genres, a standardised price, a genre no item has, a brand one item has
    table = np.array([[1, 1, 0.7, 0, 0], [0, 1, -1.3, 0, 1], [0, 0, 0.0, 0, 0], [1, 0, 2.0, 0, 0]], np.float32)
    ds = Dataset(inter, inter.take(np.zeros(2, bool)), IdMap(np.arange(2)), IdMap(np.arange(4)),
                 item_features=FeatureTable(sp.csr_matrix(table),
                                            ("genre=A", "genre=B", "price", "genre=C", "brand=X")))
    F = feature_rows(build_design(ds))
    np.testing.assert_array_equal(F.toarray(), [[1, 0, 0, 1], [1, 1, 0, 0]])
    assert F.dtype == np.float64
    assert feature_rows(build_design(ds, use_features=False)) is None
    numeric = Dataset(inter, ds.test, ds.users, ds.items,
                      item_features=FeatureTable(sp.csr_matrix(table[:, 2:3]), ("price",)))
    assert feature_rows(build_design(numeric)) is None


def test_fit_member_leaves_out_the_features_then_the_sessions_that_would_take_it_past_max_rank():
    rng = np.random.default_rng(6)
    user = np.repeat(np.arange(6), 8)
    item = np.concatenate([rng.choice(40, 8, replace=False) for _ in range(6)])
    sittings = np.array([0, 10, 20, 5000, 5010, 10000, 10010, 10020])  # users 0-3: 3 sessions each
    time = np.concatenate([np.tile(sittings, 4), np.tile(np.arange(8) * 10, 2)])  # users 4, 5: one sitting
    rating = rng.integers(1, 6, len(user)).astype(np.float64)
    F = sp.csr_matrix((rng.random((3, 40)) < 0.3).astype(np.float64))
    settings = ItemItemSettings(l2=3.0, sessions=1.0, session_gap=100, features=2.0, max_rank=21)

    def member(**changes):
        return fit_member(user, item, time, rating, 6, 40, dataclasses.replace(settings, **changes), item_features=F)

    def scores(m):
        return m.users.astype(np.float64) @ m.items.T.astype(np.float64)

    c = rating_weights(user, rating, 6, settings.rating_exponent)
    X = profiles(user, item, time, 6, 40, 0.0, settings.half_life, c).toarray()
    W = profiles(user, item, time, 6, 40, settings.recency, settings.half_life, c).toarray()
    Z = session_rows(user, item, time, 6, 40, 100, c)
    assert len(Z) == 12 and list(Z.whole) == [0, 0, 0, 0, 1, 1]
    unseen = X == 0

    def expected(rows, features):
        rows = np.vstack([rows, X[Z.whole == 1]])  # the whole-history sessions: each its user's row
        return brute_force_ease(X, W, 3.0, rows, 1.0, F.toarray(), features)[unseen]

    both = member()
    assert (both.sessions, both.features, both.rank) == (14, 3, 21)
    assert both.details()["item_item_feature_rows"] == 3
    np.testing.assert_allclose(scores(both)[unseen], expected(Z.rows.toarray(), 2.0), rtol=1e-4, atol=1e-5)
    # one short of both: the sessions (12 rows) stay, the features go
    sessions_only = member(max_rank=20)
    assert (sessions_only.sessions, sessions_only.features, sessions_only.rank) == (14, 0, 18)
    np.testing.assert_allclose(scores(sessions_only)[unseen], expected(Z.rows.toarray(), 0.0), rtol=1e-4, atol=1e-5)
    # room for the features but not the session rows; the whole-history weights cost no rank and stay
    features_only = member(max_rank=17)
    assert (features_only.sessions, features_only.features, features_only.rank) == (2, 3, 9)
    np.testing.assert_allclose(scores(features_only)[unseen], expected(np.zeros((0, 40)), 2.0), rtol=1e-4,
                               atol=1e-5)
    neither = member(max_rank=8)
    assert (neither.sessions, neither.features, neither.rank) == (2, 0, 6)
    np.testing.assert_allclose(scores(neither)[unseen], expected(np.zeros((0, 40)), 0.0), rtol=1e-4, atol=1e-5)
    assert member(max_rank=5) is None


def test_fit_member_leaves_out_the_sessions_that_would_take_it_past_max_rank():
    rng = np.random.default_rng(6)
    user = np.repeat(np.arange(4), 8)
    item = np.concatenate([rng.choice(40, 8, replace=False) for _ in range(4)])
    time = np.tile(np.array([0, 10, 20, 5000, 5010, 10000, 10010, 10020]), 4)  # 3 sessions a user
    rating = rng.integers(1, 6, len(user)).astype(np.float64)

    def member(settings):
        return fit_member(user, item, time, rating, 4, 40, settings)

    settings = ItemItemSettings(sessions=1.0, session_gap=100, max_rank=16)
    fitted = member(settings)
    assert (fitted.sessions, fitted.rank) == (12, 16) and len(fitted.items) == 40
    narrow = member(dataclasses.replace(settings, max_rank=15))
    assert (narrow.sessions, narrow.rank) == (0, 4)
    plain = member(dataclasses.replace(settings, sessions=0.0))
    np.testing.assert_array_equal(narrow.users @ narrow.items.T, plain.users @ plain.items.T)
    assert member(dataclasses.replace(settings, max_rank=3)) is None
    assert settings.applies(4, 40, 12) and not settings.applies(4, 40, 13)
    # the item block's size: 40 items × rank 16 = 640 cells
    small_block = dataclasses.replace(settings, max_session_cells=639)
    assert not small_block.applies(4, 40, 12) and small_block.applies(4, 40, 0)
    assert member(small_block).sessions == 0
    wide_block = dataclasses.replace(settings, max_session_cells=640)
    assert member(wide_block).sessions == 12


def test_rating_weights_divide_by_the_users_highest_rating_and_ignore_a_scale_without_a_top():
    user = np.array([0, 0, 0, 1, 1, 2])
    rating = np.array([4.0, 1.0, np.nan, 2.0, 2.0, np.nan])
    np.testing.assert_allclose(rating_weights(user, rating, 4, 0.5), [1, 0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(rating_weights(user, rating, 4, 1.0), [1, 0.25, 1, 1, 1, 1])
    np.testing.assert_array_equal(rating_weights(user, rating, 4, 0.0), np.ones(6))
    np.testing.assert_array_equal(rating_weights(user, np.full(6, np.nan), 4, 0.5), np.ones(6))  # no ratings
    assert rating_weights(user[:0], rating[:0], 4, 0.5).shape == (0,)
    # a scale that holds 0 has no top to divide by: a fit ignores its ratings altogether
    with_zero = np.array([4.0, 0.0, 3.0, 2.0, 2.0, 1.0])
    assert rating_exponent(with_zero, 0.5) == 0.0 and rating_exponent(rating, 0.5) == 0.5
    assert rating_exponent(np.full(6, np.nan), 0.5) == 0.5 and rating_exponent(with_zero, 0.0) == 0.0
    # (a rating ≤ 0 counts as none: what a refresh meets when new data holds one)
    np.testing.assert_allclose(rating_weights(user, with_zero, 4, 0.5), [1, 1, 0.75 ** 0.5, 1, 1, 1])


def test_the_rating_weights_enter_the_profiles_and_sessions_at_each_pairs_latest_interaction():
    # user 0: item 1 at t=0 (weight 0.2) and again at t=50 (0.8), item 2 at t=10 (0.5) → one
    # session; item 3 at t=5000 (0.1) alone. User 1: items 0, 1 at t=0, 10: its whole history.
    user, item = np.array([0, 0, 0, 0, 1, 1]), np.array([1, 1, 2, 3, 0, 1])
    time, weight = np.array([0, 50, 10, 5000, 0, 10]), np.array([0.2, 0.8, 0.5, 0.1, 0.3, 0.6])
    W = profiles(user, item, time, 2, 4, recency=0.0, half_life=1.0, weight=weight)
    np.testing.assert_allclose(W.toarray(), [[0, 0.8, 0.5, 0.1], [0.3, 0.6, 0, 0]])
    recent = profiles(user, item, time, 2, 4, recency=1.0, half_life=1.0, weight=weight)
    np.testing.assert_allclose(recent.toarray(), [[0, 0.8 * 1.5, 0.5 * 1.25, 0.1 * 2], [0.3 * 1.5, 0.6 * 2, 0, 0]])
    Z = session_rows(user, item, time, 2, 4, gap=1000, weight=weight)
    np.testing.assert_allclose(Z.rows.toarray(), [[0, 0.8, 0.5, 0]])
    np.testing.assert_array_equal(Z.whole, [0, 1])


@pytest.mark.parametrize("n_users, n_items", [(5, 30), (9, 6)])  # Woodbury side / items side
def test_fit_member_is_ease_on_the_rating_weights_with_weighted_sessions(n_users, n_items):
    rng = np.random.default_rng(8)
    X0, _ = random_pairs(n_users, n_items, seed=9)
    user, item = np.nonzero(X0)
    time = rng.integers(0, 4, len(user)) * 1000 + rng.integers(0, 50, len(user))  # a few sittings a user
    rating = rng.choice([1.0, 2.5, 4.0, 5.0], len(user))
    settings = ItemItemSettings(l2=3.0, sessions=0.7, session_gap=100, recency=0.5, half_life=2.0,
                                rating_exponent=0.5, max_rank=100)
    fitted = fit_member(user, item, time, rating, n_users, n_items, settings)
    highest = np.zeros(n_users)
    np.maximum.at(highest, user, rating)
    c = (rating / highest[user]) ** 0.5
    X = np.zeros((n_users, n_items))
    X[user, item] = c  # one interaction a pair
    W = profiles(user, item, time, n_users, n_items, 0.5, 2.0).toarray() * X
    Z = session_rows(user, item, time, n_users, n_items, 100, c)
    assert len(Z) > 0 and fitted.sessions == len(Z) + Z.whole.sum()
    unseen = X0 == 0
    expected = brute_force_ease(X, W, 3.0, every_session(Z, X), 0.7)
    np.testing.assert_allclose((fitted.users.astype(np.float64) @ fitted.items.T)[unseen], expected[unseen],
                               rtol=1e-4, atol=1e-5)
    assert fitted.details()["item_item_rating_exponent"] == 0.5
    # without ratings, or with a rating ≤ 0 anywhere, it is EASE on the 0/1 matrix
    unrated = fit_member(user, item, time, np.full(len(user), np.nan), n_users, n_items, settings)
    with_zero = fit_member(user, item, time, np.r_[0.0, rating[1:]], n_users, n_items, settings)
    assert with_zero.details()["item_item_rating_exponent"] == 0.0
    np.testing.assert_allclose(with_zero.users @ with_zero.items.T, unrated.users @ unrated.items.T, rtol=1e-5,
                               atol=1e-6)
    ones = session_rows(user, item, time, n_users, n_items, 100)
    plain = brute_force_ease(X0, profiles(user, item, time, n_users, n_items, 0.5, 2.0).toarray(), 3.0,
                             every_session(ones, X0), 0.7)
    np.testing.assert_allclose((unrated.users.astype(np.float64) @ unrated.items.T)[unseen], plain[unseen],
                               rtol=1e-4, atol=1e-5)


def test_profiles_weight_recent_items_and_count_a_repeat_once_at_its_latest():
    # user 0: item 2 at t=1, item 1 at t=2 and t=5, item 3 at t=2 (after item 1's first by input order)
    W = profiles(np.array([0, 0, 0, 1, 0]), np.array([1, 2, 1, 0, 3]), np.array([5, 1, 2, 0, 2]), 2, 4,
                 recency=1.0, half_life=1.0)
    np.testing.assert_allclose(W.toarray(), [[0, 2.0, 1.25, 1.5], [2.0, 0, 0, 0]])
    flat = profiles(np.array([0, 0, 0]), np.array([1, 2, 1]), np.array([3, 2, 1]), 1, 3, recency=0.0, half_life=5.0)
    np.testing.assert_array_equal(flat.toarray(), [[0, 1, 1]])


@pytest.mark.parametrize("history", [False, True])
def test_the_fm_with_the_member_and_its_repackaged_vectors_score_as_ials_plus_beta_ease(history):
    ds = blocks_dataset(n_users=6, n_items=20)
    design = build_design(ds, history=history)
    R = interaction_weights(ds.train.user, ds.train.item, ds.n_users, ds.n_items)
    factors = fit_ials(torch, R, IALSSettings(factors=3, epochs=2), history=history_block(design))
    W = profiles(ds.train.user, ds.train.item, ds.train.timestamp, 6, 20, recency=1.0, half_life=2.0)
    member = fit_item_item(R, W, 5.0)
    combined = with_item_item(factors, *member, 0.7)
    assert combined.item.shape[1] == 3 + 6
    unseen = R.toarray() == 0
    expected = factors.scores() + 0.7 * brute_force_ease(R.toarray(), W.toarray(), 5.0) + BIAS
    np.testing.assert_allclose((combined.scores() + BIAS)[unseen], expected[unseen], rtol=1e-4, atol=1e-4)
    model = to_fm(combined, design, "binary_classifier")
    users, items = np.repeat(np.arange(6), 20), np.tile(np.arange(20), 6)
    fm = model.decision(design.pair_rows(users, items))
    np.testing.assert_allclose(fm, (combined.scores() + BIAS).ravel(), rtol=1e-4, atol=1e-4)
    vectors = repackage(model, ds, design.layout)
    np.testing.assert_allclose(vectors.scores(users, items), fm, rtol=1e-4, atol=1e-4)


def fit_trainer(ds, config: IALSConfig, seed=0, factors=4):
    design = build_design(ds, history=config.history)
    source = training_source(ds, "implicit", threshold=4, negatives=4, seed=0)
    hp = FMHyperparameters(num_factors=factors, epochs=3, seed=seed)
    return design, IALSTrainer(config, "cpu").fit(design, source, None, hp, "binary_classifier")


def test_the_trainer_adds_the_member_only_within_its_size_limits_and_is_deterministic():
    ds = blocks_dataset(n_users=12, n_items=30)
    _, with_member = fit_trainer(ds, IALSConfig())
    assert with_member.model.V.shape[1] == 4 + 12 and with_member.details["item_item_factors"] == 12
    _, again = fit_trainer(ds, IALSConfig())
    np.testing.assert_array_equal(with_member.model.V, again.model.V)
    np.testing.assert_array_equal(with_member.model.w, again.model.w)
    for limited in (IALSConfig(item_item_max_rank=11), IALSConfig(item_item_max_cells=359), IALSConfig(item_item=0)):
        _, alone = fit_trainer(ds, limited)
        assert alone.model.V.shape[1] == 4 and alone.details["item_item_factors"] == 0
    # the items' indicator features (parity=even / parity=odd) join the member's fit as two rows
    parity = blocks_dataset(n_users=12, n_items=30, features=True)
    parity = dataclasses.replace(parity, item_features=FeatureTable(parity.item_features.matrix,
                                                                    ("parity=even", "parity=odd")))
    _, with_features = fit_trainer(parity, IALSConfig())
    assert with_features.details["item_item_feature_rows"] == 2 and with_features.model.V.shape[1] == 4 + 14
    _, without = fit_trainer(parity, IALSConfig(item_item_features=0))
    assert without.details["item_item_feature_rows"] == 0 and without.model.V.shape[1] == 4 + 12


def test_the_member_alone_ranks_each_users_own_taste_group_first():
    # Known answer: even users like even items, odd users odd ones. With iALS nearly switched off
    # (one factor, one epoch, tiny β scale against the member's), the member's lists hold only
    # the user's own group and its held-out item ranks among that group's 13 unseen items.
    ds = blocks_dataset()
    design, result = fit_trainer(ds, IALSConfig(item_item=50.0, item_item_l2=50.0), factors=1)
    users = np.repeat(np.arange(ds.n_users), ds.n_items)
    items = np.tile(np.arange(ds.n_items), ds.n_users)
    scores = result.model.decision(design.pair_rows(users, items)).reshape(ds.n_users, ds.n_items)
    masked = np.where(ds.train.matrix(ds.n_users, ds.n_items).toarray(), -np.inf, scores)
    same_group = (np.arange(ds.n_users)[:, None] % 2) == (np.arange(ds.n_items)[None, :] % 2)
    top10 = np.argsort(-masked, axis=1)[:, :10]
    assert np.mean(np.take_along_axis(same_group, top10, 1)) == 1.0
    rank = (masked > masked[ds.test.user, ds.test.item][:, None]).sum(1)
    assert np.all(rank < 13)


def test_settings_gate():
    s = ItemItemSettings(max_rank=10, max_cells=200)
    assert s.applies(10, 20) and not s.applies(11, 20) and not s.applies(10, 21)
    assert not ItemItemSettings(weight=0).applies(2, 2)
    with pytest.raises(ValueError, match="l2 must be positive"):
        fit_item_item(sp.csr_matrix(np.eye(2)), sp.csr_matrix(np.eye(2)), 0.0)


def test_the_member_joins_any_fm_and_its_repackaged_vectors_score_as_fm_plus_beta_ease():
    # the SageMaker backend's case: an FM trained on sampled negatives (here random, with item
    # side features) gets the member as an orthogonal block on the id columns
    ds = blocks_dataset(n_users=6, n_items=20, features=True)
    design = build_design(ds)
    assert design.layout.item_feature_columns
    rng = np.random.default_rng(3)
    fm = FMModel(V=rng.normal(size=(design.layout.feature_dim, 3)), w=rng.normal(size=design.layout.feature_dim),
                 b=0.2, predictor_type="binary_classifier")
    R = interaction_weights(ds.train.user, ds.train.item, ds.n_users, ds.n_items)
    W = profiles(ds.train.user, ds.train.item, ds.train.timestamp, 6, 20, recency=1.0, half_life=2.0)
    model = fm_with_item_item(fm, design.layout, *fit_item_item(R, W, 5.0), 0.7)
    assert model.num_factors == 3 + 6 and model.b == fm.b
    np.testing.assert_array_equal(model.w, fm.w)
    users, items = np.repeat(np.arange(6), 20), np.tile(np.arange(20), 6)
    rows = design.pair_rows(users, items)
    unseen = (R.toarray() == 0).ravel()
    expected = fm.decision(rows) + 0.7 * brute_force_ease(R.toarray(), W.toarray(), 5.0).ravel()
    np.testing.assert_allclose(model.decision(rows)[unseen], expected[unseen], rtol=1e-4, atol=1e-4)
    vectors = repackage(model, ds, design.layout)
    np.testing.assert_allclose(vectors.scores(users, items), model.decision(rows), rtol=1e-4, atol=1e-4)


def test_the_member_refuses_a_design_with_the_history_block_or_rows_that_do_not_fit():
    ds = blocks_dataset(n_users=6, n_items=20)
    for history, items, message in [(True, 20, "history block"),
                                    (False, 19, "do not fit the design's 6 users and 20 items")]:
        layout = build_design(ds, history=history).layout
        fm = FMModel(V=np.zeros((layout.feature_dim, 2)), w=np.zeros(layout.feature_dim), b=0.0,
                     predictor_type="binary_classifier")
        with pytest.raises(ValueError, match=message):
            fm_with_item_item(fm, layout, np.zeros((6, 6)), np.zeros((items, 6)), 1.0)


@pytest.mark.parametrize("backend, weights, extra", [
    ("local", {"item_item": 0.5, "item_item_sagemaker": 0.0}, 7),
    ("local", {"item_item": 0.0, "item_item_sagemaker": 15.0}, 0),
    ("sagemaker", {"item_item": 0.0, "item_item_sagemaker": 15.0}, 7),
    ("sagemaker", {"item_item": 0.5, "item_item_sagemaker": 0.0}, 0),
])
def test_each_backend_uses_its_own_member_weight_and_its_runs_model_may_hold_the_members_factors(
        tmp_path, backend, weights, extra):
    ials = IALSConfig(item_item_max_rank=7, **weights)
    settings = item_item_settings(ials, backend)
    assert settings.weight == (weights["item_item_sagemaker"] if backend == "sagemaker" else weights["item_item"])
    run = RunDir(tmp_path)
    build_design(blocks_dataset(n_users=6, n_items=20)).layout.save(run.layout)
    run.write_json("config.json", {"train": {"mode": "implicit", "backend": backend, "objective": "auto",
                                             "hyperparameters": {"num_factors": 4}, "ials": dataclasses.asdict(ials)}})
    assert run._model_shape()[1] == 4 + extra
    # the member's rank is at most the number of items (20 here), whatever max_rank allows
    wide = dataclasses.asdict(dataclasses.replace(ials, item_item_max_rank=6144))
    run.write_json("config.json", {"train": {"mode": "implicit", "backend": backend, "objective": "auto",
                                             "hyperparameters": {"num_factors": 4}, "ials": wide}})
    assert run._model_shape()[1] == 4 + (20 if extra else 0)


def drifting_tastes(n_users=40, seed=0):
    """Each user takes up 6 of the 10 items of one group (of 4), then, a day later, 6 of another's."""
    rng = np.random.default_rng(seed)
    user, item, time = [], [], []
    for u in range(n_users):
        early, late = rng.choice(4, 2, replace=False)
        for g, start in ((early, 0), (late, 86_400)):
            user += [u] * 6
            item += list(g * 10 + rng.choice(10, 6, replace=False))
            time += list(start + 60 * np.arange(6))
    return np.array(user), np.array(item), np.array(time), np.full(len(user), np.nan)


def test_the_member_chooses_a_high_recency_where_the_held_out_items_follow_a_users_latest_taste():
    user, item, time, rating = drifting_tastes()
    settings = ItemItemSettings(l2=5.0, recency=0.0)
    fitted = fit_member(user, item, time, rating, 40, 40, settings, Carve("last", holdout=3))
    choices = fitted.details()["item_item_recency_validation"]
    assert list(choices) == [f"{r:g}" for r in RECENCY_CHOICES]
    assert choices["4"] > choices["0"] + 0.05
    assert fitted.recency == max(RECENCY_CHOICES, key=lambda r: choices[f"{r:g}"]) > 0
    # the member's own rows are the chosen recency's
    W = profiles(user, item, time, 40, 40, fitted.recency, settings.half_life)
    np.testing.assert_allclose(member_user_rows(fitted.items, W), fitted.users, rtol=1e-4, atol=1e-5)
    # without a carve, or without the choice, the configured recency stays
    for kept in (fit_member(user, item, time, rating, 40, 40, settings),
                 fit_member(user, item, time, rating, 40, 40, dataclasses.replace(settings, choose_recency=False),
                            Carve("last", holdout=3))):
        assert kept.recency == 0.0 and "item_item_recency_validation" not in kept.details()


def groups_of_ten(n_items=40):
    """CSR (n_items // 10, n_items): feature k (``group=k``) on items 10k … 10k + 9."""
    return sp.csr_matrix((np.ones(n_items), (np.arange(n_items) // 10, np.arange(n_items))))


def test_each_recency_and_feature_weight_is_scored_as_a_member_refitted_with_them_on_the_carve_would_rank():
    user, item, time, rating = drifting_tastes(seed=1)
    rating = np.random.default_rng(2).choice([2.0, 4.0, 5.0], len(user))
    settings = ItemItemSettings(l2=5.0, sessions=1.0, session_gap=600, features=8.0)
    F = groups_of_ten()
    choices = score_choices(user, item, time, rating, 40, 40, settings, Carve("random", holdout=3, seed=4), F,
                            (8.0, 0.0))
    assert set(choices) == {(g, r) for g in (8.0, 0.0) for r in RECENCY_CHOICES}
    held = holdout_mask("random", user, time, n_users=40, holdout=3, seed=4)
    keep = ~held
    part = [Interactions(user[m].astype(np.int32), item[m].astype(np.int32), rating[m].astype(np.float32), time[m])
            for m in (keep, held)]
    data = Dataset(*part, IdMap(np.arange(40)), IdMap(np.arange(40)))
    users = eval_users(data)
    seen = data.train.matrix(40, 40)
    for g in (8.0, 0.0):
        for recency in RECENCY_CHOICES:
            refit = fit_member(user[keep], item[keep], time[keep], rating[keep], 40, 40,
                               dataclasses.replace(settings, recency=recency, features=g, choose_recency=False,
                                                   choose_features=False), item_features=F)
            assert refit.features == (4 if g else 0)
            scores = refit.users.astype(np.float64) @ refit.items.T.astype(np.float64)
            expected = list_metrics(top_k(lambda b, s=scores: s[b], users, seen, 10), users, data, 10)["ndcg@10"]
            assert choices[g, recency] == pytest.approx(expected, abs=1e-6)
    # the features change the lists here, so the choice between them means something
    assert any(choices[8.0, r] != choices[0.0, r] for r in RECENCY_CHOICES)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_member_keeps_features_that_follow_the_tastes_and_leaves_out_features_that_are_noise(seed):
    # Known answer: users take up items of two of four groups of ten; a feature per group says
    # something, the same features on shuffled items say nothing and only pull unrelated items together
    user, item, time, rating = drifting_tastes(seed=seed)
    settings = ItemItemSettings(l2=5.0, features=8.0)
    carve = Carve("random", holdout=3, seed=1)
    groups = groups_of_ten()
    noise = sp.csr_matrix(groups.toarray()[:, np.random.default_rng(seed).permutation(40)])
    kept = fit_member(user, item, time, rating, 40, 40, settings, carve, groups)
    left_out = fit_member(user, item, time, rating, 40, 40, settings, carve, noise)
    assert kept.features == 4 and left_out.features == 0
    for fitted in (kept, left_out):
        by_weight = fitted.details()["item_item_features_validation"]
        assert set(by_weight) == {"8", "0"}
        assert fitted.details()["item_item_recency_validation"] == {
            f"{r:g}": v for r, v in fitted.choices.items()}
    assert kept.details()["item_item_features_validation"]["8"] > kept.details()["item_item_features_validation"]["0"]
    assert left_out.details()["item_item_features_validation"]["8"] < \
        left_out.details()["item_item_features_validation"]["0"]
    # left out, the member is the one fitted without features
    plain = fit_member(user, item, time, rating, 40, 40, settings, carve)
    np.testing.assert_array_equal(left_out.users @ left_out.items.T, plain.users @ plain.items.T)
    # not chosen between: the configured weight, no figures; without features there is nothing to choose
    forced = fit_member(user, item, time, rating, 40, 40, dataclasses.replace(settings, choose_features=False), carve,
                        noise)
    assert forced.features == 4 and "item_item_features_validation" not in forced.details()
    assert plain.features == 0 and "item_item_features_validation" not in plain.details()


def test_the_carve_leaves_items_its_training_part_never_saw_out_of_its_lists():
    # Users take up six items of their group of ten; item 9 (group 0) only user 0 takes, as the
    # latest. Held out by the carve, item 9 is one no job trained on the carve's part could list
    # (its artifact has no id column for it), though the group feature would rank it first
    rng = np.random.default_rng(0)
    user, item = [], []
    for u in range(12):
        user += [u] * 6
        item += list((u % 4) * 10 + rng.choice(9, 6, replace=False))  # items 10g … 10g + 8
    user, item = np.array(user + [0]), np.array(item + [9])
    time, rating = np.arange(len(user)), np.full(len(user), np.nan)
    settings = ItemItemSettings(l2=5.0, features=50.0, sessions=0.0)
    carve = Carve("last", holdout=1)
    choices = score_choices(user, item, time, rating, 12, 40, settings, carve, groups_of_ten(), (50.0,), (0.0,))
    held = holdout_mask("last", user, time, n_users=12, holdout=1)
    assert list(item[held & (user == 0)]) == [9] and not (item[~held] == 9).any()
    keep = ~held
    part = [Interactions(user[m].astype(np.int32), item[m].astype(np.int32), rating[m].astype(np.float32), time[m])
            for m in (keep, held)]
    data = Dataset(*part, IdMap(np.arange(12)), IdMap(np.arange(40)))
    users, seen = eval_users(data), data.train.matrix(12, 40)
    refit = fit_member(user[keep], item[keep], time[keep], rating[keep], 12, 40,
                       dataclasses.replace(settings, recency=0.0, choose_recency=False, choose_features=False),
                       item_features=groups_of_ten())
    scores = refit.users.astype(np.float64) @ refit.items.T.astype(np.float64)
    never = np.bincount(item[keep], minlength=40) == 0

    def ndcg(s):
        return list_metrics(top_k(lambda b: s[b], users, seen, 10), users, data, 10)["ndcg@10"]

    assert choices[50.0, 0.0] == pytest.approx(ndcg(np.where(never, -np.inf, scores)), abs=1e-6)
    assert choices[50.0, 0.0] < ndcg(scores) - 0.01  # listed, item 9 would have been a hit


def test_a_carve_that_holds_out_nothing_chooses_nothing():
    user, item = np.arange(6), np.arange(6)  # one interaction a user: nothing to hold out
    settings = ItemItemSettings(l2=5.0)
    assert score_choices(user, item, np.zeros(6), np.full(6, np.nan), 6, 6, settings, Carve("random")) == {}
    assert fit_member(user, item, np.zeros(6), np.full(6, np.nan), 6, 6, settings, Carve("last")).recency == 1.0


@pytest.mark.parametrize("split, method", [("random", "random"), ("given", "random"), ("auto", "random"),
                                           ("last", "last"), ("none", "last")])
def test_the_member_chooses_on_a_carve_held_out_as_the_jobs_split(split, method):
    data = DataConfig(split=split, holdout=7, seed=3)
    assert member_carve(data) == Carve(method, 7, 3)
