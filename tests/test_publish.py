"""Publishing runs on SQLite and real PostgreSQL: the view, the switch, re-runs, pruning,
failures mid-load and the bookkeeping in ``runs``."""

from __future__ import annotations

import numpy as np
import pytest
from test_publish_support import (
    EVALUATED,
    expected_rows,
    hook_chunks,
    id_maps,
    make_lists,
    query,
    run_info,
    status,
    stored_rows,
    titles_for,
    view_rows,
)

from batch.errors import PublishError
from batch.publish import cleanup, current_run, make_engine, mark_failed, publish_run
from batch.publish.base import PublishLockedError, sink_for
from batch.publish.registry import STALE_REASON


def publish(url, run_id, lists=None, *, text=False, titles=True, **kwargs):
    users, items = id_maps(text=text)
    lists = make_lists() if lists is None else lists
    return publish_run(url, run_info(run_id), lists, users, items,
                       item_titles=titles_for(items) if titles else None, **kwargs)


@pytest.mark.parametrize("text", [False, True], ids=["int-ids", "unicode-ids"])
def test_published_run_is_what_the_view_shows(db_url, text):
    lists, (users, items) = make_lists(fallback_users=(2,)), id_maps(text=text)
    summary = publish(db_url, "r1", lists, text=text, chunk_rows=5)

    assert view_rows(db_url) == expected_rows(lists, users, items, titles_for(items))
    assert summary["rows"] == len(lists) == 24 and summary["users"] == 6
    assert summary["run_id"] == "r1" and summary["superseded"] is None
    run = current_run(db_url)
    assert run["id"] == "r1" and run["status"] == "current"
    assert (run["n_users"], run["n_rows"], run["n_items"], run["n_fallback_users"]) == (6, 24, 10, 1)
    assert run["n_items_recommended"] == 9  # items 0..8: users 0..5 take (u + 0..3) mod 10
    assert run["metrics"] == EVALUATED and run["counts"] == {"interactions": 1234}
    assert run["model_location"] == "s3://bucket/r1/model.tar.gz"
    assert run["started_at"].startswith("2024-05-01T12:00:00")


def test_sources_and_missing_probability_are_stored(db_url):
    publish(db_url, "r1", make_lists(fallback_users=(0, 5), no_probability=True))
    rows = query(db_url, "SELECT user_id, source, probability FROM current_recommendations")
    assert {(u, s) for u, s, _ in rows} == {("7", 1), ("8", 0), ("9", 0), ("10", 0), ("11", 0), ("12", 1)}
    assert all(p is None for _, _, p in rows)  # NULL, not NaN


def test_a_new_run_supersedes_the_current_one(db_url):
    publish(db_url, "r1")
    lists2 = make_lists(shift=5)
    summary = publish(db_url, "r2", lists2)

    assert summary["superseded"] == "r1"
    assert view_rows(db_url) == expected_rows(lists2, *id_maps(), titles_for(id_maps()[1]))
    assert (status(db_url, "r1"), status(db_url, "r2")) == ("superseded", "current")
    assert stored_rows(db_url, "r1") == 24  # kept for keep_runs, just not visible


def test_rerunning_a_run_id_replaces_its_rows_without_duplicates(db_url):
    publish(db_url, "r1")
    publish(db_url, "r2")
    again = make_lists(shift=1)
    summary = publish(db_url, "r1", again)

    assert summary["superseded"] == "r2"
    assert stored_rows(db_url, "r1") == len(again)
    assert view_rows(db_url) == expected_rows(again, *id_maps(), titles_for(id_maps()[1]))
    assert (status(db_url, "r1"), status(db_url, "r2")) == ("current", "superseded")
    publish(db_url, "r1", again)  # re-running the current run keeps it current
    assert stored_rows(db_url, "r1") == len(again) and status(db_url, "r1") == "current"


def test_only_the_newest_keep_runs_keep_their_rows(db_url):
    pruned = [publish(db_url, f"r{k}", keep_runs=2)["pruned"] for k in range(1, 5)]

    assert pruned == [[], [], ["r1"], ["r2"]]
    assert [stored_rows(db_url, f"r{k}") for k in range(1, 5)] == [0, 0, 24, 24]
    assert [status(db_url, f"r{k}") for k in range(1, 5)] == ["pruned", "pruned", "superseded", "current"]


def test_pruning_never_takes_the_current_run_whatever_the_clocks_said(db_url):
    publish(db_url, "r1")
    publish(db_url, "r2")
    engine = make_engine(db_url)  # r2's publisher had a clock years behind
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE runs SET published_at = '2001-01-01 00:00:00+00:00' WHERE id = 'r2'")
    engine.dispose()

    assert cleanup(db_url, keep_runs=1)["pruned"] == ["r1"]
    assert status(db_url, "r2") == "current" and len(view_rows(db_url)) == 24


