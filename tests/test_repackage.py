"""Repackaging: a_u·a_i + c_u must equal the FM prediction, side features included."""

import numpy as np
import scipy.sparse as sp

from batch.artifact import FMModel
from batch.data.interactions import Dataset, FeatureTable, IdMap, Interactions
from batch.features.design import build_design
from batch.serve.repackage import COLD, FEATURES_ONLY, TRAINED, entity_design, repackage


def featured_dataset(rng, n_users=30, n_items=40):
    """Users 0..27 and items 0..35 have training interactions; user 28 has only features, user 29
    nothing; item 36..37 only features, item 38..39 nothing. Several real-valued features each."""
    user = np.concatenate([np.arange(28), rng.integers(0, 28, 200)]).astype(np.int32)
    item = np.concatenate([np.arange(36), rng.integers(0, 36, 192)]).astype(np.int32)
    train = Interactions(user, item, np.ones(len(user), np.float32), np.zeros(len(user), np.int64))
    uf = sp.random(n_users, 5, density=0.6, dtype=np.float32, random_state=rng).toarray()
    uf *= (np.arange(n_users) != 29)[:, None]
    itf = sp.random(n_items, 7, density=0.5, dtype=np.float32, random_state=rng).toarray()
    itf *= (np.arange(n_items) < 38)[:, None]
    uf[28, 0] = itf[36, 0] = itf[37, 1] = 1.0  # make sure the features-only entities have some
    return Dataset(train, Interactions.empty(), IdMap(np.arange(n_users)), IdMap(np.arange(n_items)),
                   FeatureTable(sp.csr_matrix(uf), tuple(f"u{k}" for k in range(5))),
                   FeatureTable(sp.csr_matrix(itf), tuple(f"i{k}" for k in range(7))))


def random_model(rng, feature_dim, k=6, predictor_type="binary_classifier"):
    return FMModel(rng.normal(size=(feature_dim, k)).astype(np.float32),
                   rng.normal(size=feature_dim).astype(np.float32), 0.7, predictor_type)


def test_inner_product_plus_user_constant_is_the_fm_prediction():
    rng = np.random.default_rng(0)
    ds = featured_dataset(rng)
    layout = build_design(ds).layout
    model = random_model(rng, layout.feature_dim)
    vectors = repackage(model, ds, layout)
    design = entity_design(ds, layout)
    users, items = rng.integers(0, ds.n_users, 500), rng.integers(0, ds.n_items, 500)
    expected = model.decision(design.pair_rows(users, items))
    np.testing.assert_allclose(vectors.scores(users, items), expected, rtol=1e-4, atol=1e-4)
    # the intra-item pairwise term matters here: the published [V_i, w_i] would be wrong
    published = np.einsum("nk,nk->n", vectors.users[users, :-1], vectors.items[items, :-1])
    assert np.abs(published + vectors.user_const[users] - expected).max() > 1e-2


def test_one_hot_only_gives_the_published_vectors():
    rng = np.random.default_rng(1)
    ds = featured_dataset(rng)
    ds = Dataset(ds.train, ds.test, ds.users, ds.items)
    layout = build_design(ds).layout
    model = random_model(rng, layout.feature_dim, predictor_type="regressor")
    vectors = repackage(model, ds, layout)
    i = np.arange(36)  # trained items: a_i = [V_i, w_i]
    np.testing.assert_allclose(vectors.items[i, :-1], model.V[layout.item_offset + i], rtol=1e-6)
    np.testing.assert_allclose(vectors.items[i, -1], model.w[layout.item_offset + i], rtol=1e-6)
    np.testing.assert_array_equal(vectors.users[:28, -1], 1.0)


def test_status_of_entities_without_interactions():
    rng = np.random.default_rng(2)
    ds = featured_dataset(rng)
    layout = build_design(ds).layout
    vectors = repackage(random_model(rng, layout.feature_dim), ds, layout)
    assert vectors.user_status[:28].tolist() == [TRAINED] * 28
    assert vectors.user_status[28:].tolist() == [FEATURES_ONLY, COLD]
    assert vectors.item_status[36:].tolist() == [FEATURES_ONLY, FEATURES_ONLY, COLD, COLD]
    assert vectors.recommendable.sum() == 38
    # the features-only user's vector comes from its features alone, not an untrained id column
    design = entity_design(ds, layout)
    assert design.users[28, 28] == 0 and design.users[28].nnz > 0
    np.testing.assert_array_equal(vectors.items[38:], 0)
