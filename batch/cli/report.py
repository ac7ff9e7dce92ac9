"""``topx report``: the HTML report of a run, or the trend of the last published runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from batch.cli.common import add_config_options, config_from_args
from batch.errors import ConfigError, NoRunError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="write a run's HTML report, or the trend of the last N published runs",
        description="Write one self-contained HTML file (plots embedded, no network needed): with --run, "
                    "the run's report (written by topx run as RUNDIR/report.html) including the trend of the "
                    "last --runs published runs; with --runs alone, that trend only.")
    add_config_options(p, "--database-url", "--workdir")
    p.add_argument("--run", metavar="R", help="a run directory, or the id of a run in the work directory")
    p.add_argument("--runs", type=int, metavar="N", help="published runs in the trend (default 10)")
    p.add_argument("--out", metavar="FILE.html", help="where to write (default: RUNDIR/report.html with --run, "
                                                       "else runs-report.html)")
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> dict[str, Any]:
    from batch.publish import database_url
    from batch.report import write_report, write_trend_report

    if args.run is None and args.runs is None:
        raise ConfigError("topx report needs --run R (a run's report) or --runs N (the trend of N runs)")
    if args.runs is not None and args.runs < 1:
        raise ConfigError(f"--runs must be ≥ 1; got {args.runs}")
    cfg = config_from_args(args)
    url = database_url(cfg)
    if args.run is None:
        out = write_trend_report(url, args.out or "runs-report.html", args.runs)
        return {"command": "report", "runs": args.runs, "out": str(out)}
    run = _run_dir(args.run, cfg.workdir)
    out = write_report(run, args.out, database_url=url, trend_runs=args.runs or 10)
    return {"command": "report", "run": str(run.path), "out": str(out)}


def _run_dir(name: str, workdir: str):
    """A run directory path, else run ``name`` of the work directory (pulled from S3 if remote)."""
    from batch.rundir import RunDir
    from batch.runstore import RunStore

    if Path(name).is_dir():
        return RunDir(name)
    store = RunStore(workdir)
    if name in store.run_ids():
        return store.pull(name)
    raise NoRunError(f"no run directory {name} and no run {name!r} in {workdir}")
