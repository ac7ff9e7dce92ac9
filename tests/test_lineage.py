"""Files derived from a model record its digest: a reused run directory never publishes the lists,
vectors or metrics of the model it held before."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import sqlalchemy as sa

from batch import lineage
from batch.publish import make_engine
from batch.rundir import RunDir


@pytest.fixture
def data(tmp_path, topx):
    out = tmp_path / "data"
    code, _, err = topx("data", "synth", "--out", str(out), "--users", "60", "--items", "80",
                        "--interactions", "2000", "--seed", "1")
    assert code == 0, err
    return out


def published(url):
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT run_id, COUNT(*) FROM current_recommendations GROUP BY run_id")).fetchall()
    engine.dispose()
    return rows


def train(topx, data, run, seed):
    code, _, err = topx("train", "--data", str(data), "--out", str(run), "--epochs", "1", "--num-factors", "4",
                        "--seed", str(seed))
    assert code == 0, err


def test_publish_refuses_lists_of_the_model_a_run_directory_held_before(tmp_path, topx, data):
    run, url = tmp_path / "R", f"sqlite:///{tmp_path / 'topx.db'}"
    train(topx, data, run, seed=1)
    assert topx("recommend", "--run", str(run), "--top", "5")[0] == 0
    assert topx("publish", "--run", str(run), "--run-id", "first", "--database-url", url, "--allow-regression")[0] == 0
    model = hashlib.sha256((run / "model.tar.gz").read_bytes()).hexdigest()
    assert lineage.recorded(run / "lists.npz") == lineage.recorded(run / "vectors.npz") == model

    train(topx, data, run, seed=2)  # the same directory: lists.npz and vectors.npz are the old model's
    code, _, err = topx("publish", "--run", str(run), "--run-id", "second", "--database-url", url, "--allow-regression")
    assert code == 2 and "made from another model" in err and "topx recommend" in err
    assert published(url) == [("first", 60 * 5)]

    assert topx("recommend", "--run", str(run), "--top", "5")[0] == 0  # repackages the new model
    new_model = hashlib.sha256((run / "model.tar.gz").read_bytes()).hexdigest()
    assert new_model != model and lineage.recorded(run / "vectors.npz") == new_model
    assert topx("publish", "--run", str(run), "--run-id", "second", "--database-url", url, "--allow-regression")[0] == 0
    assert published(url) == [("second", 60 * 5)]


def test_metrics_of_another_model_are_refused(tmp_path, topx, data):
    run, url = tmp_path / "R", f"sqlite:///{tmp_path / 'topx.db'}"
    train(topx, data, run, seed=1)
    assert topx("evaluate", "--run", str(run))[0] == 0
    old_metrics = (run / "metrics.json").read_text()
    assert json.loads(old_metrics)["evaluate"][lineage.KEY] == lineage.model_digest(run / "model.tar.gz")
    train(topx, data, run, seed=2)
    assert "evaluate" not in RunDir(run).read_json("metrics.json")  # a new model starts a new metrics.json
    assert topx("recommend", "--run", str(run), "--top", "5")[0] == 0
    (run / "metrics.json").write_text(old_metrics)
    code, _, err = topx("publish", "--run", str(run), "--database-url", url, "--allow-regression")
    assert code == 2 and "section 'train' of" in err and "made from another model" in err
    assert not (tmp_path / "topx.db").exists() or published(url) == []


def test_lists_without_a_digest_are_refused(tmp_path, topx, data):
    run, url = tmp_path / "R", f"sqlite:///{tmp_path / 'topx.db'}"
    train(topx, data, run, seed=1)
    assert topx("recommend", "--run", str(run), "--top", "5")[0] == 0
    with np.load(run / "lists.npz") as z:
        columns = {k: z[k] for k in z.files if k != lineage.KEY}
    np.savez(run / "old.npz", **columns)
    shutil.move(run / "old.npz", run / "lists.npz")
    code, _, err = topx("publish", "--run", str(run), "--database-url", url, "--allow-regression")
    assert code == 2 and "does not say which model" in err


def similar_rows(url):
    """The current similar items; none when nothing was ever published."""
    engine = make_engine(url)
    if "current_similar_items" not in sa.inspect(engine).get_view_names():
        return []
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT item_id, similar_item_id, run_id FROM current_similar_items")).fetchall()
    engine.dispose()
    return rows


def test_similar_items_of_the_model_a_run_directory_held_before_are_refused(tmp_path, topx, data):
    run, url = tmp_path / "R", f"sqlite:///{tmp_path / 'topx.db'}"
    train(topx, data, run, seed=1)
    assert topx("similar", "--run", str(run), "--top", "3")[0] == 0
    train(topx, data, run, seed=2)  # similar.npz is the old model's
    assert topx("recommend", "--run", str(run), "--top", "5")[0] == 0
    assert topx("evaluate", "--run", str(run))[0] == 0
    code, _, err = topx("publish", "--run", str(run), "--database-url", url, "--allow-regression")
    assert code == 2 and "similar.npz was made from another model" in err and "topx similar" in err
    assert similar_rows(url) == []

    assert topx("similar", "--run", str(run), "--top", "3")[0] == 0
    assert lineage.recorded(run / "similar.npz") == lineage.model_digest(run / "model.tar.gz")
    assert topx("publish", "--run", str(run), "--database-url", url, "--allow-regression")[0] == 0
    assert len(similar_rows(url)) == 80 * 3


def test_similar_items_and_audiences_made_with_other_candidate_rules_are_refused(tmp_path, topx, data):
    run, url = tmp_path / "R", f"sqlite:///{tmp_path / 'topx.db'}"
    train(topx, data, run, seed=1)
    denied = str(RunDir(run).load_dataset().items.ids[0])
    (tmp_path / "d.txt").write_text(denied + "\n")
    assert topx("similar", "--run", str(run), "--top", "3")[0] == 0
    assert topx("audience", "--run", str(run), "--items", "*", "--size", "2")[0] == 0
    assert topx("recommend", "--run", str(run), "--top", "5", "--deny", str(tmp_path / "d.txt"))[0] == 0
    assert topx("evaluate", "--run", str(run))[0] == 0
    assert lineage.recorded(run / "lists.npz", lineage.RULES_KEY) != \
        lineage.recorded(run / "similar.npz", lineage.RULES_KEY)
    code, _, err = topx("publish", "--run", str(run), "--database-url", url, "--allow-regression")
    assert code == 2 and "similar.npz was made with other candidate rules" in err
    assert similar_rows(url) == []

    (tmp_path / "job.toml").write_text(f"[search]\ndeny = {str(tmp_path / 'd.txt')!r}\n")
    assert topx("similar", "--run", str(run), "--top", "3", "--config", str(tmp_path / "job.toml"))[0] == 0
    code, _, err = topx("publish", "--run", str(run), "--database-url", url, "--allow-regression")
    assert code == 2 and "audiences.npz was made with other candidate rules" in err and "topx audience" in err
    assert topx("audience", "--run", str(run), "--items", "*", "--size", "2",
                "--config", str(tmp_path / "job.toml"))[0] == 0
    assert topx("publish", "--run", str(run), "--database-url", url, "--allow-regression")[0] == 0
    rows = similar_rows(url)
    assert rows and denied not in {str(similar) for _, similar, _ in rows}


def test_suppression_until_is_judged_at_the_runs_reference_time_which_the_files_record(tmp_path, topx, data):
    """Not the clock: a pair suppressed until 2021 is in force for a run whose data came in 2020,
    whenever its search runs; lists and audiences record that time, and publishing refuses
    audiences made at another one (the data re-ingested in between)."""
    run, url = tmp_path / "R", f"sqlite:///{tmp_path / 'topx.db'}"
    train(topx, data, run, seed=1)
    dataset = RunDir(run).load_dataset()
    suppress = tmp_path / "suppress.csv"
    suppress.write_text(f"{dataset.users.ids[0]},{dataset.items.ids[0]},2021-01-01\n")
    report = json.loads((run / "report.json").read_text())

    def ingested(at: str) -> None:
        (run / "report.json").write_text(json.dumps({**report, "ingested_at": at}))

    ingested("2020-06-01T00:00:00+00:00")
    code, summary, err = topx("recommend", "--run", str(run), "--top", "5", "--suppress", str(suppress))
    assert code == 0, err
    assert (summary["suppress_pairs"], summary["suppress_expired"]) == (1, 0)
    assert lineage.recorded(run / "lists.npz", lineage.REFERENCE_KEY) == "2020-06-01T00:00:00+00:00"
    assert topx("evaluate", "--run", str(run))[0] == 0

    job = tmp_path / "job.toml"
    job.write_text(f"[search]\nsuppress = {str(suppress)!r}\n")
    ingested("2021-06-01T00:00:00+00:00")  # the pair has expired for this time
    code, summary, err = topx("audience", "--run", str(run), "--items", "*", "--size", "2", "--config", str(job))
    assert code == 0, err
    code, _, err = topx("publish", "--run", str(run), "--database-url", url, "--allow-regression")
    assert code == 2 and ("audiences.npz applied availability and suppression at another reference time "
                          "(2021-06-01T00:00:00+00:00) than the users' lists (2020-06-01T00:00:00+00:00)") in err
    ingested("2020-06-01T00:00:00+00:00")
    assert topx("audience", "--run", str(run), "--items", "*", "--size", "2", "--config", str(job))[0] == 0
    assert topx("publish", "--run", str(run), "--database-url", url, "--allow-regression")[0] == 0

    # search.reference_time, when set, is the time instead of the ingest's
    job.write_text(f"[search]\nsuppress = {str(suppress)!r}\nreference_time = \"2022-01-01\"\n")
    code, summary, err = topx("recommend", "--run", str(run), "--top", "5", "--config", str(job))
    assert code == 0, err
    assert (summary["suppress_pairs"], summary["suppress_expired"]) == (0, 1)
    assert lineage.recorded(run / "lists.npz", lineage.REFERENCE_KEY) == "2022-01-01T00:00:00+00:00"
