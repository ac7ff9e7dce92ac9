"""``topx train``: ingest a data set and train a factorization machine into a run directory."""

from __future__ import annotations

import argparse
from typing import Any

from batch.cli.common import add_config_options, config_from_args
from batch.data import load_dataset
from batch.data.default import resolve_data
from batch.rundir import RunDir
from batch.train import make_trainer
from batch.train.stage import train_run


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train an FM and write RUNDIR/model.tar.gz (SageMaker FM format)",
        description="Read and split the data, build the design matrix, train a factorization machine and "
                    "write RUNDIR/model.tar.gz, the id maps, layout.json and metrics.json.")
    p.add_argument("--out", required=True, metavar="RUNDIR", help="run directory to write")
    add_config_options(p, "--data", "--format", "--split", "--holdout", "--mode", "--backend", "--device",
                       "--threshold", "--negatives", "--workdir", hyperparameters=True)
    p.add_argument("--no-features", dest="cfg_train__features", action="store_const", const=False,
                   default=None, help="ignore user/item side features")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config_from_args(args)
    dataset = load_dataset(resolve_data(cfg.data, cfg.workdir))
    run = RunDir(args.out)
    dataset.save(run.path)
    # SageMaker job names are made from the run id: the run directory's name
    return train_run(cfg, dataset, run, trainer=make_trainer(cfg, run_id=run.path.resolve().name))
