"""Training: samples per mode, negative sampling, the FM gradients, and a model that learns."""

import json
import logging
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from blocks import blocks_dataset

from batch.artifact import read_model
from batch.cli import main
from batch.config import FMHyperparameters, JobConfig, TrainConfig
from batch.data.interactions import Dataset, Interactions
from batch.errors import DataError, MissingDependencyError
from batch.features.design import build_design
from batch.features.negatives import is_seen, sample_negatives, seen_keys
from batch.rundir import RunDir
from batch.train.local import LocalFMTrainer, distinct, fm_gradients, padded_bags
from batch.train.metrics import classifier_metrics
from batch.train.samples import held_out_samples, training_source, with_negatives
from batch.train.stage import train_run


def test_negatives_are_never_seen_and_deterministic():
    keys = seen_keys(np.array([0, 0, 1]), np.array([1, 2, 0]), 4)
    rng = np.random.default_rng(3)
    user, item, given_up = sample_negatives(np.array([0, 1, 1]), 50, keys, 4, rng)
    assert len(user) == 150 and given_up == 0
    assert not is_seen(keys, user, item, 4).any()
    again = sample_negatives(np.array([0, 1, 1]), 50, keys, 4, np.random.default_rng(3))
    np.testing.assert_array_equal(item, again[1])


def test_seen_keys_are_the_sorted_distinct_pairs():
    rng = np.random.default_rng(0)
    user, item = rng.integers(0, 50, 5000), rng.integers(0, 30, 5000)
    np.testing.assert_array_equal(seen_keys(user, item, 30), np.unique(user * 30 + item))
    assert seen_keys(np.array([], np.int64), np.array([], np.int64), 3).tolist() == []
    assert seen_keys(np.array([2]), np.array([1]), 3).tolist() == [7]
    assert seen_keys(np.array([1, 1]), np.array([0, 0]), 3).tolist() == [3]


def test_a_user_who_has_seen_everything_gets_no_negatives_and_it_is_counted():
    keys = seen_keys(np.array([0, 0]), np.array([0, 1]), 2)
    user, _, given_up = sample_negatives(np.array([0]), 3, keys, 2, np.random.default_rng(0))
    assert len(user) == 0 and given_up == 3


def test_labels_per_mode():
    ds = blocks_dataset()
    binary = training_source(ds, "binary", threshold=4.5, negatives=4, seed=0).epoch(0)
    assert len(binary) == len(ds.train) and binary.label.max() == 0  # all training ratings are 4
    implicit = training_source(ds, "implicit", threshold=4, negatives=3, seed=0)
    first, second = implicit.epoch(0), implicit.epoch(1)
    assert len(first) == 4 * len(ds.train) and first.label.sum() == len(ds.train)
    assert not np.array_equal(first.item, second.item)  # negatives are redrawn per epoch
    held = held_out_samples(ds, "implicit", threshold=4, negatives=3, seed=0)
    known = seen_keys(*(np.concatenate([ds.train.user, ds.test.user]),
                        np.concatenate([ds.train.item, ds.test.item])), ds.n_items)
    negatives = held.label == 0
    assert not is_seen(known, held.user[negatives], held.item[negatives], ds.n_items).any()


def test_training_negatives_do_not_avoid_held_out_items():
    # Avoiding them would leak the test set: the held-out items would never be pushed down.
    ds = blocks_dataset()
    source = training_source(ds, "implicit", threshold=4, negatives=20, seed=0)
    drawn = source.epoch(0)
    test_keys = seen_keys(ds.test.user, ds.test.item, ds.n_items)
    neg = drawn.label == 0
    assert is_seen(test_keys, drawn.user[neg], drawn.item[neg], ds.n_items).any()


def test_negative_draws_that_find_no_unseen_item_are_reported():
    user, item = np.zeros(5, np.int32), np.arange(5, dtype=np.int32)  # user 0 has seen all 5 items
    data = Interactions(user, item, np.full(5, np.nan, np.float32), np.zeros(5, np.int64))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger, level = logging.getLogger("topx.train"), logging.getLogger("topx.train").level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        samples = with_negatives(data, 2, seen_keys(user, item, 5), 5, np.random.default_rng(0))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(samples) == 5 and not (samples.label == 0).any()
    assert any("10 of 10 negative draws found no unseen item" in r.getMessage() for r in records)


