"""``topx run`` end to end on SQLite and PostgreSQL: lists, atomicity on failure, resume."""

import json

import numpy as np
import pytest
import sqlalchemy as sa

from batch.cli import main
from batch.config import load_config
from batch.data.interactions import Dataset
from batch.lists import TopLists
from batch.pipeline import run_job
from batch.publish import make_engine
from batch.rundir import RunDir
from batch.stages import Stages

SMALL = {
    "data": {"synth": {"users": 80, "items": 120, "interactions": 4000, "seed": 3}},
    "train": {"hyperparameters": {"epochs": 3, "num_factors": 8}},
    "search": {"top": 15},
}


def config(tmp_path, db_url, **changes):
    tree = json.loads(json.dumps(SMALL))
    for dotted, value in changes.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    tree["workdir"] = str(tmp_path / "work")
    tree.setdefault("publish", {})["database_url"] = db_url
    tree["publish"]["gate"] = {"allow_regression": True}  # 3 epochs on 80 users: below the popularity list
    return load_config(base=tree, env={})


def current(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT user_id, rank, item_id, score FROM current_recommendations "
                                    "ORDER BY user_id, rank")).fetchall()
        runs = dict(conn.execute(sa.text("SELECT id, status FROM runs")).fetchall())
    engine.dispose()
    return rows, runs


def test_run_publishes_lists_without_seen_items(tmp_path, db_url):
    cfg = config(tmp_path, db_url)
    summary = run_job(cfg)
    assert summary["status"] == "published" and summary["users"] == 80 and summary["items"] == 120
    run = RunDir(tmp_path / "work" / "runs" / summary["run_id"])
    dataset, lists = Dataset.load(run.path), TopLists.load(run.file("lists.npz"))
    rows, runs = current(db_url)
    assert runs[summary["run_id"]] == "current" and len(rows) == len(lists) == summary["rows"]
    seen = {(str(dataset.users.ids[u]), str(dataset.items.ids[i]))
            for u, i in zip(*dataset.all_interactions().columns()[:2], strict=True)}
    assert not [r for r in rows if (r[0], r[2]) in seen]
    by_user = {}
    for user_id, rank, _, score in rows:
        by_user.setdefault(user_id, []).append((rank, score))
    for ranked in by_user.values():
        ranks, scores = zip(*sorted(ranked), strict=True)
        assert list(ranks) == list(range(1, len(ranks) + 1))
        assert all(a >= b for a, b in zip(scores, scores[1:], strict=False))  # rank 1 has the highest score
    metrics = run.read_json("metrics.json")
    assert {"train", "evaluate"} <= set(metrics) and "ndcg@10" in metrics["evaluate"]["model"]


