"""Sharded runs on SQLite and PostgreSQL: ``topx run --shards N``, ``topx shard`` × N and
``topx finalize`` publish exactly what ``topx run`` publishes; a missing, repeated, killed or
concurrent shard never leaves a partial or duplicated run visible.

The database-level tests use the known lists of test_publish_support (60 users × 4 rows); the
pipeline-level ones a tiny synthetic data set, trained for real.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from test_publish_support import (
    expected_rows,
    hook_chunks,
    id_maps,
    make_lists,
    query,
    run_info,
    status,
    titles_for,
    view_rows,
)

from batch.cli import main
from batch.config import load_config
from batch.errors import ConfigError, PublishError
from batch.pipeline import run_job
from batch.publish import cleanup, current_run, make_engine, mark_failed, publish_run
from batch.publish.base import sink_for
from batch.publish.collect import IncompleteRunError, finalize_run, load_shard, open_collection
from batch.publish.models import run_shards, schema_sql, shard_schema_sql
from batch.publish.postgres import partition_names
from batch.rundir import RunDir
from batch.shards import finalize, run_shard, shard_users

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train": {"hyperparameters": {"epochs": 2, "num_factors": 8}}, "search": {"top": 10}}
USERS, COLD = 56, 6  # the last COLD users are only in the test file: the popularity list is theirs
N_USERS, TOP = 60, 4  # make_lists(N_USERS): every user has TOP rows


# ---- helpers ------------------------------------------------------------------------------------

def shard_of(lists, index: int, shards: int):
    """The rows of shard ``index``: the same users topx shard takes."""
    return lists.take(np.isin(lists.user, shard_users(int(lists.user.max()) + 1, index, shards)))


def load(url: str, run_id: str, index: int, shards: int = 3, shift: float = 0.0) -> dict:
    users, items = id_maps(N_USERS, 10)
    return load_shard(url, run_id, index, shard_of(make_lists(N_USERS, shift=shift), index, shards), users, items)


def finish(url: str, run_id: str) -> dict:
    _, items = id_maps(N_USERS, 10)
    return finalize_run(url, run_info(run_id), items, item_titles=titles_for(items))


def publish(url: str, run_id: str, shift: float = 0.0) -> dict:
    users, items = id_maps(N_USERS, 10)
    return publish_run(url, run_info(run_id), make_lists(N_USERS, shift=shift), users, items,
                       item_titles=titles_for(items))


def expected(shift: float = 0.0) -> list[tuple]:
    users, items = id_maps(N_USERS, 10)
    return expected_rows(make_lists(N_USERS, shift=shift), users, items, titles_for(items))


def collected(url: str, run_id: str) -> int:
    """Rows a collecting run holds so far, wherever its sink keeps them (0 once they are gone)."""
    engine = make_engine(url)
    try:
        sink = sink_for(engine)
        with engine.connect() as conn, conn.begin():
            if engine.dialect.name == "postgresql" and not sa.inspect(conn).has_table(partition_names(run_id)[0]):
                return 0
            return sink.collected_stats(conn, run_id)["n_rows"]
    finally:
        engine.dispose()


def runs_row(url: str, run_id: str) -> dict:
    engine = make_engine(url)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM runs WHERE id = :r"), {"r": run_id}).one()._asdict()
    engine.dispose()
    return row


def interactions(tmp_path) -> dict:
    """Train and test CSVs: 50 users with 15 training interactions each, and COLD users that
    appear in the test file only (so they get the popularity list)."""
    rng = np.random.default_rng(1)
    header = "user_id,item_id,rating,timestamp\n"
    train = [(u, i) for u in range(USERS - COLD) for i in rng.choice(80, 15, replace=False)]
    test = [(u, i) for u in range(USERS) for i in rng.choice(80, 3, replace=False)]
    for name, pairs in (("train.csv", train), ("test.csv", test)):
        lines = [f"{u},{i},{1 + (u + i) % 5},{k}\n" for k, (u, i) in enumerate(pairs)]
        (tmp_path / name).write_text(header + "".join(lines))
    return {"path": str(tmp_path / "train.csv"), "test_path": str(tmp_path / "test.csv"), "split": "given"}


def job_config(tmp_path, db_url, **changes):
    tree = json.loads(json.dumps(SMALL))
    tree["data"] = interactions(tmp_path)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    # Two epochs on 50 users rank below the popularity list: these tests are about sharding.
    tree.update(workdir=str(tmp_path / "work"), publish={"database_url": db_url, "gate": {"allow_regression": True}})
    return load_config(base=tree, env={})


def current_rows(url: str) -> list[tuple]:
    return query(url, "SELECT user_id, rank, item_id, score FROM current_recommendations ORDER BY user_id, rank")


# ---- the pipeline: sharded == unsharded -----------------------------------------------------------

def test_shard_users_are_interleaved_disjoint_and_balanced():
    parts = [shard_users(10, i, 3) for i in range(3)]
    assert [p.tolist() for p in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(10))
    with pytest.raises(ConfigError, match="0 to 2"):
        shard_users(10, 3, 3)


def test_a_sharded_run_publishes_exactly_what_an_unsharded_run_publishes(tmp_path, db_url):
    cfg = job_config(tmp_path, db_url)
    plain = run_job(cfg)
    rows = current_rows(db_url)
    assert len(rows) == USERS * 10

    prepared = run_job(cfg, run_id="sharded", shards=3)
    assert prepared["status"] == "collecting" and prepared["shards"] == 3
    assert status(db_url, "sharded") == "collecting" and current_rows(db_url) == rows
    loaded = [run_shard(cfg, "sharded", i) for i in (2, 0, 1)]
    assert sorted(s["users"] for s in loaded) == [18, 19, 19] and sum(s["rows"] for s in loaded) == len(rows)
    assert current_run(db_url)["id"] == plain["run_id"]  # nothing switches before finalize

    summary = finalize(cfg, "sharded")

    assert summary["status"] == "current" and summary["superseded"] == plain["run_id"]
    assert current_rows(db_url) == rows  # (user, rank, item, score), every one the same
    counts = ("n_users", "n_items", "n_items_recommended", "n_fallback_users", "n_rows")
    before, after = runs_row(db_url, plain["run_id"]), runs_row(db_url, "sharded")
    assert {k: after[k] for k in counts} == {k: before[k] for k in counts}
    assert after["n_fallback_users"] == COLD  # both the model's and the popularity lists were sharded
    stored = query(db_url, "SELECT COUNT(*) FROM similar_items WHERE run_id = 'sharded'")[0][0]
    assert summary["similar_items"] == stored > 0
    similar = "SELECT item_id, rank, similar_item_id, score FROM {} WHERE run_id = '{}' ORDER BY item_id, rank"
    assert query(db_url, similar.format("current_similar_items", "sharded")) == \
        query(db_url, similar.format("similar_items", plain["run_id"]))  # the same as the unsharded run's
    assert RunDir(tmp_path / "work" / "runs" / "sharded").read_json("run.json")["status"] == "published"


def test_a_missing_shard_fails_the_run_and_the_previous_run_stays_complete(tmp_path, db_url):
    cfg = job_config(tmp_path, db_url)
    plain = run_job(cfg)
    rows = current_rows(db_url)
    run_job(cfg, run_id="sharded", shards=3)
    run_shard(cfg, "sharded", 0)
    run_shard(cfg, "sharded", 2)
    assert collected(db_url, "sharded") > 0

    with pytest.raises(IncompleteRunError, match=r"shard\(s\) 1 of 3 never loaded"):
        finalize(cfg, "sharded")

    assert current_rows(db_url) == rows and current_run(db_url)["id"] == plain["run_id"]
    assert status(db_url, "sharded") == "failed" and "shard(s) 1 of 3" in runs_row(db_url, "sharded")["error"]
    assert collected(db_url, "sharded") == 0
    run_dir = RunDir(tmp_path / "work" / "runs" / "sharded")
    assert run_dir.read_json("run.json")["status"] == "failed"
    with pytest.raises(PublishError, match="no longer collecting"):  # a late shard is refused
        run_shard(cfg, "sharded", 1)

    # The same run id collects again (no retraining) and this time every shard arrives.
    again = run_job(cfg, run_id="sharded", shards=3)
    assert again["status"] == "collecting" and again["resumed"] is True
    assert [run_shard(cfg, "sharded", i)["loaded"] for i in range(3)] == [True, True, True]
    assert finalize(cfg, "sharded")["status"] == "current" and current_rows(db_url) == rows


def test_shard_and_finalize_take_the_runs_settings_and_refuse_other_ones(tmp_path, db_url, capsys):
    cfg = job_config(tmp_path, db_url)
    where = ["--workdir", str(tmp_path / "work"), "--database-url", db_url]
    work = where[1]
    run_job(cfg, run_id="r1", shards=2)
    for index in (0, 1):  # no --top, --epochs...: the run's saved settings
        assert main(["shard", *where, "--run-id", "r1", "--index", str(index)]) == 0
    capsys.readouterr()
    assert main(["shard", *where, "--run-id", "r1", "--index", "1"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["loaded"] is False  # already loaded
    assert main(["shard", "--workdir", work, "--run-id", "r1", "--index", "0", "--database-url", db_url,
                 "--config", str(_toml(tmp_path, "[search]\ntop = 5\n"))]) == 2
    assert "made with other settings" in capsys.readouterr().err
    assert main(["shard", "--workdir", work, "--database-url", db_url, "--run-id", "r1"]) == 2
    assert "no shard index" in capsys.readouterr().err
    assert main(["finalize", "--workdir", work, "--database-url", db_url, "--run-id", "r1", "--allow-regression"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["rows"] == USERS * 10


def _toml(tmp_path, text: str) -> Path:
    path = tmp_path / "other.toml"
    path.write_text(text)
    return path


def test_sharded_runs_search_locally(tmp_path, sqlite_url):
    with pytest.raises(ConfigError, match="local engine"):
        run_job(job_config(tmp_path, sqlite_url, **{"search.backend": "sagemaker"}), run_id="r1", shards=2)


# ---- the database: markers, retries, crashes, concurrency ------------------------------------------

def test_a_shard_loaded_twice_is_stored_once(db_url):
    open_collection(db_url, run_info("r1"), 3)
    first, second = load(db_url, "r1", 0), load(db_url, "r1", 0)
    assert first["loaded"] is True and first["rows"] == 20 * TOP
    assert second["loaded"] is False and second["rows"] == 0
    assert collected(db_url, "r1") == 20 * TOP
    load(db_url, "r1", 1)
    load(db_url, "r1", 2)
    assert finish(db_url, "r1")["rows"] == N_USERS * TOP
    assert view_rows(db_url) == expected()
    assert load(db_url, "r1", 2)["loaded"] is False  # a retry after finalize is still a no-op


def test_the_same_shard_loading_twice_at_once_is_stored_once(db_url):
    open_collection(db_url, run_info("r1"), 3)
    results, start = [], threading.Barrier(2, timeout=30)

    def attempt():
        start.wait()
        results.append(load(db_url, "r1", 1))

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r["loaded"] for r in results) == [False, True]
    assert collected(db_url, "r1") == 20 * TOP


# Loads shard 1 of run "r1" (20 users × 4 rows, 8 rows per chunk) and SIGKILLs itself when the
# loader asks for the 3rd chunk: the marker is set and 16 rows are in the open transaction.
CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    import pytest
    from test_publish_support import hook_chunks, id_maps, make_lists
    from batch.publish.collect import load_shard
    from batch.shards import shard_users

    hook_chunks(pytest.MonkeyPatch(), 2, lambda: os.kill(os.getpid(), signal.SIGKILL))
    users, items = id_maps(60, 10)
    lists = make_lists(60)
    load_shard({url!r}, "r1", 1, lists.take(np.isin(lists.user, shard_users(60, 1, 3))), users, items, chunk_rows=8)
    print("the load finished: the crash never happened")
""")


