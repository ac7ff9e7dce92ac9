"""``topx refresh --users FILE``: the listed users' lists recomputed with the current run's model
from their current activity, every other user's rows carried over byte for byte, published as a
new run through the publish gate, atomically, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from batch.data.interactions import Interactions
from batch.features.design import build_design
from batch.publish import make_engine
from batch.rundir import RunDir

TOP = 5
ROOT = Path(__file__).resolve().parents[1]
SQL = ROOT / "sql"
ROW = "user_id, rank, item_id, score, probability, source"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> dict:
    """A run of `topx run` on a small synthetic data set: its data and its run directory. The
    data set is too small for the model to beat the popularity list, so publishing needs
    --allow-regression (the gate test relies on that too)."""
    from batch.cli import main

    root = tmp_path_factory.mktemp("refresh")
    assert main(["data", "synth", "--out", str(root / "synth"), "--users", "60", "--items", "90",
                 "--interactions", "2400", "--seed", "5"]) == 0
    assert main(["run", "--data", str(root / "synth"), "--workdir", str(root / "work"), "--epochs", "3",
                 "--num-factors", "8", "--top", str(TOP), "--allow-regression"]) == 0
    (run_dir,) = (root / "work" / "runs").iterdir()
    return {"data": root / "synth", "run": run_dir}


def ok(topx, *argv: str) -> dict:
    code, summary, err = topx(*argv)
    assert code == 0, err
    return summary


def query(url: str, sql: str, **params) -> list[tuple]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def stored_json(url: str, sql: str, **params) -> dict:
    """A JSON column's value (SQLite hands back text, PostgreSQL's jsonb a dict)."""
    value = query(url, sql, **params)[0][0]
    return json.loads(value) if isinstance(value, str) else value


def rows_of(url: str, run_id: str, users: list[str] | None = None, keep: bool = True) -> list[tuple]:
    """One run's rows in key order: of ``users`` (``keep``) or of every other user."""
    found = query(url, f"SELECT {ROW} FROM recommendations WHERE run_id = :run ORDER BY user_id, rank", run=run_id)
    return found if users is None else [row for row in found if (row[0] in users) == keep]


def published(topx, seeded, url: str) -> str:
    """Publish the seeded run directory to ``url``; its run id."""
    return ok(topx, "publish", "--run", str(seeded["run"]), "--database-url", url, "--allow-regression")["run_id"]


def new_activity(seeded, tmp_path, user: int, items: list[int], new_user: int, new_items: list[int]) -> Path:
    """A copy of the data set where ``user`` and the new user ``new_user`` interacted with more items,
    and the new user 8889 signed up (features, no interactions)."""
    data = tmp_path / "data"
    shutil.copytree(seeded["data"], data)
    with open(data / "ua.base", "a") as f:
        f.writelines(f"{u}\t{i}\t5\t999999999\n" for u, batch in ((user, items), (new_user, new_items)) for i in batch)
    with open(data / "u.user", "a") as f:
        f.write("8889|30|F|writer|12345\n")  # a new sign-up with features and no interactions yet
    return data


def model_list(run: RunDir, user: int, more: list[int], top: int) -> tuple[list[str], np.ndarray]:
    """The model's top list for ``user`` with ``more`` items added to its history, computed the
    way training lays a user out (batch.features.design) and scored by the FM itself."""
    dataset, layout, model = run.load_dataset(), run.load_layout(), run.load_model()
    u = int(dataset.users.index([user])[0])
    extra = dataset.items.index(more)
    added = Interactions(np.full(len(extra), u, np.int32), extra.astype(np.int32), np.full(len(extra), 5, np.float32),
                         np.full(len(extra), 999999999, np.int64))  # as new_activity writes them
    trained_u = np.zeros(dataset.n_users, bool)
    trained_u[dataset.train.user] = True
    trained_i = np.zeros(dataset.n_items, bool)
    trained_i[dataset.train.item] = True
    now = dataclasses.replace(dataset, train=dataset.all_interactions().concat(added), test=Interactions.empty())
    design = build_design(now, use_features=bool(layout.user_feature_columns or layout.item_feature_columns),
                          history=layout.user_history, user_ids=trained_u, item_ids=trained_i)
    seen = set(now.train.item[now.train.user == u].tolist())
    items = np.array([i for i in range(dataset.n_items) if i not in seen])
    scores = model.decision(design.pair_rows(np.full(len(items), u), items)) + ease_change(run, u, now.train, items)
    best = np.argsort(-scores, kind="stable")[:top]
    return [str(dataset.items.ids[i]) for i in items[best]], scores[best]


