"""iALS: the closed-form row solves against a brute-force objective, a known ranking, determinism,
and the FM it is written out as."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from blocks import blocks_dataset

from batch.artifact import FMModel
from batch.config import FMHyperparameters, IALSConfig, JobConfig, TrainConfig
from batch.data.interactions import FeatureTable
from batch.errors import ConfigError
from batch.features.design import build_design
from batch.serve.repackage import repackage
from batch.train import make_trainer
from batch.train.ials import IALSSettings, _History, _Side, _solve, fit_ials
from batch.train.ials_engine import BIAS, IALSTrainer, history_block, interaction_weights, to_fm
from batch.train.local import LocalFMTrainer
from batch.train.samples import training_source
from batch.train.stage import pair_decisions


def brute_force_objective(R, U, Q, s: IALSSettings) -> torch.Tensor:
    """The iALS objective summed over every (user, item) pair, float64, no tricks."""
    k = s.factors
    dense = torch.from_numpy(R.toarray()).double()
    score = U[:, :k] @ Q[:, :k].T + U[:, k:] + Q[:, k:].T
    observed = dense > 0
    loss = (dense * (score - 1) ** 2)[observed].sum() + s.unobserved_weight * (score ** 2).sum()
    reg_u = s.reg * (observed.sum(1) + s.unobserved_weight * R.shape[1]) ** s.reg_exponent
    reg_i = s.reg * (observed.sum(0) + s.unobserved_weight * R.shape[0]) ** s.reg_exponent
    return loss + (reg_u * (U ** 2).sum(1)).sum() + (reg_i * (Q ** 2).sum(1)).sum()


def tiny(seed=0):
    rng = np.random.default_rng(seed)
    dense = (rng.random((6, 9)) < 0.35) * rng.uniform(1, 3, (6, 9))
    dense[0, 0] = 2.0  # nobody without interactions, and weights other than 1
    dense[:, 1] = np.where(dense[:, 1] > 0, dense[:, 1], 0.0)
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.mark.parametrize("cg_steps", [0, 40])
@pytest.mark.parametrize("reg_exponent", [0.0, 1.0])
def test_a_row_solve_zeroes_the_gradient_of_the_whole_objective(cg_steps, reg_exponent):
    # After solving the user rows with the items fixed, the brute-force objective's gradient in
    # the user rows [x_u, b_u] must vanish (exact solves; 40 CG steps on a 4-dim system are exact).
    R = tiny()
    s = IALSSettings(factors=3, unobserved_weight=0.3, reg=0.05, reg_exponent=reg_exponent, cg_steps=cg_steps)
    gen = torch.Generator().manual_seed(1)
    U, Q = torch.randn(6, 4, generator=gen).double(), torch.randn(9, 4, generator=gen).double()
    _solve(torch, _Side(torch, R, "cpu", dtype=torch.float64), U, Q, s)
    U = U.clone().requires_grad_(True)
    brute_force_objective(R, U, Q, s).backward()
    assert U.grad.abs().max() < 1e-6
    # and the item side likewise, given those users
    U = U.detach()
    _solve(torch, _Side(torch, R.T.tocsr(), "cpu", dtype=torch.float64), Q, U, s)
    Q = Q.clone().requires_grad_(True)
    brute_force_objective(R, U, Q, s).backward()
    assert Q.grad.abs().max() < 1e-6


def test_every_epoch_lowers_the_objective():
    R = tiny(3)
    values = []
    for epochs in (1, 2, 3, 6):
        s = IALSSettings(factors=3, unobserved_weight=0.2, reg=0.02, epochs=epochs, cg_steps=0)
        f = fit_ials(torch, R, s)
        U = torch.from_numpy(np.c_[f.user, f.user_bias]).double()
        Q = torch.from_numpy(np.c_[f.item, f.item_bias]).double()
        values.append(float(brute_force_objective(R, U, Q, s)))
    assert all(b <= a + 1e-6 for a, b in zip(values, values[1:], strict=False))


def taste_group_scores(ds, model, design):
    users = np.repeat(np.arange(ds.n_users), ds.n_items)
    items = np.tile(np.arange(ds.n_items), ds.n_users)
    return model.decision(design.pair_rows(users, items)).reshape(ds.n_users, ds.n_items)


def test_ials_ranks_each_users_own_taste_group_first():
    # Known answer: even users like even items, odd users odd ones; each user's held-out item is
    # of its own group, so it must rank among the 13 unseen items of that group. (7 items per
    # user: without enough regularisation 8 factors memorise users instead of learning groups.)
    ds = blocks_dataset()
    design = build_design(ds)
    source = training_source(ds, "implicit", threshold=4, negatives=4, seed=0)
    hp = FMHyperparameters(num_factors=8, epochs=10)
    trainer = IALSTrainer(IALSConfig(unobserved_weight=0.1, reg=0.1), "cpu")
    model = trainer.fit(design, source, None, hp, "binary_classifier").model
    scores = taste_group_scores(ds, model, design)
    same_group = (np.arange(ds.n_users)[:, None] % 2) == (np.arange(ds.n_items)[None, :] % 2)
    masked = np.where(ds.train.matrix(ds.n_users, ds.n_items).toarray(), -np.inf, scores)
    top10 = np.argsort(-masked, axis=1)[:, :10]
    assert np.mean(np.take_along_axis(same_group, top10, 1)) == 1.0
    rank = (masked > masked[ds.test.user, ds.test.item][:, None]).sum(1)
    assert np.mean(rank < 13) >= 0.95


def test_ials_is_deterministic_per_seed_and_the_seed_matters():
    ds = blocks_dataset()
    design = build_design(ds)
    source = training_source(ds, "implicit", threshold=4, negatives=4, seed=0)

    def fit(seed):
        hp = FMHyperparameters(num_factors=4, epochs=3, seed=seed)
        return IALSTrainer(IALSConfig(), "cpu").fit(design, source, None, hp, "binary_classifier").model

    a, b, c = fit(0), fit(0), fit(1)
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.w, b.w)
    assert not np.array_equal(a.V, c.V)


def test_the_fm_written_out_scores_exactly_as_ials():
    ds = blocks_dataset(n_users=6, n_items=20)
    design = build_design(ds)
    R = interaction_weights(ds.train.user, ds.train.item, ds.n_users, ds.n_items)
    factors = fit_ials(torch, R, IALSSettings(factors=3, epochs=2))
    model = to_fm(factors, design, "binary_classifier")
    assert model.V.shape == (design.layout.feature_dim, 3) and model.V.dtype == np.float32
    np.testing.assert_allclose(taste_group_scores(ds, model, design), factors.scores() + BIAS, rtol=1e-5, atol=1e-5)


def test_make_trainer_picks_ials_for_local_implicit_only():
    assert isinstance(make_trainer(JobConfig()), IALSTrainer)
    for train in (TrainConfig(objective="sampled"), TrainConfig(mode="binary"), TrainConfig(mode="regression")):
        assert isinstance(make_trainer(JobConfig(train=train)), LocalFMTrainer)
    assert not TrainConfig(backend="sagemaker").uses_ials
    with pytest.raises(ConfigError, match="local backend only"):
        TrainConfig(backend="sagemaker", objective="ials")


def test_a_history_solve_zeroes_the_gradient_in_the_history_factors():
    # Users as their history: P = H Y. After the joint solve for Y with the items fixed (enough
    # CG steps to be exact on this size), the brute-force objective's gradient in Y vanishes.
    R = tiny(5)
    H = sp.csr_matrix(R.toarray() > 0, dtype=np.float32)
    H = sp.diags(1 / np.sqrt(np.asarray(H.sum(1)).ravel())) @ H
    s = IALSSettings(factors=3, unobserved_weight=0.3, reg=0.05, history_reg=0.1, cg_steps=60)
    gen = torch.Generator().manual_seed(2)
    Q = torch.randn(9, 4, generator=gen).double()
    hist = _History(torch, H, 3, s, "cpu", gen, dtype=torch.float64)
    hist.solve(_Side(torch, R, "cpu", dtype=torch.float64), Q)
    Y = hist.Y.clone().requires_grad_(True)
    Ht = torch.from_numpy(H.toarray()).double()
    U = torch.cat([Ht @ Y, torch.zeros(6, 1, dtype=torch.float64)], 1)
    counts = torch.from_numpy(np.asarray((H > 0).sum(0)).ravel()).double()
    y_reg = s.history_reg * (counts + s.unobserved_weight * 6) ** s.reg_exponent
    loss = brute_force_objective(R, U, Q, s) - (s.reg * (torch.from_numpy(np.asarray((R > 0).sum(1)).ravel())
                                                       + s.unobserved_weight * 9) * (U ** 2).sum(1)).sum()
    (loss + (y_reg * (Y ** 2).sum(1)).sum()).backward()
    assert Y.grad.abs().max() < 1e-6


def test_with_the_history_block_the_fm_and_its_repackaged_vectors_score_as_ials():
    ds = blocks_dataset(n_users=6, n_items=20)
    design = build_design(ds, history=True)
    assert design.layout.feature_dim == 6 + 20 + 20
    R = interaction_weights(ds.train.user, ds.train.item, ds.n_users, ds.n_items)
    factors = fit_ials(torch, R, IALSSettings(factors=3, epochs=2), history=history_block(design))
    model = to_fm(factors, design, "binary_classifier")
    expected = factors.scores() + BIAS
    np.testing.assert_allclose(taste_group_scores(ds, model, design), expected, rtol=1e-5, atol=1e-5)
    vectors = repackage(model, ds, design.layout)
    users, items = np.repeat(np.arange(6), 20), np.tile(np.arange(20), 6)
    np.testing.assert_allclose(vectors.scores(users, items), expected.ravel(), rtol=1e-4, atol=1e-4)


def test_history_mode_ranks_each_users_own_taste_group_first():
    ds = blocks_dataset()
    design = build_design(ds, history=True)
    source = training_source(ds, "implicit", threshold=4, negatives=4, seed=0)
    hp = FMHyperparameters(num_factors=8, epochs=10)
    trainer = IALSTrainer(IALSConfig(unobserved_weight=0.1, reg=0.1), "cpu")
    model = trainer.fit(design, source, None, hp, "binary_classifier").model
    scores = taste_group_scores(ds, model, design)
    same_group = (np.arange(ds.n_users)[:, None] % 2) == (np.arange(ds.n_items)[None, :] % 2)
    masked = np.where(ds.train.matrix(ds.n_users, ds.n_items).toarray(), -np.inf, scores)
    top10 = np.argsort(-masked, axis=1)[:, :10]
    assert np.mean(np.take_along_axis(same_group, top10, 1)) >= 0.95
    rank = (masked > masked[ds.test.user, ds.test.item][:, None]).sum(1)
    assert np.mean(rank < 13) >= 0.95


def test_held_out_pair_scores_through_entity_halves_equal_the_fm_on_full_rows(monkeypatch):
    ds = blocks_dataset(n_users=6, n_items=20)
    rng = np.random.default_rng(0)
    features = FeatureTable(sp.csr_matrix(rng.random((20, 3)).astype(np.float32)), ("a", "b", "c"))
    ds = dataclasses.replace(ds, item_features=features)
    design = build_design(ds, history=True)
    k = 4
    model = FMModel(V=rng.normal(size=(design.layout.feature_dim, k)).astype(np.float32),
                    w=rng.normal(size=design.layout.feature_dim).astype(np.float32), b=0.3,
                    predictor_type="binary_classifier")
    user, item = rng.integers(0, 6, 50), rng.integers(0, 20, 50)
    whole = pair_decisions(model, design, user, item)
    np.testing.assert_allclose(whole, model.decision(design.pair_rows(user, item)), rtol=1e-5, atol=1e-5)
    import batch.train.stage as stage

    monkeypatch.setattr(stage, "PAIR_CELLS", 9)  # two pairs' rows at a time: 25 slices
    np.testing.assert_array_equal(pair_decisions(model, design, user, item), whole)
