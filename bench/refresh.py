"""A refresh against a full publish: 20,000 users × top 100 = 2M rows published, then 1,000 of
them refreshed (their rows replaced, the other 1.9M rows copied inside the database), on
PostgreSQL and SQLite.

    .venv/bin/python bench/refresh.py [--users N] [--top X] [--items N] [--refresh N] [--pg-admin-url URL]

Prints one JSON object: per database, the wall seconds and phases of the full publish and of
the refresh (batch.publish.refresh.publish_refresh), and the load average (on a shared machine
wall time measures the neighbours too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from publish import make_lists  # noqa: E402 (bench/publish.py, beside this file)

from batch.data.interactions import IdMap  # noqa: E402
from batch.publish import RunInfo, publish_run  # noqa: E402
from batch.publish.refresh import publish_refresh  # noqa: E402

METRICS = {"evaluate": {"model": {"ndcg@10": 0.25}, "popularity": {"ndcg@10": 0.05}}}


def info(run_id: str) -> RunInfo:
    return RunInfo(run_id, {}, "bench", datetime.now(UTC), metrics=METRICS)


def bench(url: str, args: argparse.Namespace) -> dict:
    users = IdMap(np.arange(args.users, dtype=np.int64))
    items = IdMap(np.arange(args.items, dtype=np.int64))
    full = publish_run(url, info("full"), make_lists(args.users, args.top, args.items), users, items)
    chosen = np.sort(np.random.default_rng(1).choice(args.users, args.refresh, replace=False))
    mine = IdMap(chosen.astype(np.int64))
    refreshed = publish_refresh(url, info("refresh"), "full", make_lists(args.refresh, args.top, args.items, seed=1),
                                mine, items)
    assert refreshed["rows"] == full["rows"]
    return {"publish_s": full["seconds"], "publish_phases": full["phases"], "refresh_s": refreshed["seconds"],
            "refresh_phases": refreshed["phases"], "rows": refreshed["rows"],
            "refreshed_rows": refreshed["refreshed_rows"],
            "carried_rows": refreshed["rows"] - refreshed["refreshed_rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--refresh", type=int, default=1_000)
    parser.add_argument("--pg-admin-url", default=os.environ.get("TOPX_TEST_PG_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    result = {"users": args.users, "top": args.top, "refreshed_users": args.refresh, "loadavg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        result["sqlite"] = bench(f"sqlite:///{tmp}/bench.db", args)
    name = f"topx_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.pg_admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        result["postgresql"] = bench(f"{args.pg_admin_url.rsplit('/', 1)[0]}/{name}", args)
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