def ease_change(run: RunDir, u: int, history: Interactions, items: np.ndarray) -> np.ndarray:
    """What recomputing the item-item member's part from user u's whole ``history`` adds to the
    FM's scores of ``items``: β × EASE's score by its definition (B from (XᵀX + γZᵀZ + gFᵀF + λI)⁻¹
    on the run's rating-weighted training matrix X, session rows Z and, where the run's member
    fitted with them, item feature rows F, scored on the user's
    recency-weighted profile, with the recency its training chose) less the part the model holds
    on the user's id column (the training profile's). 0 without the member."""
    from test_item_item import every_session

    from batch.config import load_config
    from batch.features.design import build_design
    from batch.train.item_item import feature_rows, profiles, rating_weights, session_rows

    engine = run.read_json("metrics.json")["train"]["engine"]
    rank = engine.get("item_item_factors", 0)
    if not rank:
        return np.zeros(len(items))
    settings = load_config(env={}, base=run.read_json("config.json")).train.ials
    dataset, vectors = run.load_dataset(), np.load(run.file("vectors.npz"))
    t = dataset.train
    c = rating_weights(t.user, t.rating, dataset.n_users, settings.item_item_rating_exponent)
    X = profiles(t.user, t.item, t.timestamp, dataset.n_users, dataset.n_items, 0.0, 1.0, c).toarray()
    Z = session_rows(t.user, t.item, t.timestamp, dataset.n_users, dataset.n_items, settings.item_item_session_gap, c)
    assert len(Z), "the fixture's training data has sessions"
    sessions = every_session(Z, X)
    G = X.T @ X + settings.item_item_sessions * sessions.T @ sessions
    if engine.get("item_item_feature_rows"):
        F = feature_rows(build_design(dataset)).toarray()
        assert len(F) == engine["item_item_feature_rows"]
        G += settings.item_item_features * F.T @ F
    P = np.linalg.inv(G + settings.item_item_l2 * np.eye(dataset.n_items))
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0)
    mine = history.user == u
    one = np.zeros(int(mine.sum()), np.int64)
    w = profiles(one, history.item[mine], history.timestamp[mine], 1, dataset.n_items, engine["item_item_recency"],
                 settings.item_item_half_life,
                 rating_weights(one, history.rating[mine], 1, settings.item_item_rating_exponent)).toarray()[0]
    k = vectors["items"].shape[1] - 1
    frozen = vectors["items"][items, k - rank:k].astype(np.float64) @ vectors["users"][u, k - rank:k]
    return settings.item_item * (w @ B[:, items]) - frozen


def test_refresh_recomputes_the_listed_users_and_carries_every_other_user_over(seeded, tmp_path, topx, db_url):
    source = published(topx, seeded, db_url)
    run = RunDir(seeded["run"])
    before = {row[0]: row for row in rows_of(db_url, source) if row[1] == 1}
    top_two = [int(row[2]) for row in rows_of(db_url, source, ["1"]) if row[1] <= 2]
    data = new_activity(seeded, tmp_path, 1, top_two, 7777, [45, 38])
    users = tmp_path / "users.txt"
    users.write_text("user_id\n1\n7777\n8888\n8889\n3\n1\n")
    summary = ok(topx, "refresh", "--users", str(users), "--data", str(data), "--database-url", db_url,
                 "--run", str(seeded["run"]), "--allow-regression")
    new = summary["run_id"]
    report = summary["refresh"]
    assert summary["source_run"] == source and summary["superseded"] == source
    assert report["users"] == 4 and report["duplicates"] == 1
    # 8888 is in neither the run's data nor the data source: a typo, skipped and named.
    assert report["not_in_data"] == 1 and report["not_in_data_ids"] == ["8888"]
    assert (report["known_to_run"], report["unknown_to_run"]) == (2, 2)
    assert report["vectors"] == {"trained": 2, "history_or_features": 2, "popularity": 0}
    assert report["users_with_new_activity"] == 2 and report["new_interactions"] == 4
    # The item-item member's part is recomputed from the current profile of every rebuilt vector.
    assert report["item_item"] == {"factors": 90, "recomputed": 3}  # min(60 users + sessions, 90 items)

    refreshed = ["1", "3", "7777", "8888", "8889"]  # 8888 keeps the run's rows: none
    # Every other user's rows, byte for byte.
    assert rows_of(db_url, new, refreshed, keep=False) == rows_of(db_url, source, refreshed, keep=False)
    assert len(rows_of(db_url, new, refreshed, keep=False)) == (len(before) - 2) * TOP
    # User 1's list is the model's for its history with the two new items, which it no longer gets.
    mine = rows_of(db_url, new, ["1"])
    expected, scores = model_list(run, 1, top_two, TOP)
    assert [row[2] for row in mine] == expected
    np.testing.assert_allclose([row[3] for row in mine], scores, rtol=1e-4, atol=1e-5)
    assert not {str(i) for i in top_two} & {row[2] for row in mine}
    # The new user with history gets a model list without its items; the one without anything, popularity.
    newcomer = rows_of(db_url, new, ["7777"])
    assert len(newcomer) == TOP and {row[5] for row in newcomer} == {0} and not {"45", "38"} & {r[2] for r in newcomer}
    assert rows_of(db_url, new, ["8888"]) == []
    # The sign-up with features only: the model's list from its features (its scores, not popularity).
    signed_up = rows_of(db_url, new, ["8889"])
    assert len(signed_up) == TOP and {row[5] for row in signed_up} == {0}
    assert [row[3] for row in signed_up] == sorted((row[3] for row in signed_up), reverse=True)
    # User 3 (no new activity) keeps the run's vector: the run's list, row for row.
    assert report["runs_vectors"] == 1 and report["users_with_changed_features"] == 0
    assert rows_of(db_url, new, ["3"]) == rows_of(db_url, source, ["3"])

    # What readers see: the views, the dashboards' SQL, the runs table.
    status = dict(query(db_url, "SELECT id, status FROM runs"))
    assert status[new] == "current" and status[source] == "superseded"
    assert query(db_url, "SELECT item_id FROM current_recommendations WHERE user_id = '1' ORDER BY rank") == \
        [(item,) for item in expected]
    dashboard = (SQL / "dashboard_user_list.sql").read_text()
    assert [row[1] for row in query(db_url, dashboard, user_id="7777")] == [row[2] for row in newcomer]
    carried = query(db_url, dashboard, user_id="2")
    assert [(r[0], r[1], r[3], r[4], r[5]) for r in carried] == [row[1:] for row in rows_of(db_url, source, ["2"])]
    assert {r[6] for r in carried} == {new}
    runs = {row[0]: row for row in query(db_url, (SQL / "dashboard_runs.sql").read_text())}
    assert runs[new][-2:] == (source, 4) and runs[source][-2:] == (None, None)
    n_rows, n_users = query(db_url, "SELECT n_rows, n_users FROM runs WHERE id = :r", r=new)[0]
    assert (n_rows, n_users) == (summary["rows"], 62) and n_rows == len(rows_of(db_url, new))
    # Similar items, audiences and item attributes are carried over.
    for table, key in (("similar_items", "item_id, rank"), ("item_attributes", "item_id, name"),
                       ("audiences", "item_id, rank")):
        sql = f"SELECT * FROM {table} WHERE run_id = :r ORDER BY {key}"
        assert [row[1:] for row in query(db_url, sql, r=new)] == [row[1:] for row in query(db_url, sql, r=source)]
    assert summary["similar_items"] == len(query(db_url, "SELECT 1 FROM current_similar_items")) > 0
    listed = ok(topx, "runs", "--database-url", db_url, "--json")["runs"]
    assert [(r["id"], r["refreshed_from"]) for r in listed][:2] == [(new, source), (source, None)]


