"""Splits (per-user guarantees, determinism, latest-N), duplicate resolution and id coding,
checked on the vectorised functions directly and through ``load_dataset``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_fixtures import rows, tsv

from batch.config import DataConfig
from batch.data import load_dataset
from batch.data.ids import Vocabulary, build_idmap
from batch.data.parts import blank, resolve_duplicates
from batch.data.split import holdout_mask, last_holdout, random_holdout
from batch.errors import ConfigError

users_and_times = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5)), min_size=1, max_size=80)


def columns(pairs):
    user = np.array([u for u, _ in pairs], np.int32)
    return user, np.array([t for _, t in pairs], np.int64)


@settings(max_examples=150, deadline=None)
@given(users_and_times, st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_random_holdout_per_user_counts(pairs, holdout, seed):
    user, _ = columns(pairs)
    mask = random_holdout(user, 7, holdout, seed)
    counts, held = np.bincount(user, minlength=7), np.bincount(user[mask], minlength=7)
    assert (held == np.where(counts > 0, np.minimum(holdout, counts - 1), 0)).all()
    assert np.array_equal(mask, random_holdout(user, 7, holdout, seed))  # deterministic


@settings(max_examples=150, deadline=None)
@given(users_and_times, st.integers(1, 4))
def test_last_holdout_takes_the_latest(pairs, holdout):
    user, ts = columns(pairs)
    mask = last_holdout(user, ts, 7, holdout)
    counts = np.bincount(user, minlength=7)
    expected = np.where(counts > 0, np.minimum(holdout, counts - 1), 0)
    assert (np.bincount(user[mask], minlength=7) == expected).all()
    row = np.arange(len(user))
    for u in np.unique(user[mask]):
        train, test = (user == u) & ~mask, (user == u) & mask
        # every test row is later than every train row: by timestamp, ties by row
        latest_train = max(zip(ts[train], row[train], strict=True))
        assert min(zip(ts[test], row[test], strict=True)) > latest_train


def test_random_holdout_depends_on_the_seed():
    user = np.repeat(np.arange(20, dtype=np.int32), 30)
    a, b = random_holdout(user, 20, 5, 1), random_holdout(user, 20, 5, 2)
    assert a.sum() == b.sum() == 100 and not np.array_equal(a, b)


def test_holdout_mask_methods():
    user, ts = np.array([0, 0, 1], np.int32), np.array([1, 2, 3])
    assert not holdout_mask("none", user, ts, n_users=2).any()
    given_mask = np.array([False, True, False])
    assert holdout_mask("given", user, ts, n_users=2, given=given_mask) is given_mask
    with pytest.raises(ConfigError):
        holdout_mask("given", user, ts, n_users=2)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
                min_size=1, max_size=60))
def test_resolve_duplicates_keeps_the_latest_then_the_last_line(triples):
    user, item, ts = (np.array(c, np.int64) for c in zip(*triples, strict=True))
    keep = resolve_duplicates(user.astype(np.int32), item.astype(np.int32), ts, 4)
    expected = {}
    for row, (u, i, t) in enumerate(triples):
        if (u, i) not in expected or t >= ts[expected[(u, i)]]:
            expected[(u, i)] = row
    wanted = sorted(expected.values())
    if len(wanted) == len(triples):
        assert keep is None
    else:
        assert keep.tolist() == wanted


def test_load_random_and_last_splits_are_disjoint_and_complete(tmp_path):
    rng = np.random.default_rng(3)
    data = {(int(u), int(i)): (int(r), int(t)) for u, i, r, t in zip(
        rng.integers(1, 30, 900), rng.integers(1, 200, 900), rng.integers(1, 6, 900),
        rng.integers(0, 10**6, 900), strict=True)}
    path = tmp_path / "u.data"
    path.write_text(tsv([(u, i, r, t) for (u, i), (r, t) in data.items()]))
    for method in ("random", "last"):
        ds = load_dataset(DataConfig(path=str(path), split=method, holdout=5, seed=7))
        train, test = rows(ds, ds.train), rows(ds, ds.test)
        assert not set(train) & set(test)
        everything = sorted((u, i, float(r), t) for (u, i), (r, t) in data.items())
        assert sorted(train + test) == everything
        per_user = np.bincount(ds.test.user, minlength=ds.n_users)
        totals = np.bincount(ds.all_interactions().user, minlength=ds.n_users)
        assert (per_user == np.minimum(5, totals - 1)).all()
        assert ds.report["split"]["test_rows"] == len(test)
        assert ds.report["split"]["method"] == method
    again = load_dataset(DataConfig(path=str(path), split="random", holdout=5, seed=7))
    other = load_dataset(DataConfig(path=str(path), split="random", holdout=5, seed=8))
    first = load_dataset(DataConfig(path=str(path), split="random", holdout=5, seed=7))
    assert rows(first, first.test) == rows(again, again.test) != rows(other, other.test)


def test_test_path_conflicts_with_a_random_split(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(ConfigError, match="test_path"):
        load_dataset(DataConfig(path=str(tmp_path / "u.data"), test_path=str(tmp_path / "u.data"),
                                split="random"))


def test_vocabulary_codes_are_stable_across_chunks_and_types():
    vocab = Vocabulary()
    first = vocab.encode(np.array([30, 10, 30, 20]))
    second = vocab.encode(np.array(["10", "x-1", "20"]))
    third = vocab.encode(np.array([20, 40]))
    ids = vocab.ids()
    assert ids[first].tolist() == ["30", "10", "30", "20"]
    assert ids[second].tolist() == ["10", "x-1", "20"]
    assert ids[third].tolist() == ["20", "40"]
    assert len(set(first.tolist()) | set(second.tolist()) | set(third.tolist())) == vocab.size == 5


def test_vocabulary_widens_text_ids():
    vocab = Vocabulary()
    vocab.encode(np.array(["a"]))
    codes = vocab.encode(np.array(["a-much-longer-id", "a"]))
    assert vocab.ids()[codes].tolist() == ["a-much-longer-id", "a"]


def test_build_idmap_integer_rule():
    assert build_idmap(np.array(["3", "12"]), np.array([7])).ids.tolist() == [3, 7, 12]
    assert build_idmap(np.array(["03", "12"])).ids.tolist() == ["03", "12"]
    assert build_idmap(np.array(["-4", "x"])).ids.dtype.kind == "U"
    remap = Vocabulary()
    codes = remap.encode(np.array(["12", "3"]))
    idmap = build_idmap(remap.ids(), np.array([5]))
    assert idmap.ids[remap.remap(idmap)[codes]].tolist() == [12, 3]


def test_blank_text_ids():
    values = np.array(["a", "", " ", " a", "\t", "b "])
    assert blank(values).tolist() == [False, True, True, False, True, False]
