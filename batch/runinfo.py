"""What the ``runs`` table records about a run directory: one builder for every publishing path
(``topx run``'s publish and collect stages, ``topx finalize`` and ``topx publish``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from batch.config import JobConfig
from batch.data.interactions import Dataset
from batch.rundir import RunDir

if TYPE_CHECKING:
    from batch.publish import RunInfo


def run_info(cfg: JobConfig, run: RunDir, run_id: str, dataset: Dataset) -> RunInfo:
    """Settings, metrics (with the run's figures), counts and model location of the run in ``run``;
    :class:`~batch.errors.StaleArtifactError` when its metrics were computed from another model."""
    from batch.metrics.figures import with_figures
    from batch.publish import RunInfo

    counts = {"users": dataset.n_users, "items": dataset.n_items, "train_interactions": len(dataset.train),
              "test_interactions": len(dataset.test)}
    return RunInfo(run_id=run_id, config=cfg.to_dict(), model_location=str(run.model.resolve()),
                   started_at=started_at(run), counts=counts,
                   metrics=with_figures(run.model_metrics(f"rerun topx evaluate --run {run.path}")))


def started_at(run: RunDir) -> datetime:
    """When the run started: ``run.json``'s record for a ``topx run`` directory; for one of
    ``topx train --out``, which keeps no such record, when its model was written."""
    if run.file("run.json").exists():
        return datetime.fromisoformat(run.read_json("run.json")["started_at"])
    return datetime.fromtimestamp(run.model.stat().st_mtime, UTC)