def test_stored_score_is_what_topx_score_prints(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    summary = run_job(config(tmp_path, db))
    run_dir = tmp_path / "work" / "runs" / summary["run_id"]
    rows, _ = current(db)
    user, _, item, score = rows[0]
    capsys.readouterr()
    assert main(["score", "--run", str(run_dir), "--user", user, "--item", item]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["scores"][0]["score"] == pytest.approx(score, rel=1e-5, abs=1e-5)


def test_a_failed_run_leaves_the_previous_lists_current_and_resumes(tmp_path, db_url, monkeypatch):
    first = run_job(config(tmp_path, db_url))
    before, _ = current(db_url)
    cfg = config(tmp_path, db_url, **{"search.top": 10})

    def broken(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Stages, "evaluate", broken)
    with pytest.raises(RuntimeError):
        run_job(cfg)
    after, runs = current(db_url)
    assert after == before and runs[first["run_id"]] == "current"
    failed = [run_id for run_id, status in runs.items() if status == "failed"]
    assert len(failed) == 1

    # the next run with the same settings resumes the failed one: no retraining, same run id
    monkeypatch.undo()
    monkeypatch.setattr(Stages, "train", lambda self: pytest.fail("train ran again"))
    resumed = run_job(cfg)
    assert resumed["run_id"] == failed[0] and resumed["resumed"] is True
    rows, runs = current(db_url)
    assert runs[failed[0]] == "current" and len(rows) == resumed["rows"]
    assert max(r[1] for r in rows) == 10


def test_changing_where_a_run_runs_still_resumes_it(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setattr(Stages, "evaluate", lambda self: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        run_job(config(tmp_path, db), run_id="r1")
    monkeypatch.undo()
    monkeypatch.setattr(Stages, "train", lambda self: pytest.fail("train ran again"))
    # run-location settings inside compute sections are not part of what the run computes
    moved = config(tmp_path, db, **{"train.device": "cpu", "search.batch_size": 64, "search.recall_sample": 10,
                                    "sagemaker.poll_s": 1.0, "sagemaker.region": "eu-west-1"})
    assert run_job(moved, run_id="r1")["resumed"] is True
    monkeypatch.undo()
    monkeypatch.setattr(Stages, "evaluate", lambda self: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):  # the automatic resume too (a failed run of the same settings)
        run_job(config(tmp_path / "auto", db, **{"search.top": 7}))  # its own work directory: no r1
    monkeypatch.undo()
    monkeypatch.setattr(Stages, "train", lambda self: pytest.fail("train ran again"))
    assert run_job(config(tmp_path / "auto", db, **{"search.top": 7, "train.device": "cpu"}))["resumed"] is True


def test_rerunning_the_publish_stage_does_not_duplicate_rows(tmp_path, db_url):
    summary = run_job(config(tmp_path, db_url))
    run = RunDir(tmp_path / "work" / "runs" / summary["run_id"])
    stages = Stages(config(tmp_path, db_url), run, summary["run_id"])
    stages.publish()
    rows, runs = current(db_url)
    assert len(rows) == summary["rows"] and list(runs.values()).count("current") == 1


@pytest.mark.slow
def test_default_settings_beat_the_popularity_list(tmp_path):
    # Quality guard: the embedded default (MovieLens-100k-sized, planted tastes) with default
    # hyperparameters must beat the popularity list clearly. (On a tiny, dense, popularity-
    # dominated data set no personalised model does; this one is shaped like MovieLens.)
    cfg = load_config(base={"workdir": str(tmp_path / "w")}, env={})
    summary = run_job(cfg)
    evaluate = RunDir(tmp_path / "w" / "runs" / summary["run_id"]).read_json("metrics.json")["evaluate"]
    assert evaluate["model"]["ndcg@10"] > 1.2 * evaluate["popularity"]["ndcg@10"]
    beyond = evaluate["beyond"]
    for k in (10, 100):
        assert beyond["model"][f"catalogue_coverage@{k}"] > beyond["popularity"][f"catalogue_coverage@{k}"]
        assert beyond["model"][f"gini@{k}"] < beyond["popularity"][f"gini@{k}"]
        assert beyond["model"][f"novelty@{k}"] > beyond["popularity"][f"novelty@{k}"]


def test_cli_run_summary_line(tmp_path, capsys):
    args = ["run", "--workdir", str(tmp_path / "w"), "--top", "5", "--epochs", "1", "--num-factors", "4",
            "--allow-regression"]
    env_config = tmp_path / "job.toml"
    env_config.write_text('[data.synth]\nusers = 40\nitems = 60\ninteractions = 1000\n')
    assert main(args + ["--config", str(env_config)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "published" and summary["rows"] == 40 * 5
    assert set(summary["seconds"]) >= {"ingest", "train", "repackage", "search", "evaluate", "publish", "total"}
    assert np.isfinite(summary["metrics"]["ndcg@10"])


def test_an_s3_work_directory_lets_another_machine_resume(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    from batch import storage

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="topx-work")
        storage.set_s3_client(s3)
        try:
            db = f"sqlite:///{tmp_path / 'db.sqlite'}"
            base = json.loads(json.dumps(SMALL))
            base.update(workdir="s3://topx-work/prod", scratch=str(tmp_path / "machine-a"),
                        publish={"database_url": db, "gate": {"allow_regression": True}})
            monkeypatch.setattr(Stages, "publish", lambda self: (_ for _ in ()).throw(RuntimeError("db down")))
            with pytest.raises(RuntimeError):
                run_job(load_config(base=base, env={}))
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="topx-work")["Contents"]]
            assert any(k.endswith("/lists.npz") for k in keys) and any(k.endswith("/model.tar.gz") for k in keys)

            # a retry lands on another machine: it pulls the run and only publishes
            monkeypatch.undo()
            monkeypatch.setattr(Stages, "train", lambda self: pytest.fail("train ran again"))
            base["scratch"] = str(tmp_path / "machine-b")
            summary = run_job(load_config(base=base, env={}))
            assert summary["resumed"] is True
            rows, runs = current(db)
            assert runs[summary["run_id"]] == "current" and len(rows) == summary["rows"] == 80 * 15
        finally:
            storage.set_s3_client(None)


def test_a_bad_allow_list_fails_the_run_and_publishes_nothing(tmp_path, topx):
    """One text id among integer ids used to make every id unknown: an empty run became current."""
    url = f"sqlite:///{tmp_path / 'topx.db'}"
    (tmp_path / "allow.txt").write_text("SKU-1\n")
    (tmp_path / "job.toml").write_text(
        f'workdir = "{tmp_path / "work"}"\n[data.synth]\nusers = 80\nitems = 120\ninteractions = 4000\n'
        f'[train.hyperparameters]\nepochs = 1\nnum_factors = 4\n[search]\nallow = "{tmp_path / "allow.txt"}"\n')
    code, _, err = topx("run", "--config", str(tmp_path / "job.toml"), "--database-url", url)
    assert code == 2 and "no item is left to recommend" in err and "allow.txt:1: 'SKU-1'" in err
    assert current(url)[0] == []
    code, _, err = topx("export", "--top", "3", "--out", str(tmp_path / "x.csv"), "--database-url", url)
    assert code != 0 and not (tmp_path / "x.csv").exists()


def test_a_binary_run_worse_than_the_implicit_one_does_not_replace_it(tmp_path, db_url, topx):
    """The tutorials' binary mode ranks far worse than implicit (0.27 against 0.30 NDCG@10 here):
    the publish gate keeps it as rejected, exit 3, and the implicit lists stay current."""
    job = tmp_path / "job.toml"
    job.write_text("[data.synth]\nusers = 80\nitems = 120\ninteractions = 4000\nseed = 3\n"
                   "[train.hyperparameters]\nepochs = 3\nnum_factors = 8\n[search]\ntop = 15\n")
    common = ("run", "--config", str(job), "--workdir", str(tmp_path / "work"), "--database-url", db_url)
    code, implicit, err = topx(*common, "--allow-regression")  # 3 epochs on 80 users: below popularity
    assert code == 0, err
    before = current(db_url)

    code, summary, err = topx(*common, "--mode", "binary")
    assert (code, summary) == (3, None)
    assert f"below the current run {implicit['run_id']}'s {implicit['metrics']['ndcg@10']:.4f}" in err
    assert "kept as rejected" in err
    rows, runs = current(db_url)
    assert rows == before[0] and runs[implicit["run_id"]] == "current"
    [rejected] = [run_id for run_id, status in runs.items() if status == "rejected"]
    assert RunDir(tmp_path / "work" / "runs" / rejected).read_json("run.json")["status"] == "rejected"
    assert topx(*common, "--mode", "binary")[0] == 3  # a new run: a rejected run is not resumed
    assert sorted(current(db_url)[1].values()) == ["current", "rejected", "rejected"]

    code, forced, err = topx(*common, "--mode", "binary", "--resume", rejected, "--allow-regression")
    assert code == 0 and forced["run_id"] == rejected and forced["resumed"] is True, err
    assert current(db_url)[1][rejected] == "current"
