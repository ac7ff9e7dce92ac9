"""Commands around the published database: ``export``, ``runs``, ``cleanup``, ``db upgrade``, ``schema``.

Each finds the database the way ``topx run`` does (``--database-url``, ``TOPX_DATABASE_URL``,
the config file, else the SQLite file in the work directory).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batch.cli.common import add_config_options, config_from_args
from batch.config import JobConfig
from batch.log import summary
from batch.publish import cleanup, current_run, database_url, export_current, list_runs
from batch.publish.connect import require_existing, shown
from batch.publish.models import schema_sql

# Columns of `topx runs`: enough to see what is live and what failed, and each run's key figures
# (runs.metrics -> figures: accuracy, beyond-accuracy and churn); the rest is in the table.
RUN_FIELDS = ("id", "status", "started_at", "published_at", "n_users", "n_rows", "error")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="write the current top-N lists as CSV (with titles) or JSON lines",
                              description="Stream the current run's lists, cut to --top items per "
                              "user, with item titles, to a CSV file for email tools, or as JSON lines "
                              "to a file, an S3 object or stdout.")
    add_config_options(p, "--top", "--database-url", "--workdir")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="file to write, s3://bucket/key (a streamed multipart upload), or - for stdout (the "
                        "summary line then goes to stderr); written whole or not at all")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv",
                   help="csv (user_id, rank, item_id, title, score rows; default) or jsonl (one user a line, as "
                        "Amazon Personalize batch inference writes)")
    p.set_defaults(handler=_export)

    p = subparsers.add_parser("runs", help="list recent runs: current, superseded, failed",
                              description="List the newest runs the database records, newest first: id, status "
                                          "(loading, collecting, current, superseded, failed, rejected), when it "
                                          "started and was published, its users and rows, its error if it failed, "
                                          "and its key figures.")
    add_config_options(p, "--database-url", "--workdir")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="newest N runs (default 20)")
    p.add_argument("--json", action="store_true", help="no table on a terminal: only the JSON summary line "
                                                       "(what a pipe or a file gets anyway)")
    p.set_defaults(handler=_runs)

    p = subparsers.add_parser("cleanup", help="fail runs a crashed publisher left loading; prune old runs",
                              description="Mark failed the runs a crashed publisher left loading (their rows go) "
                                          "and the sharded runs still collecting long after they began, and prune "
                                          "published runs beyond the newest --keep-runs: what every publish does, "
                                          "alone.")
    add_config_options(p, "--database-url", "--workdir")
    p.add_argument("--keep-runs", type=int, metavar="N", help="published runs to keep (default: config)")
    p.set_defaults(handler=_cleanup)

    p = subparsers.add_parser("db", help="database maintenance: topx db upgrade",
                              description="Database maintenance. upgrade: bring the database's schema to the "
                                          "revision this topx writes (Alembic migrations), in one transaction; "
                                          "every publish checks the revision and says when to run it.")
    actions = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="migrate the database's schema to this topx's revision",
                                 description="Apply every migration the database lacks, in one transaction; a "
                                             "database made before topx used migrations is adopted first.")
    add_config_options(upgrade, "--database-url", "--workdir")
    upgrade.set_defaults(handler=_db_upgrade)

    p = subparsers.add_parser("schema", help="write the database DDL generated from the models",
                              description="Regenerate sql/schema.sql: topx schema --out sql/schema.sql")
    p.add_argument("--out", required=True, metavar="FILE.sql", help="file to write")
    p.add_argument("--dialect", choices=["postgresql", "sqlite"], default="postgresql",
                   help="SQL dialect (default: postgresql)")
    p.set_defaults(handler=_schema)


def _config(args: argparse.Namespace, **extra: Any) -> tuple[JobConfig, str]:
    """The settings and the URL of an existing database (these commands never create one)."""
    config = config_from_args(args, **extra)
    return config, require_existing(database_url(config))


def _export(args: argparse.Namespace) -> dict[str, Any] | None:
    config, url = _config(args)
    run = current_run(url)
    to_stdout = args.out == "-"
    rows = export_current(url, sys.stdout if to_stdout else args.out, top=config.search.top, format=args.format)
    result = {"command": "export", "rows": rows, "top": config.search.top, "out": str(args.out),
              "format": args.format, "run_id": run and run["id"], "database": shown(url)}
    if not to_stdout:
        return result
    sys.stdout.flush()
    summary(result, file=sys.stderr)  # stdout holds the export alone
    return None


def _runs(args: argparse.Namespace) -> dict[str, Any]:
    _, url = _config(args)
    found = list_runs(url, limit=args.limit)
    if not args.json and sys.stdout.isatty():
        print(runs_table(found), flush=True)
    runs = [{**{k: run[k] for k in RUN_FIELDS}, "figures": (run["metrics"] or {}).get("figures", {}),
             "refreshed_from": _refreshed_from(run)} for run in found]
    return {"command": "runs", "runs": runs, "database": shown(url)}


def runs_table(runs: list[dict[str, Any]], now: datetime | None = None) -> str:
    """The runs as an aligned text table: run, status, mode, rows, NDCG@10 next to the popularity
    list's, age; and the source run of each ``topx refresh`` run, when there are any."""
    now = now or datetime.now(UTC)
    refreshes = any(_refreshed_from(run) for run in runs)  # a column of its own only when there are any
    rows = [("RUN", "STATUS", "MODE", "ROWS", "NDCG@10 (POPULARITY)", "AGE") + (("REFRESH OF",) if refreshes else ())]
    for run in runs:
        evaluate = (run.get("metrics") or {}).get("evaluate") or {}
        model, popular = (evaluate.get(side, {}).get("ndcg@10") for side in ("model", "popularity"))
        ndcg = "-" if model is None else f"{model:.4f}" + ("" if popular is None else f" ({popular:.4f})")
        mode = ((run.get("config") or {}).get("train") or {}).get("mode", "-")
        started = run.get("started_at")
        age = _age(now - datetime.fromisoformat(started)) if started else "-"
        rows.append((run["id"], run["status"], mode, "-" if run.get("n_rows") is None else f"{run['n_rows']:,}",
                     ndcg, age) + ((_refreshed_from(run) or "-",) if refreshes else ()))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _refreshed_from(run: dict[str, Any]) -> str | None:
    """The source run of a ``topx refresh`` run (``runs.counts`` → refresh), None for other runs."""
    return ((run.get("counts") or {}).get("refresh") or {}).get("source_run")


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _cleanup(args: argparse.Namespace) -> dict[str, Any]:
    config, url = _config(args, **{"publish.keep_runs": args.keep_runs})
    return {"command": "cleanup", **cleanup(url, keep_runs=config.publish.keep_runs)}


def _db_upgrade(args: argparse.Namespace) -> dict[str, Any]:
    from batch.publish import make_engine
    from batch.publish.migrate import upgrade

    _, url = _config(args)
    engine = make_engine(url)
    try:
        return {"command": "db upgrade", **upgrade(engine), "database": shown(url)}
    finally:
        engine.dispose()


def _schema(args: argparse.Namespace) -> dict[str, Any]:
    text = schema_sql(args.dialect)
    Path(args.out).write_text(text, encoding="utf-8")
    return {"command": "schema", "out": str(args.out), "dialect": args.dialect,
            "statements": text.count(";\n")}
