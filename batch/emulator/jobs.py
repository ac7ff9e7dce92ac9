"""What emulated SageMaker jobs do, part one: S3 access, channels, and FM training.

Each job reads its real S3 inputs from moto's S3 backend and writes real outputs there, as the
algorithm's container would; FM training writes ``model.tar.gz`` in the SageMaker FM format
(k-NN lives in :mod:`batch.emulator.knn`). A problem SageMaker would report becomes
:class:`EmulatedJobError`, whose text becomes the job's FailureReason. The fitting and the
metrics are the handed-in :class:`~batch.emulator.engines.Engines`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import scipy.sparse as sp
from moto.s3.models import s3_backends
from moto.utilities.utils import get_partition

from batch.artifact import FMModel, write_model
from batch.aws.recordio import RecordIOError, read_sparse
from batch.aws.requests import RECORDIO
from batch.config import FMHyperparameters
from batch.emulator.engines import Engines

FM_REQUIRED = {"feature_dim", "num_factors", "predictor_type"}
FM_OPTIONAL = {"epochs", "mini_batch_size", "clip_gradient", "eps", "rescale_grad", "bias_lr", "linear_lr",
               "factors_lr", "bias_wd", "linear_wd", "factors_wd"} | {
    f"{group}_init_{what}" for group in ("bias", "linear", "factors") for what in ("method", "scale", "sigma", "value")}


class EmulatedJobError(Exception):
    """The job fails; the message is its FailureReason."""


class MotoS3:
    """Objects in moto's S3 backend of one account, read and written directly (no HTTP)."""

    def __init__(self, account_id: str, region: str):
        self.backend = s3_backends[account_id][get_partition(region)]

    def keys(self, uri: str) -> list[tuple[str, str]]:
        """``(bucket, key)`` of every object whose key starts with the URI's key (S3Prefix), sorted."""
        bucket, prefix = split(uri)
        try:
            names = list(dict(self.backend.get_bucket(bucket).keys))
        except Exception:  # moto's MissingBucket
            raise EmulatedJobError(f"ClientError: no such bucket {bucket}") from None
        return [(bucket, k) for k in sorted(names) if k.startswith(prefix) and self._exists(bucket, k)]

    def _exists(self, bucket: str, key: str) -> bool:
        return self.backend.get_object(bucket, key) is not None

    def read(self, bucket: str, key: str) -> bytes:
        found = self.backend.get_object(bucket, key)
        if found is None:
            raise EmulatedJobError(f"ClientError: no such object s3://{bucket}/{key}")
        return bytes(found.value)

    def write(self, uri: str, data: bytes) -> None:
        self.backend.put_object(*split(uri), data)


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``("bucket", "key")``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def train_fm(job: Any, s3: MotoS3, engines: Engines) -> list[dict[str, Any]]:
    """An FM training job: fit ``engines.fit_fm`` on the ``train`` channel, write model.tar.gz,
    and return the final metrics (test metrics when there is a ``test`` channel)."""
    hyper = hyperparameters(job.hyper_parameters, FM_REQUIRED, FM_OPTIONAL)
    kind, dim = hyper["predictor_type"], int_hyperparameter(hyper, "feature_dim")
    if kind not in ("binary_classifier", "regressor"):
        raise EmulatedJobError(f"ClientError: predictor_type {kind!r} is not binary_classifier or regressor")
    X, y = read_channel(job, s3, "train", dim, labels=True)
    model = engines.fit_fm(X, y, fm_settings(hyper), kind)
    buffer = io.BytesIO()
    write_model(model, buffer, hyperparameters=job.hyper_parameters)
    s3.write(job.model_artifacts["S3ModelArtifacts"], buffer.getvalue())
    return _fm_metrics(job, s3, engines, model, dim)


