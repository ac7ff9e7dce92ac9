"""Training the re-ranker for a run, and reading it back.

NeuMF learns from the run's training interactions as implicit feedback (every distinct (user,
item) pair a positive, whatever its rating), in (user, item) order, and is saved as
``<run>/rerank/model.tar.gz``. The local engine calls :func:`batch.rerank.ncf.train_ncf`; with
``train.backend = "sagemaker"`` the same code runs as a SageMaker script-mode job
(:mod:`batch.rerank.entry`) on the same pairs written as ``interactions.npz``, so both give
the same weights for the same seed on CPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batch import lineage
from batch.aws.clients import NO_CLIENTS, AwsClients
from batch.config import JobConfig, NCFConfig
from batch.data.interactions import Dataset
from batch.errors import ArtifactError, ConfigError, IdMapMismatchError, MissingDependencyError

if TYPE_CHECKING:
    from batch.rerank.ncf import NCFSettings, NeuMF
    from batch.rundir import RunDir

log = logging.getLogger("topx.rerank")

MODEL_NAME = lineage.RERANK_MODEL
CHANNEL_NAME = "rerank/interactions.npz"
_SLACK = 1 << 20  # bytes of the artifact beyond its weights: settings.json, npy and tar headers


def import_ncf():
    """:mod:`batch.rerank.ncf`, which needs PyTorch (the ``local`` extra)."""
    try:
        from batch.rerank import ncf
    except ImportError as exc:
        if exc.name != "torch":
            raise
        raise MissingDependencyError("torch", "local", "The NeuMF re-ranker") from None
    return ncf


def training_pairs(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The distinct training (user, item) pairs, sorted by user then item: int64 (n,) each."""
    keys = np.unique(dataset.train.user.astype(np.int64) * dataset.n_items + dataset.train.item)
    return keys // dataset.n_items, keys % dataset.n_items


def ncf_settings(cfg: JobConfig) -> NCFSettings:
    """:class:`~batch.rerank.ncf.NCFSettings` of ``[rerank.ncf]``, on ``train.device``."""
    ncf = import_ncf()
    values = {name: str(getattr(cfg.rerank.ncf, name)) for name in NCFConfig.__dataclass_fields__}
    return ncf.NCFSettings.from_hyperparameters({**values, "device": cfg.train.device})


def train_reranker(cfg: JobConfig, run: RunDir, dataset: Dataset, clients: AwsClients = NO_CLIENTS) -> Path:
    """Train NeuMF on ``dataset``'s training interactions and save it as ``<run>/rerank/model.tar.gz``
    (on SageMaker when ``train.backend`` is sagemaker); returns that path."""
    if cfg.rerank.model != "ncf":
        raise ConfigError(f"rerank.model is {cfg.rerank.model!r}: there is no re-ranker to train")
    target = run.file(MODEL_NAME)
    target.parent.mkdir(parents=True, exist_ok=True)
    users, items = training_pairs(dataset)
    settings = ncf_settings(cfg)
    if cfg.train.backend == "sagemaker":
        made = _train_on_sagemaker(cfg, run, dataset, clients, users, items, settings)
        if made.resolve() != target.resolve():
            shutil.copyfile(made, target)
        return target
    ncf = import_ncf()
    model = ncf.train_ncf(users, items, dataset.n_users, dataset.n_items, settings)
    with tempfile.TemporaryDirectory(prefix="topx-ncf-") as tmp:
        ncf.save_artifact(model, settings, tmp)
        _write_atomically(target, ncf.pack_artifact(tmp))
    return target


def _train_on_sagemaker(cfg: JobConfig, run: RunDir, dataset: Dataset, clients: AwsClients, users: np.ndarray,
                        items: np.ndarray, settings: NCFSettings) -> Path:
    try:
        from batch.rerank.sagemaker import train_ncf_job
    except ImportError:
        raise ConfigError("the NeuMF re-ranker cannot train on SageMaker with this topx (no batch.rerank.sagemaker): "
                          "use train.backend local, or rerank.model none") from None
    channel = run.file(CHANNEL_NAME)
    import_ncf().save_interactions(channel, users, items, dataset.n_users, dataset.n_items)
    return Path(train_ncf_job(cfg, clients, run, channel, settings.to_hyperparameters()))


def _write_atomically(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def size_limit(cfg: JobConfig, dataset: Dataset) -> int:
    """The most bytes the artifact of a NeuMF of ``[rerank.ncf]``'s shape for ``dataset`` holds."""
    ncf = cfg.rerank.ncf
    widths = [int(w) for w in ncf.layers.split(",")]
    embedding = (dataset.n_users + dataset.n_items) * (ncf.factors + widths[0] // 2)
    dense = sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False)) + ncf.factors + widths[-1] + 1
    return 4 * (embedding + dense) + _SLACK


def load_reranker(cfg: JobConfig, run: RunDir, dataset: Dataset) -> NeuMF:
    """The run's NeuMF, checked against the data set's id maps; a broken artifact, or one larger
    than a model of ``[rerank.ncf]``'s shape, raises :class:`~batch.errors.ArtifactError`."""
    ncf = import_ncf()
    path = run.file(MODEL_NAME)
    if not path.exists():
        raise ArtifactError(f"{path} is missing: rerun the rerank stage (topx run --rerank ncf --resume "
                            f"{run.path.name} trains it again)")
    try:
        model, _ = ncf.load_artifact(path, limit=size_limit(cfg, dataset))
    except ncf.NCFError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    if (model.n_users, model.n_items) != (dataset.n_users, dataset.n_items):
        raise IdMapMismatchError(f"{path}: NeuMF has {model.n_users} users and {model.n_items} items but the run's id "
                                 f"maps hold {dataset.n_users} and {dataset.n_items}")
    return model


def summary(path: Path, dataset: Dataset) -> dict[str, Any]:
    """What the rerank stage records in ``run.json``."""
    users, items = training_pairs(dataset)
    return {"model": "ncf", "file": MODEL_NAME, "sha256": lineage.model_digest(path), "positives": int(users.size),
            "bytes": path.stat().st_size}
