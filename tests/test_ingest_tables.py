"""Generic tables (CSV/TSV, Parquet), side-feature tables, and s3:// sources through moto."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest
from aws_env import moto_s3
from ingest_fixtures import feature_names, rows, write_ml100k

from batch.config import ColumnMap, DataConfig
from batch.data import load_dataset
from batch.data.columns import MissingColumnError
from batch.errors import (
    DataError,
    EmptyDataError,
    InvalidValueError,
    MalformedLineError,
    MissingDependencyError,
)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def load(path, **settings):
    return load_dataset(DataConfig(path=str(path), **settings))


# --- CSV / TSV --------------------------------------------------------------------------------

def test_csv_with_string_ids_quotes_and_a_bom(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes("\ufeffuser_id,item_id,rating,timestamp,comment\n"
                     'alice,"sku,1",4.5,100,"said ""hi"""\n'
                     "bob,sku-2,3,200,\n"
                     "álvaro,sku-2,1,300,x\n".encode())
    ds = load(path, split="none")
    assert ds.users.ids.tolist() == ["alice", "bob", "álvaro"]
    assert ds.items.ids.dtype.kind == "U" and ds.items.ids.tolist() == ["sku,1", "sku-2"]
    assert rows(ds, ds.train) == [("alice", "sku,1", 4.5, 100), ("bob", "sku-2", 3.0, 200),
                                  ("álvaro", "sku-2", 1.0, 300)]


def test_csv_integer_ids_become_int64_but_leading_zeros_stay_text(tmp_path):
    ints = tmp_path / "a.csv"
    ints.write_text("user_id,item_id,rating,timestamp\n10,7,4,1\n2,7,5,2\n")
    assert load(ints, split="none").users.ids.tolist() == [2, 10]
    padded = tmp_path / "b.csv"
    padded.write_text("user_id,item_id,rating,timestamp\n010,7,4,1\n2,7,5,2\n")
    assert load(padded, split="none").users.ids.tolist() == ["010", "2"]


def test_tsv_with_a_column_mapping_and_no_rating_is_implicit(tmp_path):
    path = tmp_path / "clicks.tsv"
    path.write_text("who\twhat\twhen\n1\t5\t10\n1\t6\t11\n2\t5\t12\n")
    mapping = ColumnMap(user="who", item="what", rating=None, timestamp="when")
    ds = load(path, columns=mapping, split="none")
    assert np.isnan(ds.train.rating).all() and ds.train.rating.dtype == np.float32
    assert ds.train.timestamp.tolist() == [10, 11, 12]
    assert ds.report["has_ratings"] is False


def test_headerless_file_with_configured_delimiter_and_no_timestamp(tmp_path):
    path = tmp_path / "ratings.txt"
    path.write_text("1;5;4\n2;5;3\n")
    ds = load(path, header=False, delimiter=";", split="none",
              columns=ColumnMap(timestamp=None))
    assert rows(ds, ds.train) == [(1, 5, 4.0, 0), (2, 5, 3.0, 0)]


def test_sniffed_delimiter_and_gzip(tmp_path):
    path = tmp_path / "ratings.dat.txt.gz"
    path.write_bytes(gzip.compress(b"user_id|item_id|rating|timestamp\n1|2|3|4\n"))
    ds = load(path, split="none")
    assert rows(ds, ds.train) == [(1, 2, 3.0, 4)]


BAD_CSV = [
    ("missing item column", "user_id,rating\n1,3\n", MissingColumnError, 1, "item_id"),
    ("header only", "user_id,item_id,rating,timestamp\n", EmptyDataError, None, None),
    ("empty file", "", EmptyDataError, None, None),
    ("duplicate header", "user_id,item_id,item_id\n1,2,3\n", MalformedLineError, 1, 3),
    ("blank id", "user_id,item_id,rating,timestamp\n1,2,3,4\n  ,2,3,4\n", InvalidValueError, 3,
     "user_id"),
    ("bad quoting", 'user_id,item_id,rating,timestamp\n1,"2,3,4\n', MalformedLineError, 2, None),
    ("rating out of range", "user_id,item_id,rating,timestamp\n1,2,3,4\n1,3,5.5,4\n",
     InvalidValueError, 3, "rating"),
]


@pytest.mark.parametrize("content,error,line,column", [c[1:] for c in BAD_CSV],
                         ids=[c[0] for c in BAD_CSV])