def test_rating_modes_refuse_implicit_data():
    ds = blocks_dataset()
    ds = Dataset(Interactions(ds.train.user, ds.train.item, np.full(len(ds.train), np.nan, np.float32),
                              ds.train.timestamp), ds.test, ds.users, ds.items)
    with pytest.raises(DataError, match="needs a rating"):
        training_source(ds, "regression", threshold=4, negatives=1, seed=0)


@pytest.mark.parametrize("predictor_type", ["binary_classifier", "regressor"])
def test_closed_form_gradients_equal_autograd(predictor_type):
    torch.manual_seed(0)
    n, k, pad = 9, 4, 9
    V = torch.randn(n + 1, k, dtype=torch.float64)
    V[pad] = 0
    W, b = torch.randn(n + 1, 1, dtype=torch.float64), torch.tensor([[0.3]], dtype=torch.float64)
    W[pad] = 0
    idx = torch.tensor([[0, 3, 5, pad], [1, 3, pad, pad], [0, 4, 6, 8]])
    val = torch.tensor([[1, 1, 0.5, 0], [1, 2, 0, 0], [1, 1, 0.25, 0.75]], dtype=torch.float64)
    label = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    hp = FMHyperparameters(factors_wd=0.1, linear_wd=0.2, bias_wd=0.3)
    got = fm_gradients(torch, torch.cat([V, W], dim=1), b, idx, val, label, predictor_type, hp, pad=pad)

    Vg, Wg, bg = (t.clone().requires_grad_(True) for t in (V, W, b))
    v, w = Vg[idx], Wg[idx].squeeze(-1)
    xv = v * val.unsqueeze(-1)
    score = bg[0, 0] + (w * val).sum(1) + 0.5 * (xv.sum(1).pow(2).sum(1) - xv.pow(2).sum((1, 2)))
    if predictor_type == "binary_classifier":
        task = torch.nn.functional.binary_cross_entropy_with_logits(score, label)
    else:
        task = torch.nn.functional.mse_loss(score, label)
    present = (val != 0).double()
    reg = (0.1 * (v.pow(2).sum(-1) * present).sum(1).mean() + 0.2 * (w.pow(2) * present).sum(1).mean()
           + 0.3 * bg[0, 0] ** 2)
    (task + reg).backward()
    torch.testing.assert_close(got.grad[:, :k], Vg.grad[got.rows])
    torch.testing.assert_close(got.grad[:, k:], Wg.grad[got.rows])
    torch.testing.assert_close(got.grad_b, bg.grad[0, 0])
    assert pad not in got.rows.tolist()
    untouched = sorted(set(range(n)) - set(got.rows.tolist()))
    assert torch.all(Vg.grad[untouched] == 0)


@pytest.mark.parametrize("n", [12, 100_000])  # mark-and-compact, and unique for a wide table
def test_distinct_columns_are_what_torch_unique_gives(n):
    cols = torch.from_numpy(np.random.default_rng(n).integers(0, min(n, 12), 300))
    rows, inverse = distinct(torch, cols, n)
    want_rows, want_inverse = torch.unique(cols, return_inverse=True)
    assert torch.equal(rows, want_rows) and torch.equal(inverse, want_inverse)


def test_padded_bags_hold_every_entry():
    rows = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 0], [0, 3, 0]], np.float32))
    idx, val = padded_bags(rows, pad=3)
    assert idx.shape == (3, 2)
    np.testing.assert_array_equal(idx, [[0, 2], [3, 3], [1, 3]])
    np.testing.assert_array_equal(val, [[1, 2], [0, 0], [3, 0]])


def test_implicit_fm_learns_the_taste_groups():
    ds = blocks_dataset()
    design = build_design(ds)
    source = training_source(ds, "implicit", threshold=4, negatives=4, seed=0)
    held = held_out_samples(ds, "implicit", threshold=4, negatives=4, seed=0)
    # Without factor regularisation the FM memorises each user's few items instead of learning
    # the groups (top-10 purity ~0.65); with it, the low-rank group structure wins.
    hp = FMHyperparameters(num_factors=8, epochs=30, mini_batch_size=64, factors_lr=0.05, linear_lr=0.05,
                           factors_wd=0.03)
    model = LocalFMTrainer("cpu").fit(design, source, held, hp, "binary_classifier").model
    users = np.repeat(np.arange(ds.n_users), ds.n_items)
    items = np.tile(np.arange(ds.n_items), ds.n_users)
    scores = model.decision(design.pair_rows(users, items)).reshape(ds.n_users, ds.n_items)
    same_group = (np.arange(ds.n_users)[:, None] % 2) == (np.arange(ds.n_items)[None, :] % 2)
    # every user scores its own group's items above the other group's, on average by a margin
    own, other = np.where(same_group, scores, np.nan), np.where(same_group, np.nan, scores)
    assert np.all(np.nanmean(own, 1) > np.nanmean(other, 1) + 1.0)
    seen = ds.train.matrix(ds.n_users, ds.n_items).toarray()
    masked = np.where(seen, -np.inf, scores)
    top10 = np.argsort(-masked, axis=1)[:, :10]
    assert np.mean(np.take_along_axis(same_group, top10, 1)) >= 0.95
    rank = (masked > masked[ds.test.user, ds.test.item][:, None]).sum(1)
    assert np.mean(rank < 13) >= 0.8  # 13 unseen items per group, the held-out one among them


