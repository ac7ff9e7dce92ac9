"""The report's plots, drawn with matplotlib's object API (no pyplot state) and returned as SVG
text: glyphs as paths, so the file shows the same without the fonts it was drawn with."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from batch.errors import MissingDependencyError

MODEL, POPULARITY = "#1f6fb4", "#e8862a"
RERANKED = "#2a9d4b"  # the NeuMF re-ranker's lists
_STYLE = {"svg.fonttype": "path", "svg.hashsalt": "topx", "font.size": 9, "axes.grid": True,
          "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}


def figure(width: float = 7.5, height: float = 3.0, ncols: int = 1):
    """A new matplotlib Figure with ``ncols`` axes side by side (width, height in inches)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("matplotlib", "report", "The run report") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def svg(fig) -> str:
    """The figure as SVG text, reproducible (fixed ids, no date)."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        fig.savefig(out, format="svg", dpi=150, metadata={"Date": None})
    return out.getvalue()


def _styled(draw):
    """Run ``draw`` with the report's style, so axes are made with it."""
    def wrapper(*args, **kwargs):
        try:
            import matplotlib
        except ImportError:
            raise MissingDependencyError("matplotlib", "report", "The run report") from None
        with matplotlib.rc_context(_STYLE):
            return svg(draw(*args, **kwargs))
    wrapper.__doc__ = draw.__doc__
    return wrapper


@_styled
def loss_per_epoch(history: Sequence[dict[str, Any]]):
    """Every numeric series of the training history (loss, held-out loss, …) against epoch."""
    fig, (ax,) = figure(height=2.6)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    names = [k for k in history[0] if k not in ("epoch", "samples") and isinstance(history[0][k], (int, float))]
    for name in names:
        ax.plot(epochs, [h.get(name, np.nan) for h in history], marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="loss", title="Training loss per epoch")
    ax.legend()
    return fig


@_styled
def metrics_vs_k(model: dict[str, float], popularity: dict[str, float], ks: Sequence[int],
                 reranked: dict[str, float] | None = None):
    """Precision, recall, NDCG and hit rate at each k: the model (and its re-ranked lists, if
    any) next to the popularity list."""
    names = ("precision", "recall", "ndcg", "hit_rate")
    fig, axes = figure(width=9, height=2.6, ncols=len(names))
    series = [("model", model, MODEL)] + ([("re-ranked", reranked, RERANKED)] if reranked else []) + \
        [("popularity", popularity, POPULARITY)]
    for ax, name in zip(axes, names, strict=True):
        for label, values, color in series:
            ax.plot(ks, [values.get(f"{name}@{k}", np.nan) for k in ks], marker="o", color=color, label=label)
        ax.set(xscale="log", xlabel="k", title=f"{name}@k")
        ax.set_xticks(list(ks), [str(k) for k in ks])
    axes[0].legend()
    return fig


@_styled
def long_tail(train_users: np.ndarray, recommended: np.ndarray):
    """Items by training popularity, most popular first: training users per item and how many
    published lists hold the item (symlog: zeros show)."""
    fig, (ax,) = figure(height=3.0)
    order = np.lexsort((np.arange(len(train_users)), -train_users))
    rank = np.arange(1, len(order) + 1)
    # rasterized: one small image instead of an SVG element per item, whatever the catalogue size
    ax.scatter(rank, recommended[order], s=4, color=MODEL, alpha=0.6, label="lists holding the item", rasterized=True)
    ax.plot(rank, train_users[order], color="#444444", label="training users of the item", rasterized=True)
    ax.set_yscale("symlog", linthresh=1)
    ax.set(xlabel="item, by training popularity (1 = most popular)", ylabel="count",
           title="Long tail: recommendations against training popularity")
    ax.legend()
    return fig


@_styled
def score_histograms(score: np.ndarray, probability: np.ndarray, from_model: np.ndarray):
    """Histograms of the published scores and probabilities, model rows and popularity rows."""
    fig, axes = figure(height=2.6, ncols=2)
    panels = ((axes[0], score, "score (FM prediction)", "Published scores"),
              (axes[1], probability, "probability", "Published probabilities"))
    for ax, values, name, title in panels:
        finite = np.isfinite(values)
        if not finite.any():
            ax.text(0.5, 0.5, f"no {name} (regression mode)", ha="center", va="center", transform=ax.transAxes)
            continue
        bins = np.histogram_bin_edges(values[finite], bins=40)
        parts = [values[finite & from_model], values[finite & ~from_model]]
        ax.hist(parts, bins=bins, stacked=True, color=[MODEL, POPULARITY], label=["model", "popularity fallback"])
        ax.set(xlabel=name, ylabel="rows", title=title)
        ax.legend()
    return fig


@_styled
def trend(labels: Sequence[str], series: dict[str, Sequence[float]], churn: dict[str, Sequence[float]]):
    """Figures of consecutive runs: accuracy and beyond-accuracy (left), churn (right)."""
    fig, axes = figure(width=10, height=3.2, ncols=2)
    x = np.arange(len(labels))
    panels = ((axes[0], series, "Metrics across runs"), (axes[1], churn, "Change against the run before"))
    for ax, group, title in panels:
        for name, values in group.items():
            ax.plot(x, np.asarray(values, float), marker="o", label=name)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
        ax.set(title=title, xlim=(-0.5, len(labels) - 0.5))
        if group:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
