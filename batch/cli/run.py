"""``topx run``: the whole job, ingest to publish, resumable."""

from __future__ import annotations

import argparse
from typing import Any

from batch.cli.common import add_config_options, config_from_args
from batch.pipeline import run_job


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="the whole job: ingest, train, repackage, search, evaluate, publish",
        description="Run the whole job. With no options it uses the embedded default: a synthetic "
                    "MovieLens-sized data set, implicit mode, top 100, published to a SQLite file in the work "
                    "directory. A failed run is resumed from its last finished stage by the next run with "
                    "the same settings.")
    add_config_options(p, "--data", "--format", "--split", "--holdout", "--mode", "--backend", "--device",
                       "--threshold", "--negatives", "--top", "--k", "--database-url", "--workdir",
                       hyperparameters=True)
    p.add_argument("--search-backend", dest="cfg_search__backend", choices=["local", "sagemaker"], default=None,
                   help="where the top-x search runs (default: search.backend, local)")
    p.add_argument("--method", dest="cfg_search__method", choices=["exact", "ivf", "hnsw"], default=None,
                   help="local search: exact or approximate")
    p.add_argument("--fresh", action="store_true", help="start a new run even if the last one failed")
    p.add_argument("--resume", metavar="RUN_ID", help="resume this run")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config_from_args(args)
    if args.cfg_train__backend == "sagemaker" and args.cfg_search__backend is None:
        # --backend sagemaker moves both heavy steps unless the search backend is given apart
        cfg = config_from_args(args, **{"search.backend": "sagemaker"})
    return run_job(cfg, fresh=args.fresh, resume=args.resume)