def test_bad_csv(tmp_path, content, error, line, column):
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(error) as err:
        load(path)
    assert err.value.file == str(path)
    assert (err.value.line, err.value.column) == (line, column)


def test_invalid_utf8_in_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"user_id,item_id,rating,timestamp\n1,2,3,4\n1,caf\xe9,3,4\n")
    with pytest.raises(InvalidValueError, match="utf-8") as err:
        load(path)
    assert (err.value.line, err.value.column) == (3, 2)


def test_rating_range_is_configurable(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("user_id,item_id,rating,timestamp\n1,2,10,4\n")
    assert load(path, rating_max=10.0, split="none").train.rating.tolist() == [10.0]


# --- Parquet ----------------------------------------------------------------------------------

def write_parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_interactions_with_text_ids_and_timestamp_type(tmp_path):
    path = write_parquet(tmp_path / "x.parquet", user_id=["u2", "u1", "u2"],
                         item_id=["a", "b", "b"],
                         rating=pa.array([1.0, 2.5, 4.0], pa.float32()),
                         timestamp=pa.array([1_000_000, 2_000_000, 3_000_000], pa.timestamp("ms")))
    ds = load(path, split="none")
    assert rows(ds, ds.train) == [("u1", "b", 2.5, 2000), ("u2", "a", 1.0, 1000),
                                  ("u2", "b", 4.0, 3000)]


def test_parquet_batches_keep_codes_consistent(tmp_path, monkeypatch):
    from batch.data import parquet

    monkeypatch.setattr(parquet, "BATCH_ROWS", 3)
    users = [f"u{k % 4}" for k in range(20)]
    path = write_parquet(tmp_path / "x.parquet", user_id=users, item_id=list(range(20)),
                         rating=[3.0] * 20, timestamp=list(range(20)))
    ds = load(path, split="none")
    assert [r[:2] for r in rows(ds, ds.train)] == sorted(zip(users, range(20), strict=True))


@pytest.mark.parametrize("column,values,line", [
    ("user_id", ["a", None, "c"], 2), ("rating", pa.array([1.0, 2.0, None]), 3)])
def test_parquet_nulls_report_the_row(tmp_path, column, values, line):
    data = dict(user_id=["a", "b", "c"], item_id=[1, 2, 3], rating=[1.0, 2.0, 3.0],
                timestamp=[1, 2, 3])
    data[column] = values
    path = write_parquet(tmp_path / "x.parquet", **data)
    with pytest.raises(InvalidValueError, match="null") as err:
        load(path)
    assert (err.value.file, err.value.line, err.value.column) == (str(path), line, column)


def test_parquet_missing_column_and_bad_types(tmp_path):
    path = write_parquet(tmp_path / "x.parquet", user_id=[1], rating=[3.0])
    with pytest.raises(MissingColumnError) as err:
        load(path)
    assert err.value.column == "item_id"
    path = write_parquet(tmp_path / "y.parquet", user_id=[1.5], item_id=[1])
    with pytest.raises(InvalidValueError, match="integers or text"):
        load(path)
    path = write_parquet(tmp_path / "b.parquet", user_id=["a", "b", " "], item_id=[1, 1, 1])
    with pytest.raises(InvalidValueError, match="empty id") as err:
        load(path)
    assert (err.value.line, err.value.column) == (3, "user_id")
    path = write_parquet(tmp_path / "z.parquet", user_id=[1, 2], item_id=[1, 1], rating=[3.0, 9.0])
    with pytest.raises(InvalidValueError) as err:
        load(path)
    assert (err.value.line, err.value.column) == (2, "rating")


def test_corrupt_and_empty_parquet(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(InvalidValueError, match="Parquet"):
        load(path)
    empty = write_parquet(tmp_path / "e.parquet", user_id=pa.array([], pa.int64()),
                          item_id=pa.array([], pa.int64()))
    with pytest.raises(EmptyDataError):
        load(empty)


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "x.parquet", user_id=[1], item_id=[2])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match=r"topx\[parquet\]"):
        load(path)


def test_directory_of_parquet_parts(tmp_path):
    write_parquet(tmp_path / "part-0.parquet", user_id=[1, 2], item_id=[5, 6])
    write_parquet(tmp_path / "part-1.parquet", user_id=[3], item_id=[5])
    (tmp_path / "_SUCCESS").write_text("")
    ds = load(tmp_path, split="none")
    assert ds.report["layout"] == "parquet" and len(ds.train) == 3