def test_training_is_deterministic_per_seed():
    ds = blocks_dataset()
    design = build_design(ds)
    source = training_source(ds, "implicit", threshold=4, negatives=2, seed=0)
    hp = FMHyperparameters(num_factors=4, epochs=2, mini_batch_size=32)
    a = LocalFMTrainer("cpu").fit(design, source, None, hp, "binary_classifier").model
    b = LocalFMTrainer("cpu").fit(design, source, None, hp, "binary_classifier").model
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.w, b.w)


def test_train_run_writes_a_readable_run_directory(tmp_path):
    ds = blocks_dataset()
    cfg = JobConfig(train=TrainConfig(mode="regression", hyperparameters=FMHyperparameters(num_factors=4, epochs=3)))
    run = RunDir(tmp_path / "run")
    ds.save(run.path)
    summary = train_run(cfg, ds, run)
    model = read_model(str(run.model))
    assert model.predictor_type == "regressor" and model.feature_dim == run.load_layout().feature_dim
    metrics = json.loads(run.metrics.read_text())
    assert set(metrics["train"]["test"]) >= {"rmse", "mae"} and summary["test"]["rmse"] > 0
    assert run.load_dataset().n_users == ds.n_users


def test_classifier_metrics_on_known_values():
    prob = np.array([0.9, 0.8, 0.3, 0.6, 0.1])
    label = np.array([1, 0, 1, 0, 0], np.float32)
    m = classifier_metrics(prob, label)
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(0.4)
    expected_ce = -np.mean(np.log([0.9, 0.2, 0.3, 0.4, 0.9]))
    assert m["cross_entropy"] == pytest.approx(expected_ce)
    assert m["auc"] == pytest.approx(4 / 6)  # pairs (pos, neg) ranked right: 4 of 6


def test_missing_torch_gives_a_named_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    ds = blocks_dataset()
    with pytest.raises(MissingDependencyError, match=r"topx\[local\]"):
        LocalFMTrainer("cpu").fit(build_design(ds), training_source(ds, "implicit", threshold=4, negatives=1,
                                                                    seed=0), None, FMHyperparameters(), "b")


def test_cli_train_on_synthetic_data(tmp_path, capsys):
    data = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(data), "--users", "60", "--items", "80",
                 "--interactions", "2400", "--seed", "1"]) == 0
    capsys.readouterr()
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--mode", "binary",
                 "--epochs", "2", "--num-factors", "8"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["mode"] == "binary" and summary["users"] == 60 and summary["items"] == 80
    assert {"accuracy", "f1", "cross_entropy"} <= set(summary["test"])
    assert read_model(str(tmp_path / "run" / "model.tar.gz")).predictor_type == "binary_classifier"


def test_fit_rows_on_a_design_matrix_equals_fit_on_pairs():
    # The same rows, once as (user, item) pairs and once materialised as CSR (what a SageMaker
    # channel holds), train to the same model when the sample order is the same.
    ds = blocks_dataset()
    design = build_design(ds)
    source = training_source(ds, "binary", threshold=4.5, negatives=1, seed=0)
    samples = source.epoch(0)
    hp = FMHyperparameters(num_factors=4, epochs=2, mini_batch_size=16)
    pairs = LocalFMTrainer("cpu").fit(design, source, None, hp, "binary_classifier").model
    X = design.pair_rows(samples.user, samples.item)
    rows = LocalFMTrainer("cpu").fit_rows(X, samples.label, hp, "binary_classifier").model
    np.testing.assert_allclose(rows.V, pairs.V, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows.w, pairs.w, rtol=1e-5, atol=1e-6)
