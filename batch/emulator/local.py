"""topx's local engines as the emulator's :class:`~batch.emulator.engines.Engines`."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from batch.artifact import FMModel
from batch.config import FMHyperparameters
from batch.emulator.engines import Engines


def local_engines() -> Engines:
    """PyTorch FM training on the CPU, exact BLAS top-k, topx's held-out metrics."""
    from batch.serve.search.exact import exact_topk

    return Engines(fit_fm=_fit_fm, topk=lambda q, items, k: exact_topk(q, items, k), fm_metrics=_fm_metrics)


def _fit_fm(X: sp.csr_matrix, y: np.ndarray, hp: FMHyperparameters, predictor_type: str) -> FMModel:
    from batch.train.local import LocalFMTrainer

    return LocalFMTrainer("cpu").fit_rows(X, y, hp, predictor_type).model


def _fm_metrics(predictor_type: str, predicted: np.ndarray, label: np.ndarray) -> dict[str, float]:
    from batch.train.metrics import classifier_metrics, regression_metrics

    if predictor_type == "regressor":
        return regression_metrics(predicted, label)
    return classifier_metrics(predicted, label)
