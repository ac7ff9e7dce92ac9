"""Ingest of the MovieLens layouts: id maps, features, titles, given splits, duplicates, and
every class of bad input with the file, line and column it is reported at."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from ingest_fixtures import (
    UA_BASE,
    UA_TEST,
    feature_names,
    flags,
    rows,
    tsv,
    write_ml1m,
    write_ml100k,
    write_ml_latest,
)

from batch.config import DataConfig
from batch.data import delimited, load_dataset
from batch.errors import (
    ConfigError,
    DataError,
    EmptyDataError,
    InvalidValueError,
    MalformedLineError,
)


@pytest.fixture
def ml100k(tmp_path):
    return write_ml100k(tmp_path / "ml-100k")


def load(path, **settings):
    return load_dataset(DataConfig(path=str(path), **settings))


# --- MovieLens 100k ---------------------------------------------------------------------------

def test_ml100k_uses_the_given_pair_and_maps_ids(ml100k):
    ds = load(ml100k)
    assert ds.report["split"]["method"] == "given"
    assert rows(ds, ds.train) == sorted((u, i, float(r), t) for u, i, r, t in UA_BASE)
    assert rows(ds, ds.test) == sorted((u, i, float(r), t) for u, i, r, t in UA_TEST)
    # Users: ratings ∪ u.user (user 4 never rates); items: ratings ∪ u.item (40 unrated,
    # 30 only in the test file, 99 missing from u.item).
    assert ds.users.ids.tolist() == [1, 2, 3, 4]
    assert ds.items.ids.tolist() == [10, 20, 30, 40, 99]
    assert ds.users.ids.dtype == np.int64 and ds.train.user.dtype == np.int32
    assert ds.train.rating.dtype == np.float32 and ds.train.timestamp.dtype == np.int64
    assert ds.report["rows_read"][str(ml100k / "ua.base")] == len(UA_BASE)
    assert ds.report["rows_read"][str(ml100k / "u.item")] == 4


def test_items_missing_from_the_catalogue_are_kept_counted_and_warned(ml100k, caplog):
    with caplog.at_level(logging.WARNING, logger="topx"):
        ds = load(ml100k)
    assert ds.report["items_not_in_catalogue"] == {"ids": 1, "interactions": 1}
    assert ds.report["users_not_in_catalogue"] == {"ids": 0, "interactions": 0}
    assert any("99" in r.getMessage() and "u.item" in r.getMessage() for r in caplog.records)
    assert ds.item_titles[ds.items.index([99])[0]] is None
    assert feature_names(ds.item_features, ds.items, 99) == set()


def test_ml100k_user_features_are_aligned_with_the_id_map(ml100k):
    ds = load(ml100k)
    uf = ds.user_features
    assert uf.matrix.shape == (4, len(uf.columns)) and uf.matrix.dtype == np.float32
    assert feature_names(uf, ds.users, 1) == {"age=18-24", "gender=M", "occupation=technician",
                                              "zip=8"}
    assert feature_names(uf, ds.users, 2) == {"age=50-55", "gender=F", "occupation=other", "zip=9"}
    assert feature_names(uf, ds.users, 3) == {"age=<18", "gender=M", "occupation=writer", "zip=T"}
    assert feature_names(uf, ds.users, 4) == {"age=56+", "gender=F", "occupation=other"}


def test_ml100k_item_features_and_titles(ml100k):
    ds = load(ml100k)
    itf = ds.item_features
    assert feature_names(itf, ds.items, 10) == {"genre=Animation", "genre=Comedy", "decade=1990s"}
    assert feature_names(itf, ds.items, 30) == {"genre=Drama", "decade=1960s"}
    assert feature_names(itf, ds.items, 40) == {"genre=unknown"}  # no date: no decade
    titles = dict(zip(ds.items.ids.tolist(), ds.item_titles.tolist(), strict=True))
    assert titles[30] == "Café Society (1968)"  # latin-1 decoded
    assert titles[10] == "Toy Story (1995)" and titles[99] is None


def test_genre_names_come_from_u_genre(tmp_path):
    root = write_ml100k(tmp_path / "ml")
    names = ["none", "Action", *[f"g{k}" for k in range(2, 19)]]
    (root / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(names)))
    ds = load(root)
    assert feature_names(ds.item_features, ds.items, 20) == {"genre=Action", "genre=g16",
                                                             "decade=1990s"}


def test_other_splits_of_a_ml100k_directory_read_u_data(ml100k):
    ds = load(ml100k, split="none")
    assert list(ds.report["rows_read"])[0].endswith("u.data")
    assert len(ds.train) == len(UA_BASE) + len(UA_TEST) and len(ds.test) == 0


def test_given_split_without_a_pair_is_a_config_error(tmp_path):
    root = write_ml100k(tmp_path / "ml")
    (root / "ua.test").unlink()
    with pytest.raises(ConfigError, match="given"):
        load(root, split="given")
    assert load(root).report["split"]["method"] == "random"  # auto falls back


# --- MovieLens 1M -----------------------------------------------------------------------------

def test_ml1m_layout_features_and_titles(tmp_path):
    ds = load(write_ml1m(tmp_path / "ml-1m"), split="none")
    assert ds.report["layout"] == "ml-1m"
    assert ds.users.ids.tolist() == [1, 2, 3]
    assert ds.items.ids.tolist() == [5, 661, 1193, 3408]
    assert (1, 1193, 5.0, 978300760) in rows(ds, ds.train)
    assert feature_names(ds.user_features, ds.users, 1) == {
        "age=<18", "gender=F", "occupation=K-12 student", "zip=4"}
    assert feature_names(ds.user_features, ds.users, 2) == {
        "age=56+", "gender=M", "occupation=self-employed", "zip=7"}
    assert feature_names(ds.item_features, ds.items, 661) == {
        "genre=Animation", "genre=Children's", "genre=Musical", "decade=1990s"}
    assert feature_names(ds.item_features, ds.items, 5) == {"genre=Comedy", "genre=Romance"}
    assert ds.item_titles[ds.items.index([5])[0]] == "Amélie"


def test_ml1m_bad_age_code(tmp_path):
    root = write_ml1m(tmp_path / "ml-1m")
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::30::16::70072\n")
    with pytest.raises(InvalidValueError) as err:
        load(root)
    assert (err.value.line, err.value.column) == (2, "Age")


# --- MovieLens latest (ml-latest-small, ml-25m, …) --------------------------------------------

def test_ml_latest_layout_features_and_titles(tmp_path):
    ds = load(write_ml_latest(tmp_path / "ml-latest-small"), split="none")
    assert ds.report["layout"] == "ml-latest"
    assert ds.users.ids.tolist() == [1, 2]
    assert ds.items.ids.tolist() == [1, 3, 5, 193609]
    assert rows(ds, ds.train) == [(1, 1, 4.0, 964982703), (1, 3, 4.5, 964981247), (2, 3, 0.5, 1445714994),
                                  (2, 193609, 3.0, 1537799250)]
    assert ds.user_features is None
    assert feature_names(ds.item_features, ds.items, 3) == {
        "genre=Comedy", "genre=Drama", "genre=Romance", "decade=1990s"}
    assert feature_names(ds.item_features, ds.items, 193609) == {"decade=1990s"}
    assert feature_names(ds.item_features, ds.items, 5) == {"genre=Comedy", "genre=Romance"}
    assert ds.item_titles[ds.items.index([3])[0]] == "American President, The (1995)"


def test_ml_latest_splits_by_timestamp(tmp_path):
    ds = load(write_ml_latest(tmp_path / "ml-latest-small"), split="last", holdout=1)
    assert rows(ds, ds.test) == [(1, 1, 4.0, 964982703), (2, 193609, 3.0, 1537799250)]


def test_ml_latest_bad_rating_names_file_line_and_column(tmp_path):
    root = write_ml_latest(tmp_path / "ml-latest-small")
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,nine,1\n")
    with pytest.raises(DataError) as err:
        load(root)
    assert (err.value.file, err.value.line, err.value.column) == (str(root / "ratings.csv"), 3, "rating")


def test_ml_latest_small_itself():
    """The development set as shipped beside the repository (never inside it)."""
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-latest-small"
    if not (root / "ratings.csv").exists():
        if os.environ.get("CI"):
            pytest.fail(f"MovieLens latest-small is missing at {root}")
        pytest.skip(f"MovieLens latest-small is not at {root}")
    ds = load(root, split="last", holdout=10)
    assert (ds.n_users, ds.n_items, len(ds.train) + len(ds.test), len(ds.test)) == (610, 9742, 100_836, 6100)
    assert ds.report["layout"] == "ml-latest"
    assert ds.item_titles[ds.items.index([1])[0]] == "Toy Story (1995)"
    assert feature_names(ds.item_features, ds.items, 1) == {
        "genre=Adventure", "genre=Animation", "genre=Children", "genre=Comedy", "genre=Fantasy", "decade=1990s"}


# --- duplicates -------------------------------------------------------------------------------

def test_duplicates_keep_the_latest_and_are_reported(tmp_path, caplog):
    path = tmp_path / "u.data"
    path.write_text(tsv([(1, 10, 1, 100), (1, 10, 5, 300), (2, 10, 4, 50), (1, 10, 2, 200),
                         (2, 10, 3, 50), (1, 20, 4, 10)]))
    with caplog.at_level(logging.WARNING, logger="topx"):
        ds = load(path, split="none")
    assert ds.report["duplicates_resolved"] == 3
    assert ds.report["rows_read"][str(path)] == 6 and ds.report["interactions"] == 3
    # Latest timestamp wins; on a tie (user 2, t=50) the later line wins.
    assert rows(ds, ds.train) == [(1, 10, 5.0, 300), (1, 20, 4.0, 10), (2, 10, 3.0, 50)]
    assert any("duplicate" in r.getMessage() for r in caplog.records)


def test_duplicates_across_base_and_test_land_where_the_latest_is(tmp_path):
    root = write_ml100k(tmp_path / "ml")
    (root / "ua.test").write_text(tsv([(1, 10, 2, 50), (1, 30, 3, 200), (1, 20, 1, 999)]))
    ds = load(root)
    assert ds.report["duplicates_resolved"] == 2
    assert (1, 10, 5.0, 100) in rows(ds, ds.train)  # base copy is later
    assert (1, 20, 1.0, 999) in rows(ds, ds.test)  # test copy is later
    assert not set(rows(ds, ds.train)) & set(rows(ds, ds.test))


# --- bad input --------------------------------------------------------------------------------

GOOD = "1\t10\t5\t100\n"
BAD_UDATA = [
    ("wrong column count", GOOD + "2\t20\t3\n", MalformedLineError, 2, None),
    ("too many columns", GOOD + GOOD + "2\t20\t3\t5\t9\n", MalformedLineError, 3, None),
    ("non-numeric rating", GOOD + "2\t20\tabc\t100\n", InvalidValueError, 2, "rating"),
    ("rating too high", GOOD + "2\t20\t6\t100\n", InvalidValueError, 2, "rating"),
    ("rating too low", "2\t20\t0\t100\n", InvalidValueError, 1, "rating"),
    ("NaN rating", GOOD + "2\t20\tnan\t100\n", InvalidValueError, 2, "rating"),
    ("bad timestamp", GOOD + GOOD + "2\t20\t3\t12x\n", InvalidValueError, 3, "timestamp"),
    ("fractional timestamp", GOOD + "2\t20\t3\t1.5\n", InvalidValueError, 2, "timestamp"),
    ("negative timestamp", GOOD + "2\t20\t3\t-5\n", InvalidValueError, 2, "timestamp"),
    ("blank user id", GOOD + "\t20\t3\t100\n", InvalidValueError, 2, "user"),
    ("non-integer item id", GOOD + "2\tx7\t3\t100\n", InvalidValueError, 2, "item"),
    ("control character", GOOD + "2\t2\x0c0\t3\t100\n", InvalidValueError, 2, 2),
    ("not UTF-8", GOOD + "2\t20\t3\t100\n3\t\xff\t3\t100\n", InvalidValueError, 3, 2),
]


@pytest.mark.parametrize("content,error,line,column", [c[1:] for c in BAD_UDATA],
                         ids=[c[0] for c in BAD_UDATA])
def test_bad_u_data_names_file_line_and_column(tmp_path, content, error, line, column):
    path = tmp_path / "u.data"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(error) as err:
        load(path, split="none")
    assert err.value.file == str(path)
    assert (err.value.line, err.value.column) == (line, column)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"], ids=["empty", "blank lines"])
def test_empty_interactions_file(tmp_path, content):
    path = tmp_path / "u.data"
    path.write_bytes(content)
    with pytest.raises(EmptyDataError) as err:
        load(path)
    assert err.value.file == str(path)


def test_errors_in_later_chunks_report_the_right_line(tmp_path, monkeypatch):
    """Tiny chunks: the bad line lies many chunks in, and blank lines precede it."""
    monkeypatch.setattr(delimited, "NUMERIC_CHUNK_BYTES", 64)
    lines = [f"{u}\t{u % 7 + 1}\t3\t{1000 + u}\n" for u in range(1, 300)]
    lines[120] = "\n"
    lines[250] = "251\t5\t9\t1251\n"
    path = tmp_path / "u.data"
    path.write_text("".join(lines))
    with pytest.raises(InvalidValueError) as err:
        load(path)
    assert (err.value.line, err.value.column) == (251, "rating")
    assert "9" in str(err.value) and str(path) in str(err.value)


def test_tiny_chunks_and_the_line_by_line_pass_give_the_same_data(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    data = [(int(u), int(i), float(r), int(t)) for u, i, r, t in zip(
        rng.integers(1, 50, 400), rng.integers(1, 80, 400), rng.integers(1, 11, 400) / 2,
        rng.integers(0, 10**9, 400), strict=True)]
    text = tsv(data)
    # A whitespace-only line defeats numpy's parser, so that chunk takes the careful pass.
    text = text.replace("\n", "\n   \n", 1)
    path = tmp_path / "ratings.tsv.data"
    path.write_text(text)
    whole = load(path, split="none", format="movielens")
    monkeypatch.setattr(delimited, "NUMERIC_CHUNK_BYTES", 100)
    chunked = load(path, split="none", format="movielens")
    assert rows(whole, whole.train) == rows(chunked, chunked.train)
    assert whole.report["duplicates_resolved"] == chunked.report["duplicates_resolved"]
    assert len(whole.train) + whole.report["duplicates_resolved"] == 400


BAD_CATALOGUES = [
    ("u.user", "1|24|M|technician|85711\n2|abc|F|other|94043\n", InvalidValueError, 2, "age"),
    ("u.user", "1|24|M|technician|85711\n2|200|F|other|94043\n", InvalidValueError, 2, "age"),
    ("u.user", "1|24|M|technician|85711\n2|24|F|other\n", MalformedLineError, 2, None),
    ("u.user", "1|24|M|technician|85711\n1|30|F|other|1\n", InvalidValueError, 2, "user id"),
    ("u.user", "1|24|M|pilot|85711\n", InvalidValueError, 1, "occupation"),
    ("u.user", "", EmptyDataError, None, None),
    ("u.item", f"10|T|01-Jan-1995||u|{flags('Action')}\n20|U|||u|{flags()[:-1]}2\n",
     InvalidValueError, 2, "genre Western"),
    ("u.item", f"10|T|01-Jan-1995||u|{flags('Action')}|1\n", MalformedLineError, 1, None),
    ("u.genre", "unknown|0\nAction|2\n", InvalidValueError, 2, "genre id"),
]


@pytest.mark.parametrize("name,content,error,line,column", BAD_CATALOGUES,
                         ids=[f"{c[0]}-{k}" for k, c in enumerate(BAD_CATALOGUES)])
def test_bad_catalogue_files(tmp_path, name, content, error, line, column):
    root = write_ml100k(tmp_path / "ml")
    (root / name).write_text(content)
    with pytest.raises(error) as err:
        load(root)
    assert err.value.file == str(root / name)
    assert (err.value.line, err.value.column) == (line, column)


def test_missing_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "nowhere")


def test_directory_without_data_files(tmp_path):
    (tmp_path / "README").write_text("hello")
    with pytest.raises(DataError, match="no data files"):
        load(tmp_path)


def test_path_none_is_left_to_the_caller():
    with pytest.raises(ConfigError):
        load_dataset(DataConfig(path=None))


def test_gzipped_rating_files_and_corrupt_gzip(tmp_path):
    import gzip

    good = tmp_path / "ratings.dat.gz"
    good.write_bytes(gzip.compress(b"1::2::3::4\n5::6::1::7\n"))
    ds = load(good, split="none")
    assert rows(ds, ds.train) == [(1, 2, 3.0, 4), (5, 6, 1.0, 7)]
    bad = tmp_path / "u.data.gz"
    bad.write_bytes(gzip.compress(b"1\t2\t3\t4\n" * 100)[:-12])  # cut inside the stream
    with pytest.raises(InvalidValueError, match="gzip") as err:
        load(bad)
    assert err.value.file == str(bad)


def test_age_buckets_are_ordered_youngest_first(ml100k):
    columns = load(ml100k).user_features.columns
    ages = [c for c in columns if c.startswith("age=")]
    assert ages == ["age=<18", "age=18-24", "age=50-55", "age=56+"]
