"""Options shared by several commands, and how they become a :class:`JobConfig`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from batch.config import JobConfig, load_config

# option name → (config key, argparse keyword arguments)
OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "--data": ("data.path", {"metavar": "PATH", "help": "data set: MovieLens directory, file, or s3:// URI "
                              "(default: the embedded synthetic data set)"}),
    "--format": ("data.format", {"choices": ["auto", "movielens", "csv", "parquet"]}),
    "--split": ("data.split", {"choices": ["auto", "given", "random", "last", "none"]}),
    "--holdout": ("data.holdout", {"type": int, "metavar": "N", "help": "held-out interactions per user"}),
    "--mode": ("train.mode", {"choices": ["implicit", "binary", "regression"]}),
    "--backend": ("train.backend", {"choices": ["local", "sagemaker"]}),
    "--device": ("train.device", {"choices": ["auto", "cpu", "cuda"]}),
    "--threshold": ("train.threshold", {"type": float, "help": "binary mode: label = rating ≥ threshold"}),
    "--negatives": ("train.negatives", {"type": int, "metavar": "N",
                                        "help": "implicit mode: sampled negatives per positive"}),
    "--top": ("search.top", {"type": int, "metavar": "X", "help": "list length"}),
    "--database-url": ("publish.database_url", {"metavar": "URL", "help": "SQLAlchemy URL (default: SQLite "
                                                  "file in the work directory)"}),
    "--workdir": ("workdir", {"metavar": "DIR"}),
    "--k": ("evaluate.k", {"type": int, "help": "metrics at k"}),
    "--allow-regression": ("publish.gate.allow_regression", {
        "action": "store_true", "help": "publish even if the run's metric is below the popularity list's or the "
        "current run's (publish.gate.allow_regression; recorded with the run)"}),
}

HYPERPARAMETERS = ("num_factors", "epochs", "mini_batch_size", "bias_lr", "linear_lr", "factors_lr",
                   "bias_wd", "linear_wd", "factors_wd", "factors_init_sigma", "seed")


def add_config_options(parser: argparse.ArgumentParser, *names: str, hyperparameters: bool = False) -> None:
    """Add ``--config`` and the named shared options (and every FM hyperparameter if asked)."""
    parser.add_argument("--config", metavar="FILE", default=os.environ.get("TOPX_CONFIG"),
                        help="TOML job file (local path or s3:// URI); TOPX_* variables override it")
    for name in names:
        key, kwargs = OPTIONS[name]
        parser.add_argument(name, dest=_dest(key), default=None, **kwargs)
    if hyperparameters:
        group = parser.add_argument_group("FM hyperparameters (SageMaker names)")
        for hp in HYPERPARAMETERS:
            kind = int if hp in ("num_factors", "epochs", "mini_batch_size", "seed") else float
            group.add_argument(f"--{hp.replace('_', '-')}", dest=_dest(f"train.hyperparameters.{hp}"),
                               type=kind, default=None)


def config_from_args(args: argparse.Namespace, *, base: dict | None = None, **extra: Any) -> JobConfig:
    """The job configuration: defaults < ``base`` (e.g. a run's saved settings) < --config file <
    TOPX_* environment < options."""
    overrides = {dest[4:].replace("__", "."): value for dest, value in vars(args).items()
                 if dest.startswith("cfg_")}
    overrides.update(extra)
    text = None
    location = getattr(args, "config", None)
    if location and str(location).startswith("s3://"):
        from batch import storage

        text = storage.read_bytes(location).decode("utf-8")
    return load_config(location, overrides=overrides, text=text, base=base)


def _dest(key: str) -> str:
    return "cfg_" + key.replace(".", "__")
