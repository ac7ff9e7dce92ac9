"""``topx tune``: search the training settings (:mod:`batch.tune.space`) with optuna within a time
budget, on a validation split carved from the training part (the test split is never looked at),
scored as :mod:`batch.offline` scores every system (relevant = any held-out item, top k).

Writes ``best.toml`` (a job file ``topx run --config`` takes: the job's data and training settings
with the best point) and ``trials.csv`` (one row per trial: its settings, metrics and seconds).
The first trial is the job's own settings, so the best is never worse than where it started.
Training runs on the local engine whatever ``train.backend`` says; the job file keeps the backend.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batch.config import JobConfig, load_config
from batch.data.interactions import Dataset
from batch.errors import ConfigError, MissingDependencyError
from batch.offline import RELEVANCE, eval_users, fm_top, list_metrics, validation_split
from batch.tune import space
from batch.tune.jobfile import to_toml

log = logging.getLogger("topx.tune")
SECTIONS = ("data", "train")  # what a job file from tune sets: what to compute, never where to publish


@dataclass(frozen=True)
class TuneResult:
    best: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]]
    files: dict[str, str]


def tune(cfg: JobConfig, dataset: Dataset, out: str | Path, *, budget_s: float, trials: int | None = None,
         protocol: str = "random") -> TuneResult:
    """Search on ``dataset``'s training part within ``budget_s`` seconds (no trial starts when
    less than the median trial's time is left) or ``trials`` trials; write the files into ``out``."""
    optuna = require_optuna()
    validation = validation_split(dataset, protocol, cfg.data.holdout, cfg.data.seed)
    if not len(validation.test):
        raise ConfigError("no validation interactions: every user has a single training interaction")
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + budget_s
    with tempfile.TemporaryDirectory(prefix="topx-tune-") as scratch:
        validation.save(scratch)
        searched = space.space_for(cfg.train)
        objective = _Objective(cfg, validation, scratch, rows, deadline, trials, searched, protocol)
        sampler = optuna.samplers.TPESampler(seed=cfg.train.hyperparameters.seed)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.enqueue_trial(space.current(cfg.to_dict(), searched))
        study.optimize(objective, n_trials=trials, timeout=budget_s, catch=())
    best = {key: study.best_params[key] for key in searched}
    files = _write(cfg, best, rows, Path(out), study.best_value)
    return TuneResult(best, study.best_value, rows, files)


class _Objective:
    """One trial: train with the drawn settings on the validation split's training part, then
    score the lists against its held-out part."""

    def __init__(self, cfg: JobConfig, validation: Dataset, scratch: str, rows: list, deadline: float,
                 trials: int | None, searched: space.Space, protocol: str = "random"):
        self.cfg, self.validation, self.scratch, self.rows = cfg, validation, scratch, rows
        self.protocol = protocol
        self.deadline, self.trials, self.searched = deadline, trials, searched
        self.users = eval_users(validation)

    def __call__(self, trial) -> float:
        from batch.rundir import RunDir
        from batch.train.stage import train_run

        settings = space.suggest(trial, self.searched)
        Path(self.scratch, "vectors.npz").unlink(missing_ok=True)  # the last trial's
        # data.split: the item-item member chooses its recency on a carve held out as this validation split was
        cfg = load_config(env={}, base=self.cfg.to_dict(),
                          overrides={**settings, "train.backend": "local", "data.split": self.protocol})
        started = time.perf_counter()
        train_run(cfg, self.validation, RunDir(self.scratch))
        k = cfg.evaluate.k
        metrics = list_metrics(fm_top(cfg, self.scratch, self.users, k), self.users, self.validation, k)
        seconds = time.perf_counter() - started
        self.rows.append({"trial": trial.number, **_short(settings), **metrics, "seconds": round(seconds, 2)})
        self._progress(trial.number, metrics[f"ndcg@{k}"], k, seconds)
        left = self.deadline - time.monotonic()
        if left > 0 and not next_trial_fits(left, [row["seconds"] for row in self.rows]):
            log.info("stopping: %.0f s of the budget left, less than the median trial's time", left)
            trial.study.stop()
        return metrics[f"ndcg@{k}"]

    def _progress(self, number: int, value: float, k: int, seconds: float) -> None:
        best = max(row[f"ndcg@{k}"] for row in self.rows)
        left = max(0.0, self.deadline - time.monotonic())
        of = f"/{self.trials}" if self.trials else ""
        log.info("trial %d%s: validation ndcg@%d %.4f (best %.4f) in %.1f s; %.0f s of the budget left",
                 number + 1, of, k, value, best, seconds, left)


def next_trial_fits(left_s: float, durations: list[float]) -> bool:
    """Whether another trial is likely to end within the ``left_s`` seconds left, judged by the
    median of the trials so far (trial times vary with the drawn factors and epochs)."""
    return not durations or left_s >= float(np.median(durations))


def _short(settings: dict[str, Any]) -> dict[str, Any]:
    return {key.rsplit(".", 1)[-1]: value for key, value in settings.items()}


def _write(cfg: JobConfig, best: dict[str, Any], rows: list[dict[str, Any]], out: Path,
           value: float) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    tuned = load_config(env={}, base=cfg.to_dict(), overrides=best).to_dict()
    tree = {section: tuned[section] for section in SECTIONS}
    comment = (f"Written by topx tune: validation ndcg@{cfg.evaluate.k} {value:.4f} "
               f"(relevant = {RELEVANCE}), best of {len(rows)} trial(s).")
    (out / "best.toml").write_text(to_toml(tree, comment), encoding="utf-8")
    with open(out / "trials.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"config": str(out / "best.toml"), "trial_table": str(out / "trials.csv")}


def parse_budget(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``10m`` or ``1.5h``; :class:`ConfigError` otherwise."""
    units = {"s": 1, "m": 60, "h": 3600}
    body, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(body) * unit
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise ConfigError(f"--budget must be a positive duration such as 90s, 10m or 1h; got {text!r}")
    return seconds


def require_optuna():
    """The optuna module, or :class:`MissingDependencyError` naming the ``tune`` extra."""
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError("optuna", "tune", "topx tune") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna
