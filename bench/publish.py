"""Publish throughput: 20,000 users × top 100 = 2M rows into PostgreSQL and SQLite.

    .venv/bin/python bench/publish.py [--users N] [--top X] [--items N] [--pg-admin-url URL]

Prints one JSON object: for PostgreSQL, each of three consecutive runs (the third prunes the
first with keep_runs=2) with wall seconds, rows/s and seconds per phase, plus the CPU seconds of
this process (which encodes the COPY stream) and of the server backend; for comparison, the
same COPY into one ordinary table with a primary key, and the DELETE that pruning would then
need; and SQLite's rows/s. The load average is printed too: on a shared machine wall time
measures the neighbours as much as the code, CPU seconds much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import psycopg2
from sqlalchemy import create_engine, event

from batch.data.interactions import IdMap
from batch.lists import TopLists
from batch.publish import RunInfo, publish_run
from batch.publish.pgcopy import Number, PrefetchReader, TextFields, copy_stream
from batch.publish.rows import RunRows


def make_lists(n_users: int, top: int, n_items: int, seed: int = 0) -> TopLists:
    """Random top lists: distinct-enough items, scores falling with rank."""
    rng = np.random.default_rng(seed)
    n = n_users * top
    score = np.sort(rng.standard_normal((n_users, top)).astype(np.float32), axis=1)[:, ::-1].ravel()
    return TopLists(np.repeat(np.arange(n_users, dtype=np.int32), top),
                    np.tile(np.arange(1, top + 1, dtype=np.int32), n_users),
                    rng.integers(0, n_items, n).astype(np.int32), score,
                    (1 / (1 + np.exp(-score))).astype(np.float32), np.zeros(n, np.uint8))


def cpu_seconds(pid: int | None = None) -> float:
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_postgres(admin_url: str, data: dict, runs: int = 3) -> dict:
    name = f"topx_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(f"{admin_url.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg2://')}/{name}")
    backends: list[int] = []
    event.listen(engine, "connect", lambda dbapi, _: backends.append(dbapi.get_backend_pid()))
    try:
        results = [_one_pg_run(engine, data, f"bench-{k}", backends) for k in range(runs)]
        rates = [r["rows_per_s"] for r in results]
        return {"runs": results, "median_rows_per_s": round(float(np.median(rates))), "best_rows_per_s": max(rates),
                "plain_table_comparison": _plain_table(engine, data)}
    finally:
        engine.dispose()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _one_pg_run(engine, data: dict, run_id: str, backends: list[int]) -> dict:
    engine.dispose()  # a fresh backend per run, so its CPU counter covers just this run
    with engine.connect():
        pass
    client, server = cpu_seconds(), cpu_seconds(backends[-1])
    summary = publish_run(None, _run(run_id), engine=engine, keep_runs=2, **data)
    summary["client_cpu_s"] = round(cpu_seconds() - client, 3)
    summary["server_backend_cpu_s"] = round(cpu_seconds(backends[-1]) - server, 3)
    return {k: summary[k] for k in ("run_id", "rows", "seconds", "rows_per_s", "phases", "pruned",
                                    "client_cpu_s", "server_backend_cpu_s")}


def _plain_table(engine, data: dict) -> dict:
    """The alternative design: every run COPYed into one indexed table, old runs DELETEd."""
    rows = RunRows.build("plain", data["lists"], data["users"], data["items"], chunk_rows=200_000)
    fields = (TextFields.from_text(rows.user_text), Number(">i4"), TextFields.from_text(rows.item_text),
              Number(">f4"), Number(">f4", nullable=True), Number(">i2"))
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        # What one shared table needs: a B-tree serving both user lookups and per-run deletes.
        cur.execute("CREATE TABLE plain (LIKE recommendations, PRIMARY KEY (run_id, user_id, rank))")
        cur.execute("ALTER TABLE plain ALTER COLUMN run_id SET DEFAULT 'plain'")
        conn.commit()
        start = time.perf_counter()
        blocks = ((c.user, c.rank, c.item, c.score, c.probability, c.source) for c in rows.chunks())
        reader = PrefetchReader(copy_stream(fields, blocks))
        cur.copy_expert("COPY plain (user_id, rank, item_id, score, probability, source) "
                        "FROM STDIN WITH (FORMAT binary)", reader, size=1 << 22)
        reader.close()
        conn.commit()
        loaded = time.perf_counter()
        cur.execute("DELETE FROM plain WHERE run_id = 'plain'")
        conn.commit()
        deleted = time.perf_counter()
    finally:
        conn.close()
    return {"copy_into_indexed_table_s": round(loaded - start, 3),
            "rows_per_s": round(len(rows) / (loaded - start)), "delete_run_s": round(deleted - loaded, 3)}


def bench_sqlite(data: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        summary = publish_run(f"sqlite:///{tmp}/bench.db", _run("bench-0"), **data)
    return {k: summary[k] for k in ("rows", "seconds", "rows_per_s", "phases")}


def _run(run_id: str) -> RunInfo:
    return RunInfo(run_id, {"bench": True}, "bench://model", datetime.now(UTC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "TOPX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    # Ids 1..n: as text their lengths vary, as real ids' do.
    data = {"lists": make_lists(args.users, args.top, args.items),
            "users": IdMap(np.arange(1, args.users + 1, dtype=np.int64)),
            "items": IdMap(np.arange(1, args.items + 1, dtype=np.int64)),
            "item_titles": np.array([f"Item {i}" for i in range(args.items)], dtype=object)}
    report = {"rows": args.users * args.top, "cpus": os.cpu_count(),
              "load_average_before": round(os.getloadavg()[0], 2),
              "postgres": bench_postgres(args.pg_admin_url, data)}
    if not args.skip_sqlite:
        report["sqlite"] = bench_sqlite(data)
    report["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
