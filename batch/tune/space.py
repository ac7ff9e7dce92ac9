"""What ``topx tune`` searches: one line per setting, ``dotted config key: (kind, low, high, log
scale)``. Settings not listed keep the job's values (the defaults unless a ``--config`` says
otherwise). Ranges stay on the sides of the defaults where MovieLens-sized data was measured to
do well (see :class:`batch.config.FMHyperparameters`)."""

from __future__ import annotations

from typing import Any

SPACE: dict[str, tuple[str, float, float, bool]] = {
    "train.hyperparameters.num_factors": ("int", 16, 256, True),
    "train.hyperparameters.epochs": ("int", 3, 30, False),
    "train.hyperparameters.factors_lr": ("float", 1e-3, 5e-2, True),
    "train.hyperparameters.linear_lr": ("float", 1e-3, 5e-2, True),
    "train.hyperparameters.factors_wd": ("float", 1e-4, 1e-1, True),
    "train.hyperparameters.linear_wd": ("float", 1e-7, 1e-2, True),
    "train.negatives": ("int", 1, 16, True),
}


def suggest(trial: Any) -> dict[str, Any]:
    """One point of :data:`SPACE` drawn by an optuna trial: ``{dotted key: value}``."""
    out: dict[str, Any] = {}
    for key, (kind, low, high, log) in SPACE.items():
        draw = trial.suggest_int if kind == "int" else trial.suggest_float
        out[key] = draw(key, low, high, log=log)
    return out


def current(values: dict[str, Any]) -> dict[str, Any]:
    """The job's own values of the searched settings (from ``JobConfig.to_dict()``), clipped into
    the space: the first trial, so the search never ends below where it started."""
    out: dict[str, Any] = {}
    for key, (kind, low, high, _) in SPACE.items():
        value = values
        for part in key.split("."):
            value = value[part]
        out[key] = (int if kind == "int" else float)(min(max(value, low), high))
    return out
