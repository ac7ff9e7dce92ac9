"""Any external id or title round-trips through a run directory: line breaks in ids (quoted CSV
fields, Parquet strings) or titles never shift one id onto another user's or item's lists."""

import csv
import json

import numpy as np
import pytest
import sqlalchemy as sa

from batch.config import load_config
from batch.data.interactions import Dataset, IdMap
from batch.errors import IdMapMismatchError
from batch.pipeline import run_job
from batch.publish import make_engine
from batch.rundir import RunDir

ODD_USERS = ["a\nb", "c\rd", "e\r\nf", "g\n", "\rh", " i ", "j,k", 'l"m']
ODD_ITEMS = ["x\ny", "z\r", "\n1"]


def interactions(seed: int = 0) -> list[tuple[str, str, int, int]]:
    rng = np.random.default_rng(seed)
    users = [f"u{k}" for k in range(40)] + ODD_USERS
    items = [f"i{k}" for k in range(50)] + ODD_ITEMS
    rows = [(u, items[rng.integers(len(items))], int(rng.integers(1, 6)), n)
            for n, u in enumerate(users * 30)]
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "rating", "timestamp"])
        writer.writerows(rows)
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    user, item, rating, ts = zip(*rows, strict=True)
    pq.write_table(pa.table({"user_id": list(user), "item_id": list(item), "rating": list(rating),
                             "timestamp": list(ts)}), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_ids_with_line_breaks_are_published_under_their_own_lists(tmp_path, fmt):
    rows = interactions()
    data = (write_csv if fmt == "csv" else write_parquet)(tmp_path / f"inter.{fmt}", rows)
    url = f"sqlite:///{tmp_path / 'topx.db'}"
    cfg = load_config(base={"workdir": str(tmp_path / "work"), "data": {"path": str(data), "split": "none"},
                            "train": {"hyperparameters": {"epochs": 1, "num_factors": 4}},
                            "search": {"top": 5},  # split none: no held-out data, so no metric to require
                            "publish": {"database_url": url, "gate": {"require_metric": False}}}, env={})
    summary = run_job(cfg)
    assert summary["status"] == "published"
    engine = make_engine(url)
    with engine.connect() as conn:
        published = conn.execute(sa.text("SELECT user_id, item_id FROM current_recommendations")).fetchall()
    engine.dispose()
    seen = {(u, i) for u, i, _, _ in rows}
    assert {u for u, _ in published} == {u for u, _, _, _ in rows}
    assert {i for _, i in published} <= {i for _, i, _, _ in rows}
    assert not [pair for pair in published if tuple(pair) in seen]  # each list excludes its own user's items


def test_titles_and_ids_round_trip(tmp_path):
    rows = interactions()
    from batch.data import load_dataset
    from batch.data.default import resolve_data

    cfg = load_config(base={"data": {"path": str(write_csv(tmp_path / "i.csv", rows)), "split": "none"}}, env={})
    dataset = load_dataset(resolve_data(cfg.data, tmp_path))
    titles = np.array([f"T\r{k}\n" if k % 2 else None for k in range(dataset.n_items)], dtype=object)
    Dataset(dataset.train, dataset.test, dataset.users, dataset.items, item_titles=titles).save(tmp_path / "run")
    back = Dataset.load(tmp_path / "run")
    assert back.users.ids.tolist() == dataset.users.ids.tolist()
    assert back.items.ids.tolist() == dataset.items.ids.tolist()
    assert back.item_titles.tolist() == titles.tolist()
    assert set(ODD_USERS) <= set(back.users.ids.tolist())


def test_int_id_map_stays_int(tmp_path):
    IdMap(np.array([3, 7, 2**40], np.int64)).save(tmp_path / "ids.npz")
    back = IdMap.load(tmp_path / "ids.npz")
    assert back.is_int and back.ids.tolist() == [3, 7, 2**40]


def test_id_maps_that_do_not_fit_the_model_are_refused(tmp_path):
    rows = interactions()
    url = f"sqlite:///{tmp_path / 'topx.db'}"
    cfg = load_config(base={"workdir": str(tmp_path / "work"),
                            "data": {"path": str(write_csv(tmp_path / "i.csv", rows)), "split": "none"},
                            "train": {"hyperparameters": {"epochs": 1, "num_factors": 4}},
                            "search": {"top": 5},  # split none: no held-out data, so no metric to require
                            "publish": {"database_url": url, "gate": {"require_metric": False}}}, env={})
    run = RunDir(tmp_path / "work" / "runs" / run_job(cfg)["run_id"])
    layout = json.loads(run.layout.read_text())
    grown = {**layout, "n_users": layout["n_users"] + 1, "feature_dim": layout["feature_dim"] + 1}
    run.layout.write_text(json.dumps(grown))
    with pytest.raises(IdMapMismatchError, match="the model has"):
        run.load_dataset()
    run.layout.write_text(json.dumps(layout))
    users = IdMap.load(run.file("users.npz"))
    IdMap(users.ids[:-1]).save(run.file("users.npz"))
    with pytest.raises(IdMapMismatchError, match="user id map"):
        run.load_dataset()


@pytest.mark.parametrize("chunk_bytes", [7, 64, 1 << 20])
def test_quoted_line_breaks_survive_any_block_cut(tmp_path, chunk_bytes):
    from batch.data.delimited import LINE, Field, TextTable

    path = tmp_path / "t.csv"
    path.write_bytes(b'user,item\r\n"a\nb",1\r\n"c\r\nd",2\r\nplain,3\r\n"e""\nf",4\r\n')
    table = TextTable(str(path), delimiter=",", header=True, quotechar='"')
    table.chunk_bytes = chunk_bytes
    parts = list(table.read([Field("user", "str"), Field("item", "int")], with_lines=True))
    users = np.concatenate([p["user"] for p in parts]).tolist()
    lines = np.concatenate([p[LINE] for p in parts]).tolist()
    assert users == ["a\nb", "c\r\nd", "plain", 'e"\nf'] and lines == [2, 4, 6, 7]


def test_an_unterminated_quote_is_reported_at_its_line(tmp_path):
    from batch.data.delimited import Field, TextTable
    from batch.errors import MalformedLineError

    path = tmp_path / "t.csv"
    path.write_bytes(b'user,item\nok,1\n"open,2\nmore,3\n')
    table = TextTable(str(path), delimiter=",", header=True, quotechar='"')
    with pytest.raises(MalformedLineError, match="line 3"):
        list(table.read([Field("user", "str"), Field("item", "int")], with_lines=True))


def test_a_parquet_id_ending_in_nul_is_refused_not_merged(tmp_path):
    from batch.data import load_dataset
    from batch.data.default import resolve_data
    from batch.errors import InvalidValueError

    rows = [*interactions(), ("u1\0", "i1", 3, 99999)]
    data = write_parquet(tmp_path / "i.parquet", rows)
    cfg = load_config(base={"data": {"path": str(data), "split": "none"}}, env={})
    with pytest.raises(InvalidValueError, match="NUL") as caught:
        load_dataset(resolve_data(cfg.data, tmp_path))
    assert caught.value.line == len(rows) and caught.value.column == "user_id"