def test_a_shard_killed_mid_load_leaves_nothing_and_its_retry_completes_the_run(db_url):
    publish(db_url, "r0", shift=5)
    before = view_rows(db_url)
    open_collection(db_url, run_info("r1"), 3)
    load(db_url, "r1", 0)

    child = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(ROOT / "tests"), url=db_url)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert collected(db_url, "r1") == 20 * TOP  # shard 0's rows only: shard 1's died with its transaction
    assert query(db_url, "SELECT loaded_at FROM run_shards WHERE run_id = 'r1' AND shard = 1") == [(None,)]
    assert status(db_url, "r1") == "collecting" and view_rows(db_url) == before
    assert cleanup(db_url)["recovered"] == [] and status(db_url, "r1") == "collecting"  # not a stale load

    assert load(db_url, "r1", 1)["rows"] == 20 * TOP  # the retry
    load(db_url, "r1", 2)
    summary = finish(db_url, "r1")

    assert summary["rows"] == N_USERS * TOP and summary["users"] == N_USERS and summary["superseded"] == "r0"
    assert view_rows(db_url) == expected()
    assert runs_row(db_url, "r1")["n_rows"] == N_USERS * TOP


def test_shards_load_side_by_side(db_url, monkeypatch):
    """On PostgreSQL all three shards are inside their load at once (each waits at a barrier in
    its row source until the others are there too); SQLite lets them take turns."""
    open_collection(db_url, run_info("r1"), 3)
    side_by_side = db_url.startswith("postgresql")
    inside = threading.Barrier(3, timeout=30)
    if side_by_side:
        hook_chunks(monkeypatch, 0, inside.wait)
    results, errors = [], []

    def shard(index):
        try:
            results.append(load(db_url, "r1", index, shift=1))
        except BaseException as exc:  # surfaced below: a broken barrier means shards blocked each other
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sorted(r["shard"] for r in results) == [0, 1, 2]
    assert all(r["loaded"] for r in results)
    monkeypatch.undo()
    assert finish(db_url, "r1")["rows"] == N_USERS * TOP
    assert view_rows(db_url) == expected(shift=1)


def test_collecting_runs_are_left_alone_by_publish_and_cleanup(db_url):
    open_collection(db_url, run_info("r1"), 2)
    load(db_url, "r1", 0, shards=2)

    summary = publish(db_url, "r2", shift=3)  # an unsharded run published meanwhile
    assert summary["recovered"] == [] and status(db_url, "r1") == "collecting"
    result = cleanup(db_url)
    assert result["recovered"] == [] and result["expired"] == []
    mark_failed(db_url, "r1", "a stage failed")  # what a failing `topx run` does: finalize decides, not it
    assert status(db_url, "r1") == "collecting" and collected(db_url, "r1") == 30 * TOP

    load(db_url, "r1", 1, shards=2)
    assert finish(db_url, "r1")["superseded"] == "r2" and view_rows(db_url) == expected()
    open_collection(db_url, run_info("r3"), 2)
    with pytest.raises(PublishError, match="collecting shards"):  # not published whole by mistake
        publish(db_url, "r3")


def test_a_shard_mid_load_does_not_stop_a_publisher_or_cleanup(pg_url, monkeypatch):
    open_collection(pg_url, run_info("r1"), 2)
    inside, release = threading.Event(), threading.Event()
    hook_chunks(monkeypatch, 0, lambda: (inside.set(), release.wait(30)))
    loading = threading.Thread(target=load, args=(pg_url, "r1", 0, 2))
    loading.start()
    try:
        assert inside.wait(30)
        monkeypatch.undo()
        assert publish(pg_url, "r2")["recovered"] == []
        assert cleanup(pg_url)["expired"] == [] and status(pg_url, "r1") == "collecting"
    finally:
        release.set()
        loading.join(60)
    assert collected(pg_url, "r1") == 30 * TOP


def test_cleanup_fails_collecting_runs_after_the_timeout(db_url):
    publish(db_url, "r0")
    open_collection(db_url, run_info("old"), 2)
    load(db_url, "old", 0, shards=2)
    open_collection(db_url, run_info("new"), 2)
    backdate(db_url, "old", hours=25)

    result = cleanup(db_url)  # the default timeout: 24 hours

    assert result["expired"] == ["old"] and result["recovered"] == []
    assert status(db_url, "old") == "failed" and status(db_url, "new") == "collecting"
    assert "shard(s) 1 never loaded" in runs_row(db_url, "old")["error"]
    assert collected(db_url, "old") == 0 and view_rows(db_url) == expected()
    with pytest.raises(PublishError, match="no longer collecting"):
        load(db_url, "old", 1, shards=2)
    assert cleanup(db_url, collect_timeout_s=0)["expired"] == ["new"]


def backdate(url: str, run_id: str, *, hours: float) -> None:
    """Make the run look as if it began collecting ``hours`` ago."""
    engine = make_engine(url)
    with engine.begin() as conn:
        opened = conn.execute(sa.select(run_shards.c.opened_at).where(run_shards.c.run_id == run_id)).scalar()
        conn.execute(sa.update(run_shards).where(run_shards.c.run_id == run_id)
                     .values(opened_at=opened - timedelta(hours=hours)))
    engine.dispose()


