"""Item attributes: the item file's columns (genres, price, availability, ...) are read with the
catalogue, kept in the run directory and published with the run as ``item_attributes``, in the
run's switch transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from test_publish_support import id_maps, make_lists, query, run_info

from batch.config import DataConfig
from batch.data.interactions import Dataset, IdMap
from batch.data.loader import load_dataset
from batch.errors import PublishError
from batch.publish import publish_run

SQL = Path(__file__).parents[1] / "sql" / "dashboard_item_attributes.sql"


def attributes_for(items, price_shift: float = 0.0) -> dict[str, np.ndarray]:
    n = len(items)
    price = np.array([f"{1.5 + i + price_shift:.2f}" for i in range(n)], dtype=object)
    stock = np.array(["true" if i % 3 else "false" for i in range(n)], dtype=object)
    until = np.array([None if i % 2 else "2030-01-01" for i in range(n)], dtype=object)
    return {"price": price, "in_stock": stock, "available_until": until}


def test_item_attributes_are_published_with_the_run_and_replaced_by_the_next(db_url):
    users, items = id_maps()
    summary = publish_run(db_url, run_info("r1"), make_lists(), users, items, item_attributes=attributes_for(items))
    n = len(items)
    assert summary["item_attributes"] == 2 * n + (n + 1) // 2  # empty values give no row
    first = str(items.ids[0])
    assert query(db_url, SQL.read_text(), item_id=first) == [
        ("available_until", "2030-01-01", "r1"), ("in_stock", "false", "r1"), ("price", "1.50", "r1")]

    publish_run(db_url, run_info("r2"), make_lists(shift=1), users, items,
                item_attributes=attributes_for(items, price_shift=10))
    assert query(db_url, "SELECT value, run_id FROM current_item_attributes WHERE item_id = :i AND name = 'price'",
                 i=first) == [("11.50", "r2")]
    # a broken column publishes nothing: r2 stays current with its attributes
    bad = {"price": np.array(["1"] * (n - 1), dtype=object)}
    with pytest.raises(PublishError, match="price"):
        publish_run(db_url, run_info("r3"), make_lists(shift=2), users, items, item_attributes=bad)
    assert query(db_url, "SELECT DISTINCT run_id FROM current_item_attributes") == [("r2",)]
    # pruning deletes a run's attributes with its other rows
    publish_run(db_url, run_info("r4"), make_lists(shift=3), users, items, item_attributes=attributes_for(items),
                keep_runs=1)
    assert query(db_url, "SELECT DISTINCT run_id FROM item_attributes") == [("r4",)]


def test_the_item_files_columns_are_read_kept_with_the_run_and_published(tmp_path, topx):
    (tmp_path / "ratings.csv").write_text("user_id,item_id,rating\n" + "".join(
        f"u{u},i{i},{1 + (u + i) % 5}\n" for u in range(12) for i in range(8) if (u + i) % 3))
    (tmp_path / "items.csv").write_text(
        "item_id,title,genres,price,available_from,in_stock\n"
        + "".join(f"i{i},Item {i},{'Drama|Comedy' if i % 2 else 'Horror'},{i}.99,{'2024-01-0' + str(1 + i % 9)},"
                  f"{'true' if i % 4 else ''}\n" for i in range(8)))
    dataset = load_dataset(DataConfig(path=str(tmp_path / "ratings.csv"), item_features=str(tmp_path / "items.csv"),
                                      split="none"))
    row = int(dataset.items.index(np.array(["i1"]))[0])
    assert {name: values[row] for name, values in dataset.item_attributes.items()} == {
        "genres": "Drama|Comedy", "price": "1.99", "available_from": "2024-01-02", "in_stock": "true"}
    dataset.save(tmp_path / "saved")
    again = Dataset.load(tmp_path / "saved")
    assert {k: v.tolist() for k, v in again.item_attributes.items()} == {
        k: v.tolist() for k, v in dataset.item_attributes.items()}

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    job = tmp_path / "job.toml"
    job.write_text(f'workdir = "{tmp_path / "work"}"\n[data]\npath = "{tmp_path / "ratings.csv"}"\n'
                   f'item_features = "{tmp_path / "items.csv"}"\nsplit = "none"\n'
                   f'[train.hyperparameters]\nepochs = 2\nnum_factors = 4\n[search]\ntop = 3\n[similar]\ntop = 0\n'
                   f'[publish]\ndatabase_url = "{db}"\n[publish.gate]\nallow_regression = true\n')
    code, _, err = topx("run", "--config", str(job))
    assert code == 0, err
    assert query(db, "SELECT name, value FROM current_item_attributes WHERE item_id = 'i0' ORDER BY name") == [
        ("available_from", "2024-01-01"), ("genres", "Horror"), ("price", "0.99")]


def availability_data(tmp_path, **bad: str) -> tuple[str, str]:
    """12 users × 10 items; items i0 (available from 2026), i1 (available until 2024-12-31) and i2
    (out of stock) are not available on 2025-06-01, i3 (until 2025-06-01: that whole day) is."""
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("user_id,item_id,rating\n" + "".join(
        f"u{u},i{i},{1 + (u + i) % 5}\n" for u in range(12) for i in range(10) if (u * 7 + i) % 4 == 0))
    rows = {0: ("2026-01-01", "", "true"), 1: ("", "2024-12-31", ""), 2: ("", "", "false"),
            3: ("2020-01-01T00:00:00Z", "2025-06-01", "yes")}
    lines = ["item_id,genres,available_from,available_until,in_stock"]
    for i in range(10):
        start, until, stock = rows.get(i, ("", "", ""))
        lines.append(f"i{i},{'Drama' if i % 2 else 'Horror'},{bad.get('available_from', start) if i == 5 else start},"
                     f"{until},{stock}")
    items = tmp_path / "items.csv"
    items.write_text("\n".join(lines) + "\n")
    return str(ratings), str(items)


def availability_job(tmp_path, ratings: str, items: str, extra: str = "") -> str:
    campaign = tmp_path / "campaign.txt"
    campaign.write_text("i0\ni4\n")
    job = tmp_path / "job.toml"
    job.write_text(f'workdir = "{tmp_path / "work"}"\n[data]\npath = "{ratings}"\nitem_features = "{items}"\n'
                   f'split = "none"\n[train.hyperparameters]\nepochs = 2\nnum_factors = 4\n[search]\ntop = 4\n'
                   f'availability = true\nreference_time = "2025-06-01T12:00:00"\n{extra}'
                   f'[similar]\ntop = 3\n[audience]\nitems = "{campaign}"\nsize = 3\n'
                   f'[publish]\ndatabase_url = "sqlite:///{tmp_path / "db.sqlite"}"\n'
                   f'[publish.gate]\nallow_regression = true\n')
    return str(job)


def test_items_not_available_at_the_reference_time_are_left_out_of_every_list_which_stays_full(tmp_path, topx):
    ratings, items = availability_data(tmp_path)
    code, summary, err = topx("run", "--config", availability_job(tmp_path, ratings, items))
    assert code == 0, err
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    gone = ("i0", "i1", "i2")
    listed = query(db, "SELECT user_id, item_id FROM current_recommendations")
    assert listed and not [item for _, item in listed if item in gone]
    per_user = query(db, "SELECT COUNT(*) FROM current_recommendations GROUP BY user_id")
    assert {n for (n,) in per_user} == {4}  # each user saw ≤ 3 items: ≥ 4 unseen ones are available
    similar = query(db, "SELECT item_id, similar_item_id FROM current_similar_items")
    # unavailable items are never a neighbour; their own pages still get available alternatives
    assert similar and not [pair for pair in similar if pair[1] in gone]
    assert {"i0", "i1", "i2"} <= {item for item, _ in similar}
    assert {n for (n,) in query(db, "SELECT COUNT(*) FROM current_similar_items GROUP BY item_id")} == {3}
    assert query(db, "SELECT DISTINCT item_id FROM current_audiences") == [("i4",)]
    # the attributes are published as read, available or not
    assert query(db, "SELECT value FROM current_item_attributes WHERE item_id = 'i2' AND name = 'in_stock'") == [
        ("false",)]


def test_the_reference_time_is_fixed_with_the_run_not_read_at_search_time(tmp_path, topx):
    from batch.config import SearchConfig
    from batch.data.availability import available
    from batch.rundir import RunDir

    ratings, items = availability_data(tmp_path)
    job = availability_job(tmp_path, ratings, items)
    code, _, err = topx("train", "--config", job, "--out", str(tmp_path / "run"))
    assert code == 0, err
    dataset = RunDir(tmp_path / "run").load_dataset()
    ingested = dataset.report["ingested_at"]
    mask, report = available(SearchConfig(availability=True), dataset)
    assert report["reference_time"] == datetime.fromisoformat(ingested).isoformat()
    assert not mask[dataset.items.index(np.array(["i1", "i2"]))].any()  # until 2024, out of stock
    mask, _ = available(SearchConfig(availability=True, reference_time="2025-06-01"), dataset)
    assert mask[dataset.items.index(np.array(["i3"]))].all()


def test_availability_values_and_settings_that_are_wrong_stop_with_a_named_error(tmp_path, topx):
    ratings, items = availability_data(tmp_path, available_from="soon")
    code, _, err = topx("run", "--config", availability_job(tmp_path, ratings, items))
    assert code == 2 and f"{items}, line 7, column available_from" in err and "'soon'" in err

    ratings, items = availability_data(tmp_path)
    job = Path(availability_job(tmp_path, ratings, items))
    job.write_text(job.read_text().replace("2025-06-01T12:00:00", "June 1st"))
    code, _, err = topx("run", "--config", str(job))
    assert code == 2 and "search.reference_time 'June 1st'" in err

    (tmp_path / "plain.csv").write_text("item_id,genres\n" + "".join(f"i{i},Drama\n" for i in range(10)))
    code, _, err = topx("run", "--config", availability_job(tmp_path, ratings, str(tmp_path / "plain.csv")))
    assert code == 2 and "available_from, available_until, in_stock" in err

    everything = tmp_path / "gone.csv"
    everything.write_text("item_id,in_stock\n" + "".join(f"i{i},no\n" for i in range(10)))
    code, _, err = topx("run", "--config", availability_job(tmp_path, ratings, str(everything)))
    assert code != 0 and "0 item(s) available at 2025-06-01T12:00:00+00:00" in err


def test_a_parquet_item_files_typed_availability_columns_are_understood(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from batch.config import SearchConfig
    from batch.data.availability import available
    from batch.data.tables import read_side_table

    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({
        "item_id": ["a", "b", "c", "d"], "in_stock": [True, False, None, True],
        "available_from": pa.array([dt.datetime(2026, 1, 1, 5, 0, 0, 123456), None, None, None],
                                   pa.timestamp("ns", tz="UTC")),
        "available_until": pa.array([None, None, dt.date(2024, 12, 31), dt.date(2025, 1, 1)], pa.date32())}), path)
    table = read_side_table(str(path), "item_id", items=True)
    ids = IdMap(np.array(["a", "b", "c", "d"]))
    dataset = Dataset(train=None, test=None, users=None, items=ids, item_attributes=table.attributes_for(ids))
    mask, report = available(SearchConfig(availability=True, reference_time="2025-01-01T23:00:00+00:00"), dataset)
    assert mask.tolist() == [False, False, False, True]  # from 2026, out of stock, until 2024, until that day
    assert report["not_available_in_stock"] == 1
