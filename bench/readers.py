"""Dashboard queries while a run is published and old runs pruned, on PostgreSQL: how long the
slowest one took. The target: no reader waits a second.

    .venv/bin/python bench/readers.py [--users N] [--top X] [--pg-admin-url URL]

Publishes three runs (keep_runs=1, so each publish prunes the one before) while a reader issues
the dashboard's user lookup every 10 ms; during the third publish another reader holds a
transaction open on the current run's partition, the case that used to queue every dashboard
query behind the prune for up to 60 s (that prune is deferred now, and done by the cleanup that
follows once the reader is gone). Prints one JSON object: per publish its wall seconds, the prune
seconds, what was pruned and deferred, and the readers' query count, median and slowest
milliseconds; ``met`` says whether every query took under a second.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import psycopg2
from publish import make_lists

from batch.data.interactions import IdMap
from batch.publish import RunInfo, cleanup, publish_run

TARGET_S = 1.0


def timed_reads(url: str, user: str, busy: threading.Thread) -> list[float]:
    """Seconds of each user lookup issued every 10 ms while ``busy`` runs."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    seconds = []
    try:
        while busy.is_alive():
            start = time.perf_counter()
            try:
                conn.cursor().execute("SELECT item_id FROM current_recommendations WHERE user_id = %s "
                                      "ORDER BY rank", (user,))
                seconds.append(time.perf_counter() - start)
            except psycopg2.errors.UndefinedTable:  # the first publish has not created the view yet
                pass
            time.sleep(0.01)
    finally:
        conn.close()
    return seconds


def publish_beside_readers(url: str, run_id: str, lists, users: IdMap, items: IdMap) -> dict:
    outcome: dict = {}
    info = RunInfo(run_id, {}, "bench", datetime.now(UTC))
    work = threading.Thread(target=lambda: outcome.update(publish_run(url, info, lists, users, items, keep_runs=1)))
    start = time.perf_counter()
    work.start()
    reads = timed_reads(url, str(users.ids[len(users) // 2]), work)
    work.join()
    return {"run_id": run_id, "seconds": round(time.perf_counter() - start, 3),
            "prune_s": outcome["phases"]["prune_s"], "pruned": outcome["pruned"],
            "prune_deferred": outcome["prune_deferred"], "reads": len(reads),
            "read_median_ms": round(float(np.median(reads)) * 1000, 2) if reads else None,
            "read_max_ms": round(max(reads) * 1000, 1) if reads else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    lists = make_lists(args.users, args.top, args.items)
    users, items = IdMap(np.arange(args.users, dtype=np.int64)), IdMap(np.arange(args.items, dtype=np.int64))
    name = f"topx_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.pg_admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = f"{args.pg_admin_url.rsplit('/', 1)[0]}/{name}"
    try:
        runs = [publish_beside_readers(url, "r1", lists, users, items),
                publish_beside_readers(url, "r2", lists, users, items)]
        holder = psycopg2.connect(url)  # a dashboard that read r2 and left its transaction open
        holder.cursor().execute("SELECT COUNT(*) FROM current_recommendations WHERE user_id = '1'")
        try:
            runs.append({**publish_beside_readers(url, "r3", lists, users, items), "reader_holding": "r2"})
        finally:
            holder.close()
        settled = cleanup(url, keep_runs=1)["pruned"]
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    slowest = max(run["read_max_ms"] or 0 for run in runs) / 1000
    print(json.dumps({"rows_per_run": len(lists), "runs": runs, "pruned_by_cleanup_after": settled,
                      "read_max_s": slowest, "target_s": TARGET_S, "met": slowest < TARGET_S}))


if __name__ == "__main__":
    main()
