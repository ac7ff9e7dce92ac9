"""The methods a user would pick instead of topx, as bench/quality.py runs them: popularity, EASE
(closed form, numpy) and implicit's ALS and BPR (the ``bench`` extra).

Each ``fit_*`` takes the users × items training matrix ``X`` (CSR, 1 where a pair occurs) and
returns a scorer: users (int (b,)) → float (b, n_items) scores, higher is better.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

Scorer = Callable[[np.ndarray], np.ndarray]

# Grids searched on the validation split (bench/quality.py), one entry per setting.
EASE_GRID = {"l2": (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)}
ALS_GRID = {"factors": (64, 128), "regularization": (1.0, 10.0, 30.0, 100.0), "alpha": (0.5, 1.0, 5.0),
            "iterations": (15,)}
BPR_GRID = {"factors": (64, 128), "learning_rate": (0.01, 0.05), "regularization": (0.001, 0.01),
            "iterations": (100, 300)}


def fit_popularity(X: sp.csr_matrix) -> Scorer:
    """Every user gets the items with the most training users first."""
    counts = np.asarray((X > 0).sum(0), np.float64).ravel()
    return lambda users: np.broadcast_to(counts, (len(users), len(counts))).copy()


def fit_ease(X: sp.csr_matrix, l2: float) -> Scorer:
    """EASE (Steck, WWW 2019): B = I − P·diag(1/diag P), P = (XᵀX + λI)⁻¹, scores X·B.

    With more items than users, the same P enters through the users × users system instead
    (Woodbury): X·P = (λI + XXᵀ)⁻¹X and diag P = (1 − Σ_u X_uj (X·P)_uj) / λ, so the items ×
    items inverse is never formed. Memory: dense X plus min(users, items)² floats."""
    dense = X.astype(np.float64).toarray()
    n_users, n_items = dense.shape
    if n_items <= n_users:
        P = np.linalg.inv(dense.T @ dense + l2 * np.eye(n_items))
        XP, diag = dense @ P, np.diag(P)
    else:
        XP = np.linalg.solve(dense @ dense.T + l2 * np.eye(n_users), dense)
        diag = (1.0 - (dense * XP).sum(0)) / l2
    scores = dense - XP / diag
    return lambda users: scores[users]


def fit_als(X: sp.csr_matrix, *, factors: int, regularization: float, alpha: float, iterations: int,
            seed: int = 0) -> Scorer:
    """implicit's AlternatingLeastSquares (Hu, Koren & Volinsky 2008) on the CPU."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                    iterations=iterations, random_state=seed)
    _fit(model, X)
    return _factor_scorer(model.user_factors, model.item_factors)


def fit_bpr(X: sp.csr_matrix, *, factors: int, learning_rate: float, regularization: float, iterations: int,
            seed: int = 0) -> Scorer:
    """implicit's BayesianPersonalizedRanking (Rendle et al. 2009) on the CPU; its factors carry
    an item bias column."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate,
                                        regularization=regularization, iterations=iterations, random_state=seed)
    _fit(model, X)
    return _factor_scorer(model.user_factors, model.item_factors)


def _fit(model, X: sp.csr_matrix) -> None:
    """implicit parallelises itself: a BLAS thread pool inside its threads only slows it down."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model.fit(X.astype(np.float32).tocsr(), show_progress=False)


def _factor_scorer(user_factors: np.ndarray, item_factors: np.ndarray) -> Scorer:
    users_f, items_f = np.asarray(user_factors, np.float32), np.asarray(item_factors, np.float32)
    return lambda users: users_f[users] @ items_f.T


FITS = {"ease": (fit_ease, EASE_GRID), "als": (fit_als, ALS_GRID), "bpr": (fit_bpr, BPR_GRID)}