def test_a_refresh_of_a_refresh_carries_the_refreshed_rows(seeded, tmp_path, topx, sqlite_url):
    source = published(topx, seeded, sqlite_url)
    first = tmp_path / "first.txt"
    first.write_text("9001\n")
    data = tmp_path / "data"
    shutil.copytree(seeded["data"], data)
    with open(data / "u.user", "a") as f:
        f.write("9001|30|F|writer|12345\n")  # a new sign-up
    one = ok(topx, "refresh", "--users", str(first), "--database-url", sqlite_url, "--run", str(seeded["run"]),
             "--allow-regression", "--data", str(data))["run_id"]
    second = tmp_path / "second.txt"
    second.write_text("5\n")
    two = ok(topx, "refresh", "--users", str(second), "--database-url", sqlite_url, "--allow-regression",
             "--workdir", str(seeded["run"].parents[1]))
    assert two["source_run"] == one and two["users"] == 61
    assert rows_of(sqlite_url, two["run_id"], ["9001"]) == rows_of(sqlite_url, one, ["9001"])
    assert rows_of(sqlite_url, two["run_id"], ["5", "9001"], keep=False) == \
        rows_of(sqlite_url, source, ["5", "9001"], keep=False)


@pytest.mark.parametrize("text, line, what", [
    ("user_id\n1\nnot-a-user\n", 3, "not an integer"),
    ("4\n\n5,6\n", 3, "one user id a line"),
    ("# nobody\n", None, "names no user id"),
])
def test_a_bad_users_file_is_a_named_error_with_its_line(seeded, tmp_path, topx, sqlite_url, text, line, what):
    source = published(topx, seeded, sqlite_url)
    users = tmp_path / "users.txt"
    users.write_text(text)
    code, _, err = topx("refresh", "--users", str(users), "--database-url", sqlite_url, "--run", str(seeded["run"]))
    assert code == 2 and str(users) in err and what in err
    assert line is None or f"line {line}" in err
    assert query(sqlite_url, "SELECT id FROM runs WHERE status = 'current'") == [(source,)]


def test_refresh_without_a_current_run_exits_2(seeded, tmp_path, topx, sqlite_url):
    users = tmp_path / "users.txt"
    users.write_text("1\n")
    code, _, err = topx("refresh", "--users", str(users), "--database-url", sqlite_url)
    assert code == 2 and "no current run" in err
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # a refresh never creates a database


def test_refresh_refuses_other_candidate_rules_than_the_runs(seeded, tmp_path, topx, sqlite_url):
    source = published(topx, seeded, sqlite_url)
    users, deny = tmp_path / "users.txt", tmp_path / "deny.txt"
    users.write_text("1\n")
    deny.write_text("45\n")
    code, _, err = topx("refresh", "--users", str(users), "--database-url", sqlite_url, "--run", str(seeded["run"]),
                        "--config", str(_job(tmp_path, f'[search]\ndeny = "{deny}"\n')))
    assert code == 2 and "candidate rules" in err
    assert query(sqlite_url, "SELECT id FROM runs WHERE status = 'current'") == [(source,)]


