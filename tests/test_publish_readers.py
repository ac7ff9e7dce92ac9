"""Publishing and pruning beside dashboards on PostgreSQL: no reader ever waits for them, even
while another reader keeps a transaction open on a run about to be pruned."""

from __future__ import annotations

import threading
import time

import psycopg2
from test_publish_support import id_maps, make_lists, query, run_info, status, stored_rows

from batch.publish import cleanup, publish_run
from batch.publish.postgres import partition_names

# A dashboard query that waits this long for a lock has waited too long (the target is < 1 s).
READER_TIMEOUT = "1s"


def publish(url: str, run_id: str, **kwargs) -> dict:
    return publish_run(url, run_info(run_id), make_lists(), *id_maps(), **kwargs)


def reader(url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute(f"SET statement_timeout = '{READER_TIMEOUT}'")
    return conn


def test_a_reader_in_an_open_transaction_defers_the_prune_and_blocks_no_one(pg_url):
    publish(pg_url, "r1")
    holder = psycopg2.connect(pg_url)  # a dashboard that read r1 and left its transaction open
    holder.cursor().execute("SELECT COUNT(*) FROM current_recommendations")
    timings, outcome = [], {}
    worker = threading.Thread(target=lambda: outcome.update(publish(pg_url, "r2", keep_runs=1)))
    second = reader(pg_url)
    try:
        worker.start()
        while worker.is_alive() or not timings:
            start = time.perf_counter()
            second.cursor().execute("SELECT COUNT(*) FROM current_recommendations WHERE user_id = '8'")
            timings.append(time.perf_counter() - start)
            time.sleep(0.01)
    finally:
        holder.close()
        worker.join()
        second.close()
    assert max(timings) < 1.0, timings
    assert outcome["superseded"] == "r1" and outcome["pruned"] == [] and outcome["prune_deferred"] == ["r1"]
    assert status(pg_url, "r1") == "superseded" and status(pg_url, "r2") == "current"
    assert query(pg_url, "SELECT COUNT(*) FROM current_recommendations")[0][0] == 24

    # The reader is gone: the next cleanup finishes the detach and drops the partition.
    assert cleanup(pg_url, keep_runs=1)["pruned"] == ["r1"]
    assert status(pg_url, "r1") == "pruned" and stored_rows(pg_url, "r1") == 0
    assert query(pg_url, "SELECT to_regclass(:t) IS NULL", t=partition_names("r1")[1])[0][0]


def test_prunes_run_oldest_first_and_stop_at_the_first_deferred(pg_url):
    for run_id in ("r1", "r2", "r3"):
        publish(pg_url, run_id, keep_runs=5)
    holder = psycopg2.connect(pg_url)  # holds every partition: the planner locked them all
    holder.cursor().execute("SELECT COUNT(*) FROM current_recommendations")
    try:
        summary = cleanup(pg_url, keep_runs=1)
    finally:
        holder.close()
    assert summary["pruned"] == [] and summary["prune_deferred"] == ["r1", "r2"]
    assert cleanup(pg_url, keep_runs=1)["pruned"] == ["r1", "r2"]
    assert [status(pg_url, r) for r in ("r1", "r2", "r3")] == ["pruned", "pruned", "current"]


def test_the_publisher_lock_outlives_an_idle_in_transaction_timeout(pg_url, monkeypatch):
    """The lock's session idles in its transaction while the publisher works on another one; a
    server that ends idle transactions after 200 ms must not free the lock mid-publish."""
    from test_publish_support import hook_chunks

    from batch.publish import make_engine
    from batch.publish.base import PublishLockedError, sink_for

    name = pg_url.rsplit("/", 1)[1]
    query(pg_url, "SELECT 1")  # the database exists; now make every new session time out idle transactions
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    admin.cursor().execute(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = \'200ms\'')
    admin.close()
    seen = []

    def second_publisher():
        time.sleep(0.6)
        engine = make_engine(pg_url)
        try:
            with engine.connect() as conn, sink_for(engine).locked(conn):
                seen.append("got the lock")
        except PublishLockedError:
            seen.append("refused")
        finally:
            engine.dispose()

    hook_chunks(monkeypatch, after=1, action=second_publisher)
    publish_run(pg_url, run_info("r1"), make_lists(), *id_maps(), chunk_rows=4)
    assert seen == ["refused"]
