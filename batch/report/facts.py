"""What a report shows, read from a run directory (and, for the trend, the database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from batch.data.interactions import Dataset
from batch.errors import NoRunError, StageError
from batch.lists import TopLists
from batch.rundir import RunDir


@dataclass(frozen=True)
class RunFacts:
    """A run directory's files as read: ``state`` (run.json), ``config`` (config.json),
    ``metrics`` (metrics.json), each empty when missing; ``dataset`` and ``lists`` (lists.npz)
    None when missing."""

    run_id: str
    state: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    dataset: Dataset | None
    lists: TopLists | None

    @classmethod
    def load(cls, run: RunDir) -> RunFacts:
        if not run.path.is_dir():
            raise NoRunError(f"no run directory {run.path}")
        state, config, metrics = (run.read_json(n) for n in ("run.json", "config.json", "metrics.json"))
        if not (state or config or metrics):
            raise StageError(f"{run.path} holds no run.json, config.json or metrics.json: not a run directory "
                             f"(make one with topx run or topx train --out)")
        dataset = run.load_dataset() if run.file("train.npz").exists() else None
        lists = (run.load_derived("lists.npz", TopLists, f"rerun topx recommend --run {run.path}")
                 if run.file("lists.npz").exists() else None)
        return cls(state.get("run_id", run.path.name), state, config, metrics, dataset, lists)

    @property
    def evaluate(self) -> dict[str, Any]:
        return self.metrics.get("evaluate") or {}

    def title(self, item: int) -> str:
        """The item's title, else its external id."""
        titles = self.dataset.item_titles
        title = titles[item] if titles is not None else None
        return str(title) if title else f"item {self.dataset.items.ids[item]}"

    def training_users(self) -> np.ndarray:
        """int64 (n_items,): distinct training users per item."""
        ds = self.dataset
        return np.diff(ds.train.matrix(ds.n_users, ds.n_items).tocsc().indptr).astype(np.int64)
