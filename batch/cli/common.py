"""Options shared by several commands, and how they become a :class:`JobConfig`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from batch.config import JobConfig, describe, load_config

# option name → (config key, argparse keyword arguments beyond what the setting's type and
# description give: help, choices, metavar and the shown default come from batch.config)
OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "--data": ("data.path", {"metavar": "PATH"}),
    "--format": ("data.format", {}),
    "--split": ("data.split", {}),
    "--holdout": ("data.holdout", {}),
    "--mode": ("train.mode", {}),
    "--backend": ("train.backend", {}),
    "--device": ("train.device", {}),
    "--threshold": ("train.threshold", {"metavar": "RATING"}),
    "--negatives": ("train.negatives", {}),
    "--top": ("search.top", {"metavar": "X"}),
    "--search-backend": ("search.backend", {}),
    "--method": ("search.method", {}),
    "--rerank": ("rerank.model", {}),
    "--candidates": ("rerank.candidates", {"metavar": "N"}),
    "--database-url": ("publish.database_url", {"metavar": "URL"}),
    "--workdir": ("workdir", {"metavar": "DIR"}),
    "--k": ("evaluate.k", {"metavar": "K"}),
    "--allow-regression": ("publish.gate.allow_regression", {"action": "store_true"}),
}

HYPERPARAMETERS = ("num_factors", "epochs", "mini_batch_size", "bias_lr", "linear_lr", "factors_lr",
                   "bias_wd", "linear_wd", "factors_wd", "factors_init_sigma", "seed")
_METAVARS = {int: "N", float: "VALUE", str: "TEXT"}


def add_config_options(parser: argparse.ArgumentParser, *names: str, hyperparameters: bool = False) -> None:
    """Add ``--config`` and the named shared options (and every FM hyperparameter if asked)."""
    parser.add_argument("--config", metavar="FILE", default=os.environ.get("TOPX_CONFIG"),
                        help="TOML job file (local path or s3:// URI); TOPX_* variables override it")
    for name in names:
        key, kwargs = OPTIONS[name]
        add_setting(parser, name, key, **kwargs)
    if hyperparameters:
        group = parser.add_argument_group("FM hyperparameters (SageMaker names)")
        for hp in HYPERPARAMETERS:
            add_setting(group, f"--{hp.replace('_', '-')}", f"train.hyperparameters.{hp}")


def add_setting(parser: Any, name: str, key: str, **kwargs: Any) -> None:
    """Option ``name`` for setting ``key``: its description, choices, type and default from
    :mod:`batch.config` (the environment variable and ``--config`` file set it too)."""
    doc, default, allowed = describe(key)
    shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else default
    kwargs.setdefault("help", f"{doc} (default: {shown}; setting {key})")
    if allowed is not None:
        kwargs.setdefault("choices", list(allowed))
    elif kwargs.get("action") is None:
        kind = type(default) if default is not None else str
        kwargs.setdefault("metavar", _METAVARS.get(kind, "VALUE"))
        if kind in (int, float):
            kwargs.setdefault("type", kind)
    parser.add_argument(name, dest=_dest(key), default=None, **kwargs)


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