# --- side-feature tables ----------------------------------------------------------------------

def test_generic_side_tables_encode_and_align(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id,rating,timestamp\n"
                                    "u1,i1,4,1\nu2,i2,3,2\nu3,i1,5,3\n")
    (tmp_path / "users.csv").write_text("user_id,country,spend\n"
                                        "u2,DE,10\nu1,FR,30\nu9,DE,\n")
    write_parquet(tmp_path / "items.parquet", item_id=["i1", "i2", "i3"],
                  title=["One", "Two", None], tags=[["x", "y"], ["y"], []],
                  price=[1.0, None, 3.0])
    ds = load(tmp_path / "r.csv", split="none", user_features=str(tmp_path / "users.csv"),
              item_features=str(tmp_path / "items.parquet"))
    assert ds.users.ids.tolist() == ["u1", "u2", "u3", "u9"]  # side table ∪ interactions
    uf = ds.user_features
    assert set(uf.columns) == {"country=DE", "country=FR", "spend"}
    assert feature_names(uf, ds.users, "u3") == set()
    spend = uf.matrix[:, uf.columns.index("spend")].toarray().ravel()
    assert spend[ds.users.index(["u1"])[0]] > 0 > spend[ds.users.index(["u2"])[0]]
    assert spend[ds.users.index(["u1"])[0]] == pytest.approx(1.0)  # standardised: (30-20)/10
    assert feature_names(ds.item_features, ds.items, "i1") >= {"tags=x", "tags=y"}
    assert ds.item_titles.tolist() == ["One", "Two", None]
    assert ds.report["users_not_in_catalogue"] == {"ids": 1, "interactions": 1}


def test_side_table_errors(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id\n1,2\n")
    (tmp_path / "u.csv").write_text("id,age\n1,3\n")
    with pytest.raises(MissingColumnError) as err:
        load(tmp_path / "r.csv", split="none", user_features=str(tmp_path / "u.csv"))
    assert (err.value.file, err.value.column) == (str(tmp_path / "u.csv"), "user_id")
    (tmp_path / "u.csv").write_text("user_id,age\n1,3\n2,4\n1,5\n")
    with pytest.raises(InvalidValueError, match="twice") as err:
        load(tmp_path / "r.csv", split="none", user_features=str(tmp_path / "u.csv"))
    assert err.value.line == 4


# --- S3 ---------------------------------------------------------------------------------------

@pytest.fixture
def s3(monkeypatch):
    with moto_s3(monkeypatch, "data") as client:
        yield client


def upload_dir(client, local, prefix):
    for path in sorted(local.iterdir()):
        client.put_object(Bucket="data", Key=f"{prefix}/{path.name}", Body=path.read_bytes())


def test_ml100k_from_s3_equals_local(tmp_path, s3):
    local = write_ml100k(tmp_path / "ml")
    upload_dir(s3, local, "sets/ml-100k")
    remote = load("s3://data/sets/ml-100k/")
    here = load(local)
    assert rows(remote, remote.train) == rows(here, here.train)
    assert rows(remote, remote.test) == rows(here, here.test)
    assert remote.item_titles.tolist() == here.item_titles.tolist()
    assert remote.report["rows_read"]["s3://data/sets/ml-100k/ua.base"] == len(here.train)


def test_csv_and_parquet_from_s3(tmp_path, s3):
    s3.put_object(Bucket="data", Key="r.csv", Body=b"user_id,item_id,rating,timestamp\na,b,3,1\n")
    write_parquet(tmp_path / "t.parquet", user_id=["a"], item_id=["c"], rating=[4.0], timestamp=[2])
    s3.put_object(Bucket="data", Key="t.parquet", Body=(tmp_path / "t.parquet").read_bytes())
    ds = load("s3://data/r.csv", test_path="s3://data/t.parquet")
    assert rows(ds, ds.train) == [("a", "b", 3.0, 1)] and rows(ds, ds.test) == [("a", "c", 4.0, 2)]


def test_s3_errors_name_the_object(s3):
    s3.put_object(Bucket="data", Key="bad.csv", Body=b"user_id,item_id,rating,timestamp\na,b,x,1\n")
    with pytest.raises(InvalidValueError) as err:
        load("s3://data/bad.csv")
    assert (err.value.file, err.value.line, err.value.column) == ("s3://data/bad.csv", 2, "rating")
    with pytest.raises(DataError, match="no such"):
        load("s3://data/missing.csv")
