"""The train stage: a data set in, a run directory out (model.tar.gz, layout, id maps, metrics)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from scipy.special import expit

from batch.artifact import FMModel, write_model
from batch.artifact.fm import entity_halves
from batch.config import JobConfig
from batch.data.interactions import Dataset
from batch.features.design import Design, build_design
from batch.log import redact_tree
from batch.rundir import RunDir
from batch.train import Trainer, make_trainer
from batch.train.metrics import classifier_metrics, regression_metrics
from batch.train.samples import PREDICTOR_TYPES, Samples, held_out_samples, training_source

log = logging.getLogger("topx.train")
# numbers of the pairs' factor rows gathered at once by pair_decisions (2^20 float64: 8 MiB a side)
PAIR_CELLS = 1 << 20


def train_run(cfg: JobConfig, dataset: Dataset, run: RunDir, *, trainer: Trainer | None = None) -> dict[str, Any]:
    """Train on ``dataset.train`` (already saved in the run directory by the caller) and write the
    model; returns the stage summary. The layout is written before training starts, the model and
    metrics after, each file atomically, so an interrupted run never leaves a model that
    disagrees with its layout.
    """
    t, hp = cfg.train, cfg.train.hyperparameters
    started = time.perf_counter()
    design = build_design(dataset, use_features=t.features, history=t.uses_ials and t.ials.history)
    design.layout.save(run.layout)
    run.write_json("config.json", redact_tree(cfg.to_dict()))
    source = training_source(dataset, t.mode, threshold=t.threshold, negatives=t.negatives, seed=hp.seed)
    held_out = held_out_samples(dataset, t.mode, threshold=t.threshold, negatives=t.negatives, seed=hp.seed)
    log.info("training %s FM: %d users, %d items, feature_dim %d, %d training interactions",
             t.mode, dataset.n_users, dataset.n_items, design.layout.feature_dim, len(dataset.train))
    result = (trainer or make_trainer(cfg)).fit(design, source, held_out, hp, PREDICTOR_TYPES[t.mode])
    write_model(result.model, str(run.model),
                hyperparameters=hp.to_sagemaker(design.layout.feature_dim, PREDICTOR_TYPES[t.mode]))
    test = held_out_metrics(result.model, design, held_out, t.mode)
    run.write_json("metrics.json", {})  # a new model: every figure of an earlier one in this directory goes
    run.update_metrics("train", {"mode": t.mode, "test": test, "engine": result.details})
    return {
        "stage": "train", "run_dir": str(run.path), "mode": t.mode, "backend": t.backend,
        "users": dataset.n_users, "items": dataset.n_items, "feature_dim": design.layout.feature_dim,
        "train_interactions": len(dataset.train), "test": test,
        "samples_per_s": result.details.get("samples_per_s"), "device": result.details.get("device"),
        "seconds": round(time.perf_counter() - started, 2),
    }


def held_out_metrics(model: FMModel, design: Design, samples: Samples, mode: str) -> dict[str, float]:
    """Binary/implicit: accuracy, F1, cross-entropy at 0.5 (and AUC); regression: RMSE. Empty
    when there is no held-out split."""
    if not len(samples):
        return {}
    scores = pair_decisions(model, design, samples.user, samples.item)
    if mode == "regression":
        return regression_metrics(scores, samples.label)
    return classifier_metrics(expit(scores).astype(np.float32), samples.label)


def pair_decisions(model: FMModel, design: Design, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """float32 (n,): ŷ of the pairs (user[r], item[r]), as ``model.decision`` of their design rows
    but through each entity's half (the repackaging identity), so an entity's row is multiplied
    once, not once per pair: long user rows (the history block) stay cheap on big test sets."""
    p_u, own_u = entity_halves(model, design.users)
    p_i, own_i = entity_halves(model, design.items)
    out = np.empty(len(user), np.float32)
    step = max(1, PAIR_CELLS // max(1, p_u.shape[1]))  # bounded memory, and cache-sized gathers when k is large
    for start in range(0, len(user), step):
        u, i = user[start:start + step], item[start:start + step]
        out[start:start + len(u)] = model.b + own_u[u] + own_i[i] + np.einsum("nk,nk->n", p_u[u], p_i[i])
    return out
