"""The serving commands on a trained run directory, through the CLI: recommend (allow and deny
lists, seen items, CSV), score, evaluate, and publish to SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa

from batch.cli import main
from batch.publish import make_engine
from batch.rundir import RunDir

TOP = 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    """A run directory trained by `topx train` on a small synthetic data set (implicit mode)."""
    root = tmp_path_factory.mktemp("serve")
    assert main(["data", "synth", "--out", str(root / "synth"), "--users", "60", "--items", "90",
                 "--interactions", "2400", "--seed", "2"]) == 0
    assert main(["train", "--data", str(root / "synth"), "--out", str(root / "run"), "--epochs", "3",
                 "--num-factors", "8"]) == 0
    return str(root / "run")


def ok(topx, *argv: str) -> dict:
    """The summary of a `topx` command that must succeed."""
    code, summary, err = topx(*argv)
    assert code == 0, err
    return summary


def recommended(topx, run_dir: str, tmp_path, *options: str) -> list[dict]:
    """The lists `topx recommend --out` writes, as CSV rows (values as text)."""
    out = tmp_path / "lists.csv"
    summary = ok(topx, "recommend", "--run", run_dir, "--top", str(TOP), "--out", str(out), *options)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert summary["rows"] == len(rows) and summary["top"] == TOP
    return rows


def seen_pairs(run_dir: str) -> set[tuple[str, str]]:
    data = RunDir(run_dir).load_dataset()
    every = data.all_interactions()
    return set(zip(data.users.ids[every.user].astype(str), data.items.ids[every.item].astype(str), strict=True))


def write_ids(path, ids) -> str:
    path.write_text("".join(f"{i}\n" for i in ids))
    return str(path)


def test_recommend_lists_are_ranked_unseen_and_match_score(run_dir, tmp_path, topx):
    rows = recommended(topx, run_dir, tmp_path)
    assert not {(r["user_id"], r["item_id"]) for r in rows} & seen_pairs(run_dir)
    by_user: dict[str, list[dict]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"], []).append(row)
    assert len(by_user) == 60
    for user_rows in by_user.values():
        assert [int(r["rank"]) for r in user_rows] == list(range(1, TOP + 1))
        scores = [float(r["score"]) for r in user_rows]
        assert scores == sorted(scores, reverse=True)
    first = rows[0]
    scored = ok(topx, "score", "--run", run_dir, "--user", first["user_id"], "--item", first["item_id"])
    [pair] = scored["scores"]
    assert pair["score"] == pytest.approx(float(first["score"]), rel=1e-4, abs=1e-5)
    assert pair["probability"] == pytest.approx(float(first["probability"]), rel=1e-4, abs=1e-5)


def test_recommend_honours_deny_and_allow_lists(run_dir, tmp_path, topx):
    plain = recommended(topx, run_dir, tmp_path)
    denied = sorted({r["item_id"] for r in plain if r["rank"] == "1"})
    rows = recommended(topx, run_dir, tmp_path, "--deny", write_ids(tmp_path / "deny.txt", denied))
    assert rows and not {r["item_id"] for r in rows} & set(denied)
    allowed = [str(i) for i in range(1, 91, 9)]  # 10 items: users who saw some get fewer than TOP
    rows = recommended(topx, run_dir, tmp_path, "--allow", write_ids(tmp_path / "allow.txt", allowed))
    assert {r["item_id"] for r in rows} <= set(allowed)
    counts = np.unique([r["user_id"] for r in rows], return_counts=True)[1]
    assert counts.max() == TOP and not {(r["user_id"], r["item_id"]) for r in rows} & seen_pairs(run_dir)


def test_recommend_include_seen_lists_seen_items(run_dir, tmp_path, topx):
    rows = recommended(topx, run_dir, tmp_path, "--include-seen")
    assert {(r["user_id"], r["item_id"]) for r in rows} & seen_pairs(run_dir)


def test_evaluate_reports_the_model_next_to_popularity(run_dir, topx):
    summary = ok(topx, "evaluate", "--run", run_dir, "--k", "5")
    stored = RunDir(run_dir).read_json("metrics.json")
    text = json.dumps(summary)
    for name in ("precision@5", "recall@5", "ndcg@5", "map@5", "hit_rate@5", "precision@1", "ndcg@50"):
        assert name in json.dumps(summary["model"]) and name in json.dumps(stored["evaluate"]["popularity"])
    for name in ("catalogue_coverage@5", "gini@5", "novelty@5", "ild@5", "top1pct_share@5"):
        assert name in json.dumps(summary["beyond"]["model"]) and name in json.dumps(stored["evaluate"]["beyond"])
    assert "popularity" in text


def test_publish_puts_the_run_directorys_lists_in_the_database(run_dir, tmp_path, topx, db_url):
    denied = ["1", "2", "3"]
    rows = recommended(topx, run_dir, tmp_path, "--deny", write_ids(tmp_path / "deny.txt", denied))
    summary = ok(topx, "publish", "--run", run_dir, "--database-url", db_url, "--run-id", "cli-1",
                 "--allow-regression")  # 3 epochs on 60 users
    assert summary["rows"] == len(rows)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT user_id, rank, item_id FROM current_recommendations")).fetchall()
        run, counts, started = conn.execute(sa.text("SELECT status, counts, started_at FROM runs "
                                                    "WHERE id = 'cli-1'")).one()
    engine.dispose()
    assert run == "current"
    # the one RunInfo builder: the same counts as topx run records, started when the model was written
    counts = json.loads(counts) if isinstance(counts, str) else counts
    data = RunDir(run_dir).load_dataset()
    assert counts == {"users": data.n_users, "items": data.n_items, "train_interactions": len(data.train),
                      "test_interactions": len(data.test)}
    started = started if isinstance(started, datetime) else datetime.fromisoformat(started)
    model_written = datetime.fromtimestamp(RunDir(run_dir).model.stat().st_mtime, UTC)
    assert abs((started.replace(tzinfo=UTC) - model_written).total_seconds()) < 1
    assert sorted(stored) == sorted((r["user_id"], int(r["rank"]), r["item_id"]) for r in rows)
    assert not {item for _, _, item in stored} & set(denied)


def test_a_second_publisher_exits_75_and_publishes_nothing(run_dir, topx, db_url):
    from batch.publish import current_run
    from batch.publish.base import sink_for

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn, sink_for(engine).locked(conn):
            code, summary, err = topx("publish", "--run", run_dir, "--database-url", db_url, "--run-id", "cli-2")
    finally:
        engine.dispose()
    assert (code, summary) == (75, None)
    assert "another process is publishing" in err and "temporary failure" in err
    assert current_run(db_url) is None
