"""A run's key figures under fixed names, whatever its k and x: what lists of runs show
(``topx runs``, the report's trend, ``sql/dashboard_runs.sql`` via ``runs.metrics -> 'figures'``).

``*_at_k`` are measured on the evaluation lists at the configured k; ``*_at_x`` on the published
lists (all users) at the list length x when the run has them, else on the evaluation lists at x;
``jaccard_at_k``, ``rbo`` and ``changed_share`` compare with the run that was current before.
"""

from __future__ import annotations

from typing import Any

ACCURACY = ("precision", "recall", "ndcg", "hit_rate")
BEYOND = ("catalogue_coverage", "gini", "novelty", "ild", "ild_genre", "top1pct_share")


def figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures of a run's metrics.json document; missing parts are left out."""
    evaluate, churn = metrics.get("evaluate") or {}, metrics.get("churn") or {}
    out: dict[str, Any] = {}
    k, x = evaluate.get("k"), evaluate.get("x")
    model, popularity = evaluate.get("model") or {}, evaluate.get("popularity") or {}
    beyond = evaluate.get("beyond") or {}
    at_x = beyond.get("published") or beyond.get("model") or {}
    if k is not None:
        out["k"] = k
        out.update({f"{name}_at_k": model[f"{name}@{k}"] for name in ACCURACY if f"{name}@{k}" in model})
        if f"ndcg@{k}" in popularity:
            out["popularity_ndcg_at_k"] = popularity[f"ndcg@{k}"]
        out.update({f"{name}_at_k": beyond["model"][f"{name}@{k}"] for name in BEYOND
                    if f"{name}@{k}" in beyond.get("model", {})})
    if x is not None:
        out["x"] = x
        out.update({f"{name}_at_x": at_x[f"{name}@{x}"] for name in BEYOND if f"{name}@{x}" in at_x})
    if churn.get("against") and not churn.get("same_run"):
        out.update(against=churn["against"], jaccard_at_k=churn.get(f"jaccard@{churn.get('k')}"),
                   rbo=churn.get("rbo"), changed_share=churn.get("changed_share"))
    return out


def with_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with its figures added under ``figures`` (what the publish step stores)."""
    return {**metrics, "figures": figures(metrics)}
