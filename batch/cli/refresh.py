"""``topx refresh``: some users' lists recomputed with the current run's model, published as a new run."""

from __future__ import annotations

import argparse
from typing import Any

from batch.cli.common import add_config_options, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "refresh", help="recompute some users' lists with the current run's model; publish them as a new run",
        description="For each user id in FILE (one a line; new sign-ups, users with new activity), read the job's "
                    "data source again for their current interactions, recompute their lists with the current "
                    "run's model and candidate rules (users unknown to the model: from their history or features "
                    "where the model's layout allows, else the popularity list), and publish a new run that carries "
                    "every other user's rows, the similar items, audiences and item attributes over from the "
                    "current run, in one transaction, through the same publish gate as a full run.")
    p.add_argument("--users", required=True, metavar="FILE", help="user ids, one a line (optional header user_id)")
    p.add_argument("--run", metavar="RUNDIR", help="the current run's run directory (default: <workdir>/runs/<run id>, "
                                                   "else where its model is)")
    p.add_argument("--run-id", metavar="R", help="id of the new run (default: a new one)")
    add_config_options(p, "--data", "--database-url", "--workdir", "--allow-regression")
    p.set_defaults(handler=_refresh)


def _refresh(args: argparse.Namespace) -> dict[str, Any]:
    from batch.refresh import refresh

    return refresh(config_from_args(args), args.users, lambda saved: config_from_args(args, base=saved),
                   run_dir=args.run, run_id=args.run_id)