def test_an_exception_mid_load_fails_the_run_and_keeps_the_previous_one(db_url, monkeypatch):
    publish(db_url, "r1")
    before = view_rows(db_url)

    def boom():
        raise RuntimeError("disk on fire")

    hook_chunks(monkeypatch, after=2, action=boom)
    with pytest.raises(PublishError, match="r2.*disk on fire"):
        publish(db_url, "r2", make_lists(shift=3), chunk_rows=4)

    assert view_rows(db_url) == before and current_run(db_url)["id"] == "r1"
    assert status(db_url, "r2") == "failed" and stored_rows(db_url, "r2") == 0
    assert "disk on fire" in query(db_url, "SELECT error FROM runs WHERE id = 'r2'")[0][0]
    monkeypatch.undo()
    publish(db_url, "r2", make_lists(shift=3))
    assert status(db_url, "r2") == "current" and stored_rows(db_url, "r2") == 24


def test_readers_see_the_previous_run_until_the_switch_commits(db_url, monkeypatch):
    publish(db_url, "r1")
    before, seen = view_rows(db_url), []
    hook_chunks(monkeypatch, after=3, action=lambda: seen.append((view_rows(db_url), current_run(db_url)["id"])))
    lists2 = make_lists(shift=7)
    publish(db_url, "r2", lists2, chunk_rows=4)

    assert seen == [(before, "r1")]  # another connection, mid-load: the old run, complete
    assert view_rows(db_url) == expected_rows(lists2, *id_maps(), titles_for(id_maps()[1]))


def test_a_second_publisher_is_refused_while_one_holds_the_lock(db_url):
    publish(db_url, "r1")
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn, sink_for(engine).locked(conn):
            with pytest.raises(PublishLockedError):
                publish(db_url, "r2")
    finally:
        engine.dispose()
    assert status(db_url, "r2") is None and current_run(db_url)["id"] == "r1"
    publish(db_url, "r2")  # the lock is free again
    assert current_run(db_url)["id"] == "r2"


def test_cleanup_fails_a_run_left_loading(db_url):
    publish(db_url, "r1")
    engine = make_engine(db_url)  # as a publisher that died right after registering r2 leaves it
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO runs (id, status, created_at) VALUES ('r2', 'loading', CURRENT_TIMESTAMP)")
    engine.dispose()

    assert cleanup(db_url)["recovered"] == ["r2"]
    assert status(db_url, "r2") == "failed"
    assert query(db_url, "SELECT error FROM runs WHERE id = 'r2'")[0][0] == STALE_REASON
    assert current_run(db_url)["id"] == "r1" and cleanup(db_url)["recovered"] == []


def test_mark_failed_records_failures_but_never_hides_a_published_run(db_url):
    mark_failed(db_url, "r0", "training diverged: loss is NaN")
    assert status(db_url, "r0") == "failed"
    publish(db_url, "r1")
    mark_failed(db_url, "r1", "a later stage failed")
    assert status(db_url, "r1") == "current" and len(view_rows(db_url)) == 24
    publish(db_url, "r0")  # a failed run id can be published later
    assert status(db_url, "r0") == "current"


def test_titles_follow_the_latest_run(db_url):
    users, items = id_maps()
    publish(db_url, "r1")
    titles = titles_for(items)
    titles[0], titles[1] = "Renamed", None  # None keeps the stored title
    publish_run(db_url, run_info("r2"), make_lists(), users, items, item_titles=titles)
    stored = dict(query(db_url, "SELECT item_id, title FROM items"))
    assert stored["100"] == "Renamed" and stored["103"] == titles_for(items)[1]
    assert "124" not in stored and len(stored) == 9




@pytest.mark.parametrize("bad, message", [
    (lambda lists: lists.item.__setitem__(0, 10), "item indices outside"),
    (lambda lists: lists.user.__setitem__(0, -1), "user indices outside"),
    (lambda lists: lists.score.__setitem__(3, np.nan), "non-finite scores"),
    (lambda lists: lists.rank.__setitem__(1, 1), "ranks must increase"),
    (lambda lists: lists.user.__setitem__(-1, 0), "contiguous"),
])
def test_bad_lists_are_refused_before_the_database_is_touched(sqlite_url, tmp_path, bad, message):
    lists = make_lists()
    bad(lists)
    with pytest.raises(PublishError, match=message):
        publish(sqlite_url, "r1", lists)
    assert not (tmp_path / "topx.db").exists()


def test_bad_ids_and_titles_are_refused(sqlite_url):
    users, items = id_maps()
    with pytest.raises(PublishError, match="NUL"):
        publish_run(sqlite_url, run_info("r1"), make_lists(), type(users)(np.array([f"u\x00{k}" for k in range(6)])),
                    items)
    with pytest.raises(PublishError, match="item_titles has 3 entries for 10 items"):
        publish_run(sqlite_url, run_info("r1"), make_lists(), users, items, item_titles=["a", "b", "c"])


def test_credentials_never_reach_summaries_runs_or_errors(pg_url):
    url = pg_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores the password
    summary = publish(url, "r1")
    assert "s3cret-pw" not in repr(summary) and "***" in summary["database"]
    assert "hunter2" not in repr(current_run(url))  # the config stored with the run
    unreachable = "postgresql://topx:s3cret-pw@127.0.0.1:1/nowhere"
    with pytest.raises(PublishError) as raised:
        publish(unreachable, "r1")
    assert "s3cret-pw" not in str(raised.value) and "127.0.0.1" in str(raised.value)
