"""The serving half's targets, measured in one run and printed as one JSON line.

1. Search: synthetic 20k users × 50k items × 64 factors, top 100 — our exact search with
   seen-item exclusion next to raw faiss ``IndexFlatIP`` (k=100, no exclusion) on the same
   matrices (target: ours ≤ 1.2× faiss).
2. Publish: 20k users × 100 = 2M rows into PostgreSQL (target ≥ 1M rows/s).
3. Similar items (top 10 of 50k items) and audiences (1,000 items × 20k users, 1,000 each) on
   the search's synthetic vectors, per query next to the users' lists (top 100, seen items
   excluded) on the same engine (target: ≤ 1.5× the users' time per query); audiences of 100
   users too, the users' list length.
4. The whole ``topx run`` on the embedded default (943 × 1682, 100k interactions), as a fresh
   process in an empty work directory: synthetic data, train, search, evaluate, publish to
   SQLite (target ≤ 30 s).

    python bench/topx.py [--skip search,publish,keyed,run] [--pg-admin-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling bench modules

TARGETS = {"search_ratio_max": 1.2, "publish_rows_per_s_min": 1_000_000, "run_seconds_max": 30.0,
           "keyed_per_query_ratio_max": 1.5}


def bench_publish(admin_url: str) -> dict:
    from publish import bench_postgres, make_lists

    from batch.data.interactions import IdMap

    users, top, items = 20_000, 100, 50_000
    data = {"lists": make_lists(users, top, items), "users": IdMap(np.arange(1, users + 1, dtype=np.int64)),
            "items": IdMap(np.arange(1, items + 1, dtype=np.int64)),
            "item_titles": np.array([f"Item {i}" for i in range(items)], dtype=object)}
    return bench_postgres(admin_url, data)


def bench_keyed(n_users: int = 20_000, n_items: int = 50_000, factors: int = 64, audience_items: int = 1000,
                size: int = 1000, repeats: int = 3, only: tuple[str, ...] = ()) -> dict:
    """Milliseconds per query of the users' lists, similar items and audiences on one set of
    vectors: wall (the best of ``repeats``) and CPU (all threads; what one query costs, which
    other work on a shared machine moves less than the wall time). ``only``: these parts
    beside the users' lists."""
    from search import seen_items, synthetic_vectors

    from batch.config import SimilarConfig
    from batch.serve.search import SearchRequest
    from batch.serve.search.local import LocalSearcher
    from batch.serve.similar import audiences, similar_items

    vectors, seen = synthetic_vectors(n_users, n_items, factors, 0), seen_items(n_users, n_items, 0)
    items = np.random.default_rng(1).choice(n_items, audience_items, replace=False)
    parts = {"user_lists": (n_users, lambda: LocalSearcher("exact").search(
                 SearchRequest(vectors, 100, seen, np.ones(n_items, bool)))),
             "similar_items": (n_items, lambda: similar_items(vectors, SimilarConfig(top=10))),
             "audiences": (audience_items, lambda: audiences(vectors, items, size, seen)),
             "audiences_100": (audience_items, lambda: audiences(vectors, items, 100, seen))}
    if only:
        parts = {name: parts[name] for name in ("user_lists", *only)}
    report: dict = {"users": n_users, "items": n_items, "dim": factors + 1, "user_top": 100, "similar_top": 10,
                    "audience_items": audience_items, "audience_size": size}
    for name, (queries, run) in parts.items():
        times, cpu = [], []
        for _ in range(repeats):  # the best of a few: the first pays for thread pools and page faults
            started, started_cpu = time.perf_counter(), time.process_time()
            run()
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        seconds = min(times)
        report[name] = {"seconds": round(seconds, 3), "all_s": [round(t, 3) for t in times],
                        "ms_per_query": round(1000 * seconds / queries, 4),
                        "cpu_ms_per_query": round(1000 * min(cpu) / queries, 4)}
    parts_keyed = [name for name in parts if name != "user_lists"]
    for unit, key in (("per_query_ratio", "ms_per_query"), ("cpu_per_query_ratio", "cpu_ms_per_query")):
        per_user = report["user_lists"][key]
        report[unit] = {name: round(report[name][key] / per_user, 3) for name in parts_keyed}
    return report


def bench_run() -> dict:
    """``topx run`` with no arguments in an empty work directory, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "batch", "run", "--workdir", str(Path(tmp) / "work")],
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_seconds": round(wall, 2), "stage_seconds": summary["seconds"], "rows": summary["rows"],
            "metrics": summary["metrics"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: search, publish, keyed, run")
    parser.add_argument("--pg-admin-url", default=os.environ.get(
        "TOPX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    report: dict = {"benchmark": "topx", "cpus": os.cpu_count(), "targets": TARGETS,
                    "load_average_before": round(os.getloadavg()[0], 2)}
    if "search" not in skip:
        from search import bench_search

        report["search"] = bench_search()
        report["search_ratio"] = report["search"].get("ratio")
    if "publish" not in skip:
        report["publish"] = bench_publish(args.pg_admin_url)
        report["publish_rows_per_s"] = report["publish"].get("median_rows_per_s")
    if "keyed" not in skip:
        report["keyed"] = bench_keyed()
        report["keyed_per_query_ratio"] = max(report["keyed"]["per_query_ratio"].values())
    if "run" not in skip:
        report["run"] = bench_run()
        report["run_seconds"] = report["run"].get("wall_seconds")
    report["met"] = met(report)
    report["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report))


def met(report: dict) -> dict[str, bool]:
    """Which of the measured parts reached their target."""
    checks = {"keyed_per_query_ratio": ("keyed_per_query_ratio_max", lambda v, t: v <= t),
              "search_ratio": ("search_ratio_max", lambda v, t: v <= t),
              "publish_rows_per_s": ("publish_rows_per_s_min", lambda v, t: v >= t),
              "run_seconds": ("run_seconds_max", lambda v, t: v <= t)}
    return {name: bool(ok(report[name], TARGETS[target])) for name, (target, ok) in checks.items()
            if report.get(name) is not None}


if __name__ == "__main__":
    main()