def test_finalize_publishes_a_late_run_and_fails_abandoned_ones(db_url):
    open_collection(db_url, run_info("abandoned"), 3)
    open_collection(db_url, run_info("r1"), 3)
    for index in range(3):
        load(db_url, "r1", index)
    backdate(db_url, "abandoned", hours=30)
    backdate(db_url, "r1", hours=30)  # its shards took long, but all arrived

    summary = finish(db_url, "r1")

    assert summary["status"] == "current" and summary["expired"] == ["abandoned"]
    assert status(db_url, "abandoned") == "failed" and view_rows(db_url) == expected()


def test_finalize_refuses_what_is_not_collecting(db_url):
    publish(db_url, "r0")
    with pytest.raises(PublishError, match="not registered, not collecting"):
        finish(db_url, "nope")
    assert finish(db_url, "r0")["already_published"] is True
    open_collection(db_url, run_info("r1"), 2)
    with pytest.raises(ConfigError, match="already collecting 2 shards, not 3"):
        open_collection(db_url, run_info("r1"), 3)
    with pytest.raises(ConfigError, match="no shard 2"):
        load(db_url, "r1", 2, shards=3)


def test_run_shards_sql_is_the_models_ddl_and_serves_a_sharded_run(pg_url):
    """Regenerate with the command in the file's header when this fails."""
    text = (ROOT / "sql" / "run_shards.sql").read_text()
    assert " ".join(text.split()) == " ".join(shard_schema_sql().split())
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(text)
    engine.dispose()
    open_collection(pg_url, run_info("r1"), 1)  # the table the file builds is the one topx uses
    load(pg_url, "r1", 0, shards=1)
    assert finish(pg_url, "r1")["rows"] == N_USERS * TOP


def test_a_database_from_before_sharded_runs_is_told_how_to_allow_them(db_url):
    dialect = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    old = schema_sql(dialect).replace(", 'collecting', 'rejected')", ")")  # the runs table as it was created before
    assert "'collecting'" not in old
    engine = make_engine(db_url)
    with engine.begin() as conn:
        for statement in old.split(";\n"):
            lines = [line for line in statement.splitlines() if not line.startswith("--")]
            if "".join(lines).strip():
                conn.exec_driver_sql("\n".join(lines))
    with pytest.raises(PublishError, match="ck_runs_status does not allow 'collecting'") as caught:
        open_collection(db_url, run_info("r1"), 2)
    advice = str(caught.value).split("run: ", 1)[1].split(" (SQLite", 1)[0]
    if dialect == "postgresql":  # the advice works
        with engine.begin() as conn:
            conn.exec_driver_sql(advice)
        assert open_collection(db_url, run_info("r1"), 2)["status"] == "collecting"
    engine.dispose()