def _job(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_the_publish_gate_refuses_a_refresh_as_it_would_the_run(seeded, tmp_path, topx, db_url):
    """The refresh carries its source run's metrics: a run published over the gate's objection
    (--allow-regression) needs the override again; without it the refresh is rejected, exit 3."""
    source = published(topx, seeded, db_url)
    metrics = stored_json(db_url, "SELECT metrics FROM runs WHERE id = :r", r=source)
    assert metrics["evaluate"]["model"]["ndcg@10"] < metrics["evaluate"]["popularity"]["ndcg@10"]
    users = tmp_path / "users.txt"
    users.write_text("1\n")
    before = rows_of(db_url, source)
    code, _, err = topx("refresh", "--users", str(users), "--database-url", db_url, "--run", str(seeded["run"]),
                        "--run-id", "refresh-1")
    assert code == 3 and "below the popularity list" in err
    status = dict(query(db_url, "SELECT id, status FROM runs"))
    assert status == {source: "current", "refresh-1": "rejected"}
    assert rows_of(db_url, source) == before and rows_of(db_url, "refresh-1") == []
    gate = stored_json(db_url, "SELECT gate FROM runs WHERE id = 'refresh-1'")
    assert gate["passed"] is False and gate["current_run"] == source


def test_a_refresh_that_fails_mid_publish_leaves_the_old_run_current(seeded, tmp_path, topx, db_url, monkeypatch):
    from batch.publish import registry

    source = published(topx, seeded, db_url)
    before = query(db_url, f"SELECT {ROW} FROM current_recommendations ORDER BY user_id, rank")
    similar = query(db_url, "SELECT * FROM current_similar_items ORDER BY item_id, rank")

    def broken(*args, **kwargs):
        raise RuntimeError("the connection dropped during the switch")

    monkeypatch.setattr(registry, "switch", broken)
    users = tmp_path / "users.txt"
    users.write_text("1\n7777\n")
    code, _, err = topx("refresh", "--users", str(users), "--database-url", db_url, "--run", str(seeded["run"]),
                        "--run-id", "refresh-2", "--allow-regression")
    assert code == 1 and "the previous run stays current" in err
    assert dict(query(db_url, "SELECT id, status FROM runs")) == {source: "current", "refresh-2": "failed"}
    assert query(db_url, f"SELECT {ROW} FROM current_recommendations ORDER BY user_id, rank") == before
    assert query(db_url, "SELECT * FROM current_similar_items ORDER BY item_id, rank") == similar
    for table in ("recommendations", "similar_items", "item_attributes"):
        assert query(db_url, f"SELECT COUNT(*) FROM {table} WHERE run_id = 'refresh-2'") == [(0,)]


def test_runs_table_names_the_source_of_a_refresh_run():
    from datetime import UTC, datetime

    from batch.cli.publish import runs_table

    runs = [{"id": "r2", "status": "current", "n_rows": 10, "counts": {"refresh": {"source_run": "r1"}}},
            {"id": "r1", "status": "superseded", "n_rows": 10}]
    lines = runs_table(runs, now=datetime(2026, 1, 1, tzinfo=UTC)).splitlines()
    assert lines[0].split()[-2:] == ["REFRESH", "OF"]
    assert lines[1].split()[-1] == "r1" and lines[2].split()[-1] == "-"


# Runs `topx refresh` and SIGKILLs itself once the new run's rows are loaded (and, on PostgreSQL,
# attached as its partition), inside the switch transaction, before it commits.
KILLED = textwrap.dedent("""
    import os, signal, sys
    from batch.publish import keyed
    from batch.cli import main

    keyed.carry = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    main(sys.argv[1:])
    print("the refresh finished: the crash never happened")
""")


def test_a_refresh_killed_mid_publish_leaves_the_old_run_current(seeded, tmp_path, topx, db_url):
    source = published(topx, seeded, db_url)
    before = query(db_url, f"SELECT {ROW} FROM current_recommendations ORDER BY user_id, rank")
    users = tmp_path / "users.txt"
    users.write_text("1\n7777\n")
    argv = ["refresh", "--users", str(users), "--database-url", db_url, "--run", str(seeded["run"]),
            "--run-id", "refresh-3", "--allow-regression"]
    child = subprocess.run([sys.executable, "-c", KILLED, *argv], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)

    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert dict(query(db_url, "SELECT id, status FROM runs")) == {source: "current", "refresh-3": "loading"}
    assert query(db_url, f"SELECT {ROW} FROM current_recommendations ORDER BY user_id, rank") == before
    assert rows_of(db_url, "refresh-3") == []
    assert ok(topx, "cleanup", "--database-url", db_url)["recovered"] == ["refresh-3"]
    # Run again, it publishes whole.
    summary = ok(topx, *argv)
    assert summary["superseded"] == source and summary["rows"] == len(rows_of(db_url, "refresh-3"))
    assert rows_of(db_url, "refresh-3", ["1", "7777"], keep=False) == rows_of(db_url, source, ["1", "7777"], keep=False)


def test_publish_refresh_merges_text_ids_in_key_order_and_needs_its_source_current(db_url):
    """The library call alone, with text ids: the refreshed users' rows replace theirs, a new user's
    are added, the rest are the source run's; a source that is no longer current is refused (75)."""
    from test_publish_support import id_maps, make_lists, run_info, titles_for

    from batch.data.interactions import IdMap
    from batch.publish import publish_run
    from batch.publish.refresh import SourceChangedError, publish_refresh
    from batch.transient import exit_code

    users, items = id_maps(text=True)
    publish_run(db_url, run_info("r1"), make_lists(), users, items, item_titles=titles_for(items))
    mine = IdMap(np.array(sorted([str(users.ids[2]), "usér-new"])))
    summary = publish_refresh(db_url, run_info("r2"), "r1", make_lists(2, shift=5), mine, items)
    assert (summary["rows"], summary["users"], summary["refreshed_rows"]) == (28, 7, 8)
    kept = [str(u) for u in users.ids if u != users.ids[2]]
    assert rows_of(db_url, "r2", kept) == rows_of(db_url, "r1", kept)
    stored = [user for (user,) in query(db_url, "SELECT user_id FROM recommendations WHERE run_id = 'r2'")]
    assert stored == sorted(stored)  # as stored (PostgreSQL: a partition's heap order, which BRIN relies on)
    assert {row[0] for row in rows_of(db_url, "r2", list(mine.ids))} == set(mine.ids.tolist())
    assert query(db_url, "SELECT COUNT(*) FROM current_recommendations") == [(28,)]
    with pytest.raises(SourceChangedError) as refused:
        publish_refresh(db_url, run_info("r3"), "r1", make_lists(2), mine, items)
    assert exit_code(refused.value) == 75 and "run r2 is current" in str(refused.value)
    assert dict(query(db_url, "SELECT id, status FROM runs")) == {"r1": "superseded", "r2": "current"}


def test_with_free_user_vectors_new_activity_only_leaves_the_list(seeded, tmp_path, topx, sqlite_url):
    """Without the history block (and without the item-item member, whose part new activity
    moves) a trained user's vector is its own id column, which new interactions cannot move: the
    refreshed list is the old ranking without the new items."""
    from batch.cli import main

    job = _job(tmp_path, "[train.ials]\nhistory = false\nitem_item = 0.0\n")
    work = tmp_path / "work"
    assert main(["run", "--data", str(seeded["data"]), "--workdir", str(work), "--config", str(job), "--epochs", "3",
                 "--num-factors", "8", "--top", str(TOP), "--allow-regression", "--database-url", sqlite_url]) == 0
    assert not RunDir(next((work / "runs").iterdir())).load_layout().user_history
    source = query(sqlite_url, "SELECT id FROM runs WHERE status = 'current'")[0][0]
    old = rows_of(sqlite_url, source, ["1"])
    data = new_activity(seeded, tmp_path, 1, [int(old[0][2]), int(old[1][2])], 7777, [45])
    users = tmp_path / "users.txt"
    users.write_text("1\n7777\n")
    summary = ok(topx, "refresh", "--users", str(users), "--data", str(data), "--database-url", sqlite_url,
                 "--workdir", str(work), "--config", str(job), "--allow-regression")
    # No history block and no features for 7777: the popularity list.
    assert summary["refresh"]["vectors"] == {"trained": 1, "history_or_features": 0, "popularity": 1}
    new = rows_of(sqlite_url, summary["run_id"], ["1"])
    assert [row[2:4] for row in new[:TOP - 2]] == [row[2:4] for row in old[2:]]
    assert {row[5] for row in rows_of(sqlite_url, summary["run_id"], ["7777"])} == {1}


def test_a_refresh_of_a_run_whose_member_fitted_item_features_scores_as_its_fm(seeded, tmp_path, topx, sqlite_url):
    """The member's item rows hold what the item features added to its fit: a refreshed user's
    EASE part, recomputed from the current profile, is EASE's with the features in the Gram
    matrix (model_list's reference), with nothing of the features stored apart."""
    from batch.cli import main

    job = _job(tmp_path, "[train.ials]\nitem_item_choose_features = false\n")
    work = tmp_path / "work"
    assert main(["run", "--data", str(seeded["data"]), "--workdir", str(work), "--config", str(job), "--epochs", "3",
                 "--num-factors", "8", "--top", str(TOP), "--allow-regression", "--database-url", sqlite_url]) == 0
    run = RunDir(next((work / "runs").iterdir()))
    assert run.read_json("metrics.json")["train"]["engine"]["item_item_feature_rows"] > 0  # the synthetic genres
    source = query(sqlite_url, "SELECT id FROM runs WHERE status = 'current'")[0][0]
    top_two = [int(row[2]) for row in rows_of(sqlite_url, source, ["1"]) if row[1] <= 2]
    data = new_activity(seeded, tmp_path, 1, top_two, 7777, [45])
    users = tmp_path / "users.txt"
    users.write_text("1\n")
    summary = ok(topx, "refresh", "--users", str(users), "--data", str(data), "--database-url", sqlite_url,
                 "--workdir", str(work), "--config", str(job), "--allow-regression")
    assert summary["refresh"]["item_item"]["recomputed"] == 1
    mine = rows_of(sqlite_url, summary["run_id"], ["1"])
    expected, scores = model_list(run, 1, top_two, TOP)
    assert [row[2] for row in mine] == expected
    np.testing.assert_allclose([row[3] for row in mine], scores, rtol=1e-4, atol=1e-5)


def test_a_run_that_re_ranks_has_its_refreshed_lists_re_ranked(seeded, tmp_path, topx, sqlite_url):
    """The run's NeuMF re-ranks the refreshed users it knows, under the run's user indices; a new
    user keeps the FM's list, as users NeuMF did not train on do in the run."""
    from batch.cli import main
    from batch.config import load_config
    from batch.rerank.ncf import predict
    from batch.rerank.stage import reranker_for

    work = tmp_path / "work"
    job = _job(tmp_path, "[rerank.ncf]\nepochs = 1\n")
    assert main(["run", "--data", str(seeded["data"]), "--workdir", str(work), "--epochs", "3", "--num-factors", "8",
                 "--top", str(TOP), "--rerank", "ncf", "--candidates", "10", "--allow-regression",
                 "--database-url", sqlite_url, "--config", str(job)]) == 0
    source = query(sqlite_url, "SELECT id FROM runs WHERE status = 'current'")[0][0]
    users = tmp_path / "users.txt"
    users.write_text("1\n7777\n")
    data = new_activity(seeded, tmp_path, 1, [], 7777, [45, 38])
    summary = ok(topx, "refresh", "--users", str(users), "--data", str(data), "--database-url", sqlite_url,
                 "--workdir", str(work), "--allow-regression", "--config", str(job))
    assert summary["refresh"]["reranked_users"] == 1
    mine = rows_of(sqlite_url, summary["run_id"], ["1"])
    assert len(mine) == TOP and {row[5] for row in mine} == {2}
    run = RunDir(work / "runs" / source)
    dataset = run.load_dataset()
    model, _, _ = reranker_for(load_config(env={}, base=run.read_json("config.json")), run, dataset)
    u = dataset.users.index([1])
    expected = predict(model, np.repeat(u, TOP), dataset.items.index([int(row[2]) for row in mine]))
    np.testing.assert_allclose([row[3] for row in mine], expected, rtol=1e-5)
    assert {row[5] for row in rows_of(sqlite_url, summary["run_id"], ["7777"])} == {0}
    assert rows_of(sqlite_url, summary["run_id"], ["1", "7777"], keep=False) == \
        rows_of(sqlite_url, source, ["1", "7777"], keep=False)


def test_an_s3_work_directory_gives_another_machine_the_runs_model(seeded, tmp_path, topx, monkeypatch):
    """With an s3:// work directory the refresh pulls the current run's directory into its own
    scratch; a refresh of a refresh finds the run its model came from."""
    import boto3
    from moto import mock_aws

    from batch import storage
    from batch.config import load_config
    from batch.pipeline import run_job

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="topx-work")
        storage.set_s3_client(s3)
        try:
            run_job(load_config(env={}, base={
                "workdir": "s3://topx-work/prod", "scratch": str(tmp_path / "machine-a"),
                "data": {"path": str(seeded["data"])}, "search": {"top": TOP},
                "train": {"hyperparameters": {"epochs": 2, "num_factors": 8}},
                "publish": {"database_url": db, "gate": {"allow_regression": True}}}))
            source = query(db, "SELECT id FROM runs WHERE status = 'current'")[0][0]
            monkeypatch.setenv("TOPX_SCRATCH", str(tmp_path / "machine-b"))
            users = tmp_path / "users.txt"
            users.write_text("1\n")
            argv = ("refresh", "--users", str(users), "--workdir", "s3://topx-work/prod", "--database-url", db,
                    "--allow-regression")
            first = ok(topx, *argv)
            assert first["refresh"]["model_run"] == source
            assert (tmp_path / "machine-b" / "runs" / source / "model.tar.gz").exists()
            shutil.rmtree(tmp_path / "machine-a")  # the machine that trained is gone
            second = ok(topx, *argv)
            assert second["source_run"] == first["run_id"] and second["refresh"]["model_run"] == source
            assert rows_of(db, second["run_id"]) == rows_of(db, first["run_id"])  # the same list again
        finally:
            storage.set_s3_client(None)


