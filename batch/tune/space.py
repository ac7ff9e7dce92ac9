"""What ``topx tune`` searches: one line per setting, ``dotted config key: (kind, low, high, log
scale)``. Which table depends on how the job trains: :data:`IALS` for implicit mode on the local
engine (the whole-data objective, :mod:`batch.train.ials`), :data:`SGD` otherwise (sampled
negatives, binary and regression modes, SageMaker's FM). Settings not listed keep the job's
values (the defaults unless a ``--config`` says otherwise)."""

from __future__ import annotations

from typing import Any

from batch.config import TrainConfig

Space = dict[str, tuple[str, float, float, bool]]

IALS: Space = {
    "train.hyperparameters.num_factors": ("int", 32, 256, True),
    "train.hyperparameters.epochs": ("int", 5, 30, False),
    "train.ials.unobserved_weight": ("float", 0.1, 30.0, True),
    "train.ials.reg": ("float", 1e-5, 1e-1, True),
    "train.ials.history_reg": ("float", 1e-3, 1.0, True),
    # the item-item member (where the data is small enough for it): β, EASE's λ, the sessions' γ,
    # the rating weights' exponent, the item features' g (its recency it chooses itself on each
    # trial's data)
    "train.ials.item_item": ("float", 0.1, 4.0, True),
    "train.ials.item_item_l2": ("float", 50.0, 3000.0, True),
    "train.ials.item_item_sessions": ("float", 0.0, 8.0, False),
    "train.ials.item_item_rating_exponent": ("float", 0.0, 1.0, False),
    "train.ials.item_item_features": ("float", 1.0, 1000.0, True),
}

SGD: Space = {
    "train.hyperparameters.num_factors": ("int", 16, 256, True),
    "train.hyperparameters.epochs": ("int", 3, 30, False),
    "train.hyperparameters.factors_lr": ("float", 1e-3, 5e-2, True),
    "train.hyperparameters.linear_lr": ("float", 1e-3, 5e-2, True),
    "train.hyperparameters.factors_wd": ("float", 1e-4, 1e-1, True),
    "train.hyperparameters.linear_wd": ("float", 1e-7, 1e-2, True),
    "train.negatives": ("int", 1, 16, True),
}


def space_for(train: TrainConfig) -> Space:
    """The table that applies to a job's training settings."""
    return IALS if train.uses_ials else SGD


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """One point of ``space`` drawn by an optuna trial: ``{dotted key: value}``."""
    out: dict[str, Any] = {}
    for key, (kind, low, high, log) in space.items():
        draw = trial.suggest_int if kind == "int" else trial.suggest_float
        out[key] = draw(key, low, high, log=log)
    return out


def current(values: dict[str, Any], space: Space) -> dict[str, Any]:
    """The job's own values of the searched settings (from ``JobConfig.to_dict()``), clipped into
    ``space``: the first trial, so the search never ends below where it started."""
    out: dict[str, Any] = {}
    for key, (kind, low, high, _) in space.items():
        value = values
        for part in key.split("."):
            value = value[part]
        out[key] = (int if kind == "int" else float)(min(max(value, low), high))
    return out