def fm_settings(hyper: dict[str, str]) -> FMHyperparameters:
    """The local engine's hyperparameters from the job's strings (defaults where not given)."""
    defaults = FMHyperparameters()
    fields = {name: type(value) for name, value in vars(defaults).items()}
    try:
        return FMHyperparameters(**{k: fields[k](v) for k, v in hyper.items() if k in fields and k != "seed"})
    except (ValueError, TypeError) as exc:
        raise EmulatedJobError(f"ClientError: invalid hyperparameter value: {exc}") from None


def _fm_metrics(job: Any, s3: MotoS3, engines: Engines, model: FMModel, dim: int) -> list[dict[str, Any]]:
    if not any(c["ChannelName"] == "test" for c in job.input_data_config):
        return []
    X, y = read_channel(job, s3, "test", dim, labels=True)
    found = engines.fm_metrics(model.predictor_type, model.predict(X), y)
    if model.predictor_type == "regressor":
        names = {"test:rmse": found["rmse"]}
    else:
        names = {"test:binary_classification_accuracy": found["accuracy"],
                 "test:binary_classification_cross_entropy": found["cross_entropy"]}
    return [{"MetricName": k, "Value": float(v)} for k, v in names.items()]


def read_channel(job: Any, s3: MotoS3, name: str, width: int, *, labels: bool) -> tuple[sp.csr_matrix, np.ndarray]:
    """Every record of channel ``name`` (all objects under its prefix, in key order)."""
    config = next((c for c in job.input_data_config if c["ChannelName"] == name), None)
    if config is None:
        raise EmulatedJobError(f"ClientError: the {name!r} channel is required")
    if config.get("ContentType") != RECORDIO:
        raise EmulatedJobError(f"ClientError: channel {name} content type {config.get('ContentType')!r} "
                               f"is not supported (use {RECORDIO})")
    objects = s3.keys(config["DataSource"]["S3DataSource"]["S3Uri"])
    parts = [read_records(s3, bucket, key, width, labels) for bucket, key in objects]
    if not parts:
        raise EmulatedJobError(f"ClientError: channel {name} holds no objects")
    return sp.vstack([p[0] for p in parts]).tocsr(), np.concatenate([p[1] for p in parts])


def read_records(s3: MotoS3, bucket: str, key: str, width: int, labels: bool) -> tuple[sp.csr_matrix, np.ndarray]:
    """One recordIO-protobuf object as rows of ``width`` columns (and labels when ``labels``)."""
    try:
        X, y = read_sparse(io.BytesIO(s3.read(bucket, key)), file=f"s3://{bucket}/{key}")
    except RecordIOError as exc:
        raise EmulatedJobError(f"ClientError: unable to read data: {exc}") from None
    if X.shape[0] and X.shape[1] != width:
        raise EmulatedJobError(f"ClientError: s3://{bucket}/{key} has {X.shape[1]} features, "
                               f"feature_dim is {width}")
    if labels and y is None:
        raise EmulatedJobError(f"ClientError: s3://{bucket}/{key} has records without a label")
    return X.astype(np.float32), (np.zeros(X.shape[0], np.float32) if y is None else y.astype(np.float32))


def hyperparameters(given: dict[str, str], required: set[str], optional: set[str]) -> dict[str, str]:
    """``given``, checked as the built-in algorithms check theirs: all required, nothing unknown."""
    missing, unknown = required - given.keys(), given.keys() - required - optional
    if missing:
        raise EmulatedJobError(f"ClientError: missing required hyperparameter(s): {', '.join(sorted(missing))}")
    if unknown:
        raise EmulatedJobError(f"ClientError: additional hyperparameters are not allowed: {', '.join(sorted(unknown))}")
    return dict(given)


def int_hyperparameter(hyper: dict[str, str], name: str) -> int:
    """A positive integer hyperparameter."""
    try:
        value = int(hyper[name])
    except ValueError:
        raise EmulatedJobError(f"ClientError: hyperparameter {name}={hyper[name]!r} is not an integer") from None
    if value < 1:
        raise EmulatedJobError(f"ClientError: hyperparameter {name} must be positive, got {value}")
    return value