def test_the_runs_suppression_file_holds_for_refreshed_and_new_users(seeded, tmp_path, topx, sqlite_url):
    """Suppressed pairs are excluded for the refreshed users, a new user's too (its lines name a
    user the run did not know, and count as unknown only there)."""
    from batch.cli import main

    dataset = RunDir(seeded["run"]).load_dataset()
    every = dataset.all_interactions()
    seen = set(dataset.items.ids[every.item[every.user == dataset.users.index([1])[0]]].tolist())
    allowed = {1: [i for i in dataset.items.ids.tolist() if i not in seen][:8],
               7777: [i for i in range(60, 70) if i not in (45, 38)][:8]}
    suppress = tmp_path / "suppress.csv"
    suppress.write_text("".join(f"{u},{i}\n" for u, keep in allowed.items() for i in dataset.items.ids.tolist()
                                if i not in keep))
    job = _job(tmp_path, f'[search]\nsuppress = "{suppress}"\n')
    work = tmp_path / "work"
    assert main(["run", "--data", str(seeded["data"]), "--workdir", str(work), "--config", str(job), "--epochs", "3",
                 "--num-factors", "8", "--top", str(TOP), "--allow-regression", "--database-url", sqlite_url]) == 0
    users = tmp_path / "users.txt"
    users.write_text("1\n7777\n")
    data = new_activity(seeded, tmp_path, 1, [], 7777, [45, 38])
    summary = ok(topx, "refresh", "--users", str(users), "--data", str(data), "--database-url", sqlite_url,
                 "--workdir", str(work), "--config", str(job), "--allow-regression")
    assert summary["refresh"]["suppress_unknown"] == 0 and summary["refresh"]["suppress_pairs"] == 2 * (90 - 8)
    for user, keep in allowed.items():
        listed = [int(row[2]) for row in rows_of(sqlite_url, summary["run_id"], [str(user)])]
        assert len(listed) == TOP and set(listed) <= set(keep), (user, listed, keep)


