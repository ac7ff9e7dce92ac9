"""Held-out metrics of a trained FM: classifier metrics at 0.5, or RMSE for regression."""

from __future__ import annotations

import numpy as np


def classifier_metrics(prob: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (predicted positive = probability ≥ 0.5), binary
    cross-entropy and ROC AUC. ``prob``, ``label``: float arrays of equal length."""
    prob = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    truth = label >= 0.5
    pred = prob >= 0.5
    tp = float(np.sum(pred & truth))
    precision = tp / max(pred.sum(), 1)
    recall = tp / max(truth.sum(), 1)
    return {
        "accuracy": float(np.mean(pred == truth)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "cross_entropy": float(-np.mean(np.where(truth, np.log(prob), np.log1p(-prob)))),
        "auc": roc_auc(prob, truth),
        "n": int(len(prob)),
    }


def regression_metrics(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    err = pred.astype(np.float64) - label
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))), "n": int(len(err))}


def roc_auc(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum statistic (ties get their average rank)."""
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    sorted_scores = score[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
