"""``topx run``: the whole job, ingest to publish, resumable; with ``--shards N``, the first job of
a sharded run (see :mod:`batch.shards`)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from batch.cli.common import add_config_options, config_from_args
from batch.cli.shard import RUN_ID_ENV, SHARD_COUNT_ENV, env_int
from batch.errors import ConfigError
from batch.pipeline import run_job
from batch.shardplan import search_backend_with


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="the whole job: ingest, train, repackage, search, evaluate, publish",
        description="Run the whole job. With no options it uses the embedded default: a synthetic "
                    "MovieLens-sized data set, implicit mode, top 100, published to a SQLite file in the work "
                    "directory. A failed run is resumed from its last finished stage by the next run with "
                    "the same settings.")
    add_config_options(p, "--data", "--format", "--split", "--holdout", "--mode", "--backend", "--device",
                       "--threshold", "--negatives", "--top", "--k", "--database-url", "--workdir",
                       "--allow-regression", "--search-backend", "--method", "--rerank", "--candidates",
                       hyperparameters=True)
    p.add_argument("--fresh", action="store_true", help="start a new run even if the last one failed")
    p.add_argument("--resume", metavar="RUN_ID", help="resume this run")
    p.add_argument("--run-id", metavar="R", help=f"work on run R: resumed if it exists, created if not "
                                                  f"(default: ${RUN_ID_ENV})")
    p.add_argument("--shards", type=int, metavar="N",
                   help=f"stop after evaluating, with the run collecting N shards: then `topx shard` × N and "
                        f"`topx finalize` (default: ${SHARD_COUNT_ENV})")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config_from_args(args)
    if args.cfg_train__backend == "sagemaker" and args.cfg_search__backend is None:
        # --backend sagemaker moves both heavy steps unless the search backend is given apart
        cfg = config_from_args(args, **{"search.backend": search_backend_with("sagemaker", _shards(args))})
    run_id = args.run_id or os.environ.get(RUN_ID_ENV) or None
    if run_id and (args.fresh or args.resume):
        raise ConfigError("--run-id names the run to work on: drop --fresh and --resume (or unset TOPX_RUN_ID)")
    return run_job(cfg, fresh=args.fresh, resume=args.resume, run_id=run_id, shards=_shards(args))


def _shards(args: argparse.Namespace) -> int | None:
    return args.shards if args.shards is not None else env_int(SHARD_COUNT_ENV)
