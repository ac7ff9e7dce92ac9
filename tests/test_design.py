"""The design matrix: block layout, entity rows, pair rows, feature normalisation."""

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.data.interactions import Dataset, FeatureTable, IdMap, Interactions
from batch.features.design import DesignLayout, build_design, hstack_rows, normalise_rows, take_rows


def tiny_dataset(user_features=True, item_features=True):
    users, items = IdMap(np.array([10, 20, 30])), IdMap(np.array(["a", "b", "c", "d"]))
    train = Interactions(np.array([0, 1, 2], np.int32), np.array([0, 1, 3], np.int32),
                         np.array([5, 4, 3], np.float32), np.zeros(3, np.int64))
    uf = FeatureTable(sp.csr_matrix(np.array([[1, 0], [0, 1], [0, 0]], np.float32)), ("g=F", "g=M"))
    itf = FeatureTable(sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0], [1, 0, 1]], np.float32)),
                       ("genre=x", "genre=y", "genre=z"))
    return Dataset(train, Interactions.empty(), users, items, uf if user_features else None,
                   itf if item_features else None)


def test_layout_blocks_are_contiguous_and_named(tmp_path):
    design = build_design(tiny_dataset())
    layout = design.layout
    assert [b["name"] for b in layout.blocks()] == ["user", "item", "user_features", "item_features"]
    assert [(b["offset"], b["size"]) for b in layout.blocks()] == [(0, 3), (3, 4), (7, 2), (9, 3)]
    assert layout.feature_dim == 12
    assert [layout.column_name(j) for j in (0, 3, 8, 11)] == ["user#0", "item#0", "g=M", "genre=z"]
    layout.save(tmp_path / "layout.json")
    assert DesignLayout.load(tmp_path / "layout.json") == layout


def test_pair_rows_are_user_row_plus_item_row_with_normalised_features():
    design = build_design(tiny_dataset())
    X = design.pair_rows(np.array([0, 2]), np.array([0, 3])).toarray()
    expected = np.zeros((2, 12), np.float32)
    expected[0, [0, 3, 7, 9, 10]] = [1, 1, 1, 0.5, 0.5]  # two genres share the item's feature weight
    expected[1, [2, 6, 9, 11]] = [1, 1, 0.5, 0.5]  # user 30 has no features
    np.testing.assert_array_equal(X, expected)


def test_features_can_be_left_out_and_ids_dropped():
    design = build_design(tiny_dataset(), use_features=False, item_ids=np.array([True, False, True, True]))
    assert design.layout.feature_dim == 7
    assert design.items[1].nnz == 0  # an item without its id column and without features is empty
    assert design.users.shape == (3, 7)


def test_normalise_rows_keeps_empty_rows_empty():
    m = sp.csr_matrix(np.array([[2, -2, 0], [0, 0, 0]], np.float32))
    np.testing.assert_allclose(normalise_rows(m).toarray(), [[0.5, -0.5, 0], [0, 0, 0]])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 9), st.data())
def test_take_rows_and_hstack_rows_match_scipy(n, width, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    a = sp.random(n, width, density=0.4, format="csr", dtype=np.float32, random_state=rng)
    rows = rng.integers(0, n, size=data.draw(st.integers(0, 20)))
    np.testing.assert_array_equal(take_rows(a, rows).toarray(), a.toarray()[rows])
    left = sp.csr_matrix(np.where(np.arange(width) < width // 2, a.toarray(), 0).astype(np.float32))
    right = sp.csr_matrix(np.where(np.arange(width) >= width // 2, a.toarray(), 0).astype(np.float32))
    np.testing.assert_array_equal(hstack_rows(left, right).toarray(), a.toarray())
