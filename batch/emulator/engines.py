"""What emulated jobs compute with, handed to the emulator (so it imports no engine itself)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.artifact import FMModel
from batch.config import FMHyperparameters


@dataclass(frozen=True)
class Engines:
    """The functions behind emulated FM training and k-NN transforms.

    ``fit_fm(X, y, hp, predictor_type)``: an FM fitted on CSR float32 (n, feature_dim) rows with
    float32 (n,) labels. ``topk(queries, items, k)``: for float32 (n, d) queries and (m, d) items,
    int32 (n, k) item positions and float32 (n, k) inner products, best first, -1 past the items.
    ``fm_metrics(predictor_type, predicted, label)``: held-out metrics by name (``accuracy`` and
    ``cross_entropy`` for a classifier, ``rmse`` for a regressor).
    """

    fit_fm: Callable[[sp.csr_matrix, np.ndarray, FMHyperparameters, str], FMModel]
    topk: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    fm_metrics: Callable[[str, np.ndarray, np.ndarray], dict[str, float]]