def test_a_run_directory_with_another_model_than_the_current_runs_is_refused(seeded, tmp_path, topx, sqlite_url):
    """The run directory must hold the model the current run's lists were made from (the digest its
    stored metrics record), or the refreshed lists would not match the carried ones."""
    source = published(topx, seeded, sqlite_url)
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET metrics = json_set(metrics, '$.evaluate.model_sha256', :d) "
                             "WHERE id = :r"), {"d": "0" * 64, "r": source})
    engine.dispose()
    users = tmp_path / "users.txt"
    users.write_text("1\n")
    code, _, err = topx("refresh", "--users", str(users), "--database-url", sqlite_url, "--run", str(seeded["run"]),
                        "--allow-regression")
    assert code == 2 and "another model" in err and "--run" in err
    assert [row[0] for row in query(sqlite_url, "SELECT id FROM runs")] == [source]


def test_a_refresh_never_writes_over_a_published_run_and_a_retry_is_idempotent(seeded, tmp_path, topx, db_url):
    """--run-id naming a published run is refused (exit 2) and changes nothing; the same refresh
    retried with its own run id (it is current, same users) returns its summary."""
    from datetime import UTC, datetime

    from batch.lists import TopLists
    from batch.publish.refresh import RunIdTakenError, publish_refresh
    from batch.publish.registry import RunInfo
    from batch.transient import exit_code

    source = published(topx, seeded, db_url)
    users = tmp_path / "users.txt"
    users.write_text("3\n")
    argv = ["refresh", "--users", str(users), "--database-url", db_url, "--run", str(seeded["run"]),
            "--allow-regression", "--run-id", "refresh-1"]
    first = ok(topx, *argv)
    tables = ("recommendations", "similar_items", "audiences", "item_attributes")

    def everything():
        return {"runs": query(db_url, "SELECT id, status, n_rows, n_users FROM runs ORDER BY id"),
                **{t: query(db_url, f"SELECT * FROM {t} ORDER BY 1, 2, 3") for t in tables}}

    before = everything()
    assert before["runs"] == sorted([(source, "superseded", 60 * TOP, 60), ("refresh-1", "current", 60 * TOP, 60)])
    assert len(rows_of(db_url, "refresh-1")) == 60 * TOP
    again = ok(topx, *argv)  # an orchestrator's retry of the same job
    assert again["already_published"] is True and again["run_id"] == "refresh-1" and again["source_run"] == source
    assert (again["rows"], again["users"]) == (first["rows"], first["users"])
    assert everything() == before
    other = tmp_path / "other.txt"
    other.write_text("5\n")
    for run_id, status in (("refresh-1", "current, a refresh of other users"), (source, "superseded")):
        code, _, err = topx("refresh", "--users", str(other), "--database-url", db_url, "--run", str(seeded["run"]),
                            "--allow-regression", "--run-id", run_id)
        assert code == 2 and f"run id {run_id} is taken: that run is {status}" in err
        assert everything() == before
    # The publisher checks under its lock too: the current run's own id as the new run's.
    dataset = RunDir(seeded["run"]).load_dataset()
    info = RunInfo(run_id="refresh-1", config={}, model_location="", started_at=datetime.now(UTC))
    with pytest.raises(RunIdTakenError) as refused:
        publish_refresh(db_url, info, "refresh-1", TopLists.empty(), dataset.users, dataset.items)
    assert exit_code(refused.value) == 2
    assert everything() == before


@pytest.mark.parametrize("env, config, named", [
    ({"TOPX_SEARCH_TOP": "8"}, "", "search.top 8 (the run's: 5)"),
    ({"TOPX_SEARCH_EXCLUDE_SEEN": "false"}, "", "search.exclude_seen False (the run's: True)"),
    ({}, "[rerank]\nmodel = \"ncf\"\n", "rerank.model 'ncf' (the run's: 'none')"),
])
def test_refresh_refuses_list_settings_other_than_the_runs(seeded, tmp_path, topx, db_url, monkeypatch, env, config,
                                                            named):
    """Settings that decide a list besides the candidate rules (length, seen items, re-ranker)
    must be the run's: refused with exit 2, nothing published."""
    source = published(topx, seeded, db_url)
    users = tmp_path / "users.txt"
    users.write_text("3\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    extra = ["--config", str(_job(tmp_path, config))] if config else []
    code, _, err = topx("refresh", "--users", str(users), "--database-url", db_url, "--run", str(seeded["run"]),
                        "--allow-regression", *extra)
    assert code == 2 and named in err and "a refresh keeps the settings" in err
    assert query(db_url, "SELECT id, status FROM runs") == [(source, "current")]


def test_refresh_refuses_another_category_column_under_the_runs_cap(seeded, tmp_path, topx, sqlite_url):
    """With a category cap, the column it counts by is the run's too; without one it does not matter."""
    from batch.cli import main

    work = tmp_path / "work"
    capped = _job(tmp_path, "[search]\nmax_per_category = 2\n")
    assert main(["run", "--data", str(seeded["data"]), "--workdir", str(work), "--epochs", "1", "--num-factors", "8",
                 "--top", str(TOP), "--allow-regression", "--database-url", sqlite_url, "--config", str(capped)]) == 0
    users = tmp_path / "users.txt"
    users.write_text("3\n")
    other = tmp_path / "other.toml"
    other.write_text("[search]\nmax_per_category = 2\ncategory = \"occupation\"\n")
    code, _, err = topx("refresh", "--users", str(users), "--database-url", sqlite_url, "--workdir", str(work),
                        "--allow-regression", "--config", str(other))
    assert code == 2 and "search.category 'occupation' (the run's: 'genre')" in err
    assert ok(topx, "refresh", "--users", str(users), "--database-url", sqlite_url, "--workdir", str(work),
              "--allow-regression")["refresh"]["users"] == 1


def test_refreshing_users_without_new_activity_reproduces_their_lists(seeded, tmp_path, topx, db_url):
    """No new activity (the data unchanged): the refreshed users' lists are the run's, row for row
    (their vectors are the run's, not rebuilt from train and held-out history); one new
    interaction rebuilds that user's vector from their whole history."""
    source = published(topx, seeded, db_url)
    users = tmp_path / "users.txt"
    users.write_text("3\n5\n1\n")
    same = ok(topx, "refresh", "--users", str(users), "--data", str(seeded["data"]), "--database-url", db_url,
              "--run", str(seeded["run"]), "--allow-regression")
    assert rows_of(db_url, same["run_id"]) == rows_of(db_url, source)
    assert same["refresh"]["users_with_new_activity"] == 0 and same["refresh"]["runs_vectors"] == 3
    assert same["refresh"]["item_item"] == {"factors": 90, "recomputed": 0}
    data = new_activity(seeded, tmp_path, 5, [int(rows_of(db_url, source, ["5"])[0][2])], 7777, [])
    moved = ok(topx, "refresh", "--users", str(users), "--data", str(data), "--database-url", db_url,
               "--run", str(seeded["run"]), "--allow-regression")
    assert moved["refresh"]["users_with_new_activity"] == 1 and moved["refresh"]["runs_vectors"] == 2
    assert moved["refresh"]["item_item"] == {"factors": 90, "recomputed": 1}
    assert rows_of(db_url, moved["run_id"], ["5"], keep=False) == rows_of(db_url, source, ["5"], keep=False)
    expected, scores = model_list(RunDir(seeded["run"]), 5, [int(rows_of(db_url, source, ["5"])[0][2])], TOP)
    mine = rows_of(db_url, moved["run_id"], ["5"])
    assert [row[2] for row in mine] == expected
    np.testing.assert_allclose([row[3] for row in mine], scores, rtol=1e-4, atol=1e-5)


def test_a_users_file_with_a_byte_order_mark_and_a_header_names_only_its_users(tmp_path):
    """A UTF-8 byte order mark is dropped, so the header stays a header (string ids: it would
    have become a user) and a first integer id parses."""
    from batch.data.interactions import IdMap
    from batch.serve.refresh import read_users

    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfuser_id\nu3\nu1\n")
    found = read_users(str(path), IdMap(np.array(["u1", "u3"])), header="user")
    assert found.ids.ids.tolist() == ["u1", "u3"] and found.lines.tolist() == [3, 2]
    path.write_bytes(b"\xef\xbb\xbf7\n3\n")
    assert read_users(str(path), IdMap(np.array([1, 3]))).ids.ids.tolist() == [3, 7]


def test_ids_in_neither_the_run_nor_the_data_are_skipped_with_file_and_line(seeded, tmp_path, topx, sqlite_url):
    """A typo'd id (in neither the run's data set nor the data source) is reported by file and
    line and skipped, not published with a popularity list; a file of typos only is refused."""
    source = published(topx, seeded, sqlite_url)
    users = tmp_path / "users.txt"
    users.write_bytes(b"\xef\xbb\xbfuser_id\n3\n99999\n")
    code, summary, err = topx("refresh", "--users", str(users), "--database-url", sqlite_url, "--run",
                              str(seeded["run"]), "--allow-regression")
    assert code == 0 and summary["refresh"]["users"] == 1 and summary["refresh"]["not_in_data_ids"] == ["99999"]
    assert f"{users} line 3: user 99999 is neither in the run's data set nor in the data source" in err
    assert rows_of(sqlite_url, summary["run_id"]) == rows_of(sqlite_url, source)
    assert query(sqlite_url, "SELECT n_users FROM runs WHERE id = :r", r=summary["run_id"]) == [(60,)]
    users.write_text("99999\n")
    code, _, err = topx("refresh", "--users", str(users), "--database-url", sqlite_url, "--run", str(seeded["run"]),
                        "--allow-regression")
    assert code == 2 and "none of its 1 user id(s) is in the run's data set or the data source" in err
    assert "line 1" in err and str(users) in err


@pytest.mark.parametrize("n_users, n_items", [(30, 50), (50, 30), (40, 40)])
def test_the_item_item_members_user_rows_follow_from_its_item_rows(n_users, n_items):
    """A refresh recomputes the member's user row of a profile from the item rows alone: exactly
    what fitting gave each training user, with more items than users (Woodbury) or not."""
    import scipy.sparse as sp

    from batch.train.item_item import fit_item_item, member_user_rows, profiles

    X = sp.random(n_users, n_items, density=0.2, random_state=1, format="csr")
    X.data[:] = 1
    pairs = X.tocoo()
    W = profiles(pairs.row, pairs.col, np.random.default_rng(0).integers(0, 100, pairs.nnz), n_users, n_items, 1.0,
                 5.0)
    users, items = fit_item_item(X, W, 3.0)
    np.testing.assert_allclose(member_user_rows(items, W), users, rtol=1e-5, atol=1e-6)


def test_a_refresh_profiles_users_as_the_runs_training_did(tmp_path):
    """The member's recency is the one its training chose (recorded in the training metrics),
    not the configured one; a run from before the choice and the rating weights keeps its
    configured recency and unweighted profiles."""
    from batch.config import load_config
    from batch.refresh import member

    run = RunDir(tmp_path / "run")
    run.write_json("config.json", load_config(env={}).to_dict())
    settings, factors = member({"metrics": {"train": {"engine": {"item_item_factors": 5, "item_item_recency": 4.0}}}},
                               run)
    assert factors == 5 and settings.recency == 4.0 and settings.rating_exponent == 0.5
    # a run whose data's ratings were ignored (a rating ≤ 0) refreshes unweighted profiles too
    ignored = {"item_item_factors": 5, "item_item_recency": 0.5, "item_item_rating_exponent": 0.0}
    settings, _ = member({"metrics": {"train": {"engine": ignored}}}, run)
    assert settings.recency == 0.5 and settings.rating_exponent == 0.0
    older = load_config(env={}).to_dict()
    del older["train"]["ials"]["item_item_rating_exponent"]
    run.write_json("config.json", older)
    settings, _ = member({"metrics": {"train": {"engine": {"item_item_factors": 5}}}}, run)
    assert settings.recency == 1.0 and settings.rating_exponent == 0.0
    assert member({"metrics": {"train": {"engine": {"item_item_factors": 0}}}}, run) is None


def test_current_profiles_weigh_a_pair_rated_again_by_its_latest_rating_alone():
    """The run rated item 10 a 5 for user 7; the data source now holds a 2 for it, later, and a 4
    for item 11: the user's highest rating is 4 (the superseded 5 no longer counts), as ingest of
    the data source alone would have it."""
    from batch.data.interactions import Dataset, IdMap, Interactions
    from batch.serve.refresh import current_profiles
    from batch.train.item_item import ItemItemSettings

    def data(pairs):
        user, item, rating, time = (np.array(c) for c in zip(*pairs, strict=True))
        return Dataset(Interactions(np.zeros(len(user), np.int32), item.astype(np.int32), rating.astype(np.float32),
                                    time.astype(np.int64)), Interactions.empty(), IdMap(np.array([7])),
                       IdMap(np.array([10, 11])))

    source = data([(7, 0, 5.0, 100)])
    current = data([(7, 0, 2.0, 200), (7, 1, 4.0, 300)])
    settings = ItemItemSettings(recency=0.0, rating_exponent=0.5)
    profile = current_profiles(source, current, IdMap(np.array([7])), settings).toarray()
    np.testing.assert_allclose(profile, [[0.5 ** 0.5, 1.0]])
    unweighted = current_profiles(source, current, IdMap(np.array([7])), ItemItemSettings(recency=0.0,
                                                                                          rating_exponent=0.0))
    np.testing.assert_array_equal(unweighted.toarray(), [[1.0, 1.0]])
