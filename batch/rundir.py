"""A run directory: everything one training run leaves behind, and what serving reads back.

    RUNDIR/model.tar.gz   the SageMaker-format FM artifact (the seam)
    RUNDIR/layout.json    design-matrix column blocks (feature_dim, offsets, feature names)
    RUNDIR/users.npz      user id map: ``ids[k]`` is the external id of user index k
    RUNDIR/items.npz      item id map, likewise
    RUNDIR/train.npz, test.npz, *_features.npz, item_titles.json, report.json   the ingested data
    RUNDIR/metrics.json   held-out metrics of training (and of evaluation, once run)
    RUNDIR/config.json    the resolved job configuration
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch import lineage
from batch.artifact import FMModel, read_model
from batch.data.interactions import Dataset
from batch.errors import IdMapMismatchError, NoRunError, StageError
from batch.features.design import DesignLayout


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def model(self) -> Path:
        return self.path / "model.tar.gz"

    @property
    def layout(self) -> Path:
        return self.path / "layout.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    def file(self, name: str) -> Path:
        return self.path / name

    def require(self, *names: str) -> None:
        """Raise :class:`StageError` naming the first missing file (and the command that makes it);
        :class:`NoRunError` when the run directory itself does not exist."""
        if not self.path.is_dir():
            raise NoRunError(f"no run directory {self.path} (make one with topx train --out {self.path} or topx run)")
        for name in names:
            if not (self.path / name).exists():
                raise StageError(f"{self.path / name} is missing: run `topx train --out {self.path}` first")

    def load_dataset(self, *, against_model: bool = True) -> Dataset:
        """The ingested data; :class:`IdMapMismatchError` if its id maps are not the size of the
        model's user and item blocks (layout.json), once there is a model (``against_model``:
        False for training a new one)."""
        self.require("train.npz", "users.npz", "items.npz")
        dataset = Dataset.load(self.path)
        if against_model and self.layout.exists():
            layout = self.load_layout()
            if (layout.n_users, layout.n_items) != (dataset.n_users, dataset.n_items):
                raise IdMapMismatchError(
                    f"{self.path}: the model has {layout.n_users} users and {layout.n_items} items but the id "
                    f"maps hold {dataset.n_users} and {dataset.n_items}")
        return dataset

    def load_model(self) -> FMModel:
        """The FM; no member of model.tar.gz may decompress to more than a model of the shape that
        layout.json and config.json give takes (:class:`ArtifactTooLargeError`)."""
        self.require("model.tar.gz")
        return read_model(str(self.model), shape=self._model_shape())

    def _model_shape(self) -> tuple[int, int] | None:
        """The largest (feature_dim, k) the run's settings allow: ``num_factors``, plus the
        item-item member's most factors (``item_item_max_rank``, at most the number of items) when
        implicit training (iALS locally, or the SageMaker FM's artifact) may add it."""
        train = self.read_json("config.json").get("train", {})
        factors = train.get("hyperparameters", {}).get("num_factors")
        if not self.layout.exists() or not isinstance(factors, int):
            return None
        ials = train.get("ials", {})
        local = train.get("backend") == "local" and train.get("objective") in ("auto", "ials")
        weight = ials.get("item_item", 0) if local else ials.get("item_item_sagemaker", 0)
        layout = self.load_layout()
        if train.get("mode") == "implicit" and (local or train.get("backend") == "sagemaker") and weight > 0:
            factors += min(int(ials.get("item_item_max_rank", 0)), layout.n_items)  # its rank is ≤ both
        return layout.feature_dim, factors

    def load_layout(self) -> DesignLayout:
        self.require("layout.json")
        return DesignLayout.load(self.layout)

    def read_json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{name}.part"
        tmp.write_text(json.dumps(payload, indent=2, default=_plain), encoding="utf-8")
        tmp.replace(self.path / name)

    def save_derived(self, name: str, derived: Any, **extra: str) -> None:
        """Save a file made from the run's model (an object with ``save(path, **lineage)``),
        recording the model's digest in it (:mod:`batch.lineage`), and ``extra`` lineage such as
        the candidate rules' digest."""
        derived.save(self.path / name, **{lineage.KEY: lineage.model_digest(self.model)}, **extra)

    def load_derived(self, name: str, kind: Any, remedy: str) -> Any:
        """``kind.load`` of a file saved by :meth:`save_derived`; :class:`StaleArtifactError`
        (saying ``remedy``) when it was made from another model than the run's."""
        self.require(name, "model.tar.gz")
        lineage.check(self.model, lineage.recorded(self.path / name), str(self.path / name), remedy)
        return kind.load(self.path / name)

    def model_metrics(self, remedy: str) -> dict[str, Any]:
        """metrics.json, refused (:class:`StaleArtifactError`) if a section computed from a model
        records another model than the run's."""
        metrics = self.read_json("metrics.json")
        if metrics:
            self.require("model.tar.gz")
            lineage.check_metrics(self.model, metrics, str(self.metrics), remedy)
        return metrics

    def update_metrics(self, section: str, values: dict[str, Any]) -> dict[str, Any]:
        """Merge ``values`` under ``section`` of metrics.json and return the whole document; the
        model's sections (``train``, ``evaluate``) record the model's digest."""
        metrics = self.read_json("metrics.json")
        if section in lineage.MODEL_SECTIONS:
            values = lineage.stamped(self.model, values)
        metrics[section] = values
        self.write_json("metrics.json", metrics)
        return metrics


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
