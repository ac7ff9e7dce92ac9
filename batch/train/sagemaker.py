"""The SageMaker training engine: SageMaker's built-in Factorization Machines, driven by boto3.

The design rows of the training samples (and of the held-out samples, as the ``test`` channel)
are written as recordIO-protobuf in ``channel_shards`` objects each, the training job is created
(or found: see :mod:`batch.aws.sagemaker_jobs`), and its ``model.tar.gz`` is read with the same
code that reads the local engine's. The job reads a fixed data set, so in implicit mode the
channel holds ``epochs`` copies of the positives, each with its own freshly drawn negatives, and
the job makes one pass over it: negatives are redrawn every epoch as on the local engine's
sampled objective. Rows are shuffled before they are cut into objects, since each instance of a
``ShardedByS3Key`` job trains on its own objects only and samples come positives first.
"""

from __future__ import annotations

import logging
from typing import Any, BinaryIO

import numpy as np

from batch.artifact import ModelContentError, read_model
from batch.aws.channels import S3Objects, split_uri
from batch.aws.clients import NO_CLIENTS, AwsClients
from batch.aws.images import image_uri
from batch.aws.recordio import write_sparse
from batch.aws.requests import channel, training_request, volume_gb
from batch.aws.sagemaker_jobs import TRAINING, JobOutcome, JobRunner, fingerprint
from batch.aws.session import SageMakerSession
from batch.config import FMHyperparameters, JobConfig
from batch.errors import ConfigError
from batch.features.design import Design
from batch.train import FitResult
from batch.train.samples import Samples, SampleSource

log = logging.getLogger("topx.train")

_ROWS_PER_WRITE = 1 << 18  # design rows built and encoded at a time: bounds memory


class SageMakerFMTrainer:
    """Trains an FM as a SageMaker training job of run ``run_id``; see the module docstring.

    ``clients``: boto3 clients to use instead of creating them.
    """

    def __init__(self, cfg: JobConfig, *, run_id: str, clients: AwsClients = NO_CLIENTS):
        self.cfg = cfg
        self.session = SageMakerSession(cfg.sagemaker, run_id, sagemaker_client=clients.sagemaker,
                                        s3_client=clients.s3)
        self.jobs = JobRunner(self.session)

    def fit(self, design: Design, source: SampleSource, test: Samples, hp: FMHyperparameters,
            predictor_type: str) -> FitResult:
        """Train on ``source.epoch(0)`` (``test`` becomes the job's test channel when not empty)
        and return the model read from the job's ``model.tar.gz``."""
        self._check_settings()
        train, hyper = training_set(source, hp, design.layout.feature_dim, predictor_type)
        inputs = fingerprint(hyper, vars(hp), design.users, design.items, train.user, train.item, train.label,
                             test.user, test.item, test.label)

        def create(name: str, tags: list[dict[str, str]]) -> None:
            self._create(name, tags, design, train, test, hyper, hp.seed)

        outcome = self.jobs.ensure(TRAINING, "fm", inputs, create)
        model = self._read_model(outcome, design, predictor_type)
        return FitResult(model, self._details(outcome, len(train)))

    def _check_settings(self) -> None:
        s = self.cfg.sagemaker
        self.session.check()
        image_uri("fm", self.session.region, s.fm_image)
        if s.use_spot and s.max_wait_s < s.max_runtime_s:
            raise ConfigError(f"sagemaker.max_wait_s ({s.max_wait_s}) must be at least sagemaker.max_runtime_s "
                              f"({s.max_runtime_s}) with managed spot training")
        if s.channel_shards < s.train_instance_count:
            raise ConfigError(f"sagemaker.channel_shards ({s.channel_shards}) must be at least "
                              f"sagemaker.train_instance_count ({s.train_instance_count}): each instance "
                              "trains on whole objects of the channel")

    def _create(self, name: str, tags: list[dict[str, str]], design: Design, train: Samples, test: Samples,
                hyper: dict[str, str], seed: int) -> None:
        """Upload the channels, then create the training job."""
        objects = S3Objects(self.session.s3, self.session.bucket)
        shards = self.cfg.sagemaker.channel_shards
        order = np.random.default_rng(seed).permutation(len(train))
        parts = objects.upload_parts(self.session.key("fm", "train"), len(train), shards,
                                     _rows_writer(design, train, order))
        channels = [channel("train", self.session.uri("fm", "train") + "/", "ShardedByS3Key")]
        if len(test):
            parts += objects.upload_parts(self.session.key("fm", "test"), len(test), shards,
                                          _rows_writer(design, test, np.arange(len(test))))
            channels.append(channel("test", self.session.uri("fm", "test") + "/", "FullyReplicated"))
        else:
            objects.clear(self.session.key("fm", "test"))
        self.session.sagemaker.create_training_job(**self._request(name, tags, hyper, channels, volume_gb(parts)))

    def _request(self, name: str, tags: list[dict[str, str]], hyper: dict[str, str], channels: list[dict],
                 volume: int) -> dict[str, Any]:
        s = self.cfg.sagemaker
        image = image_uri("fm", self.session.region, s.fm_image)
        return training_request(self.session, name=name, stage="fm", image=image,
                                hyperparameters=hyper, channels=channels, instance_type=s.train_instance_type,
                                instance_count=s.train_instance_count, volume=volume, tags=tags, spot=s.use_spot)

    def _read_model(self, outcome: JobOutcome, design: Design, predictor_type: str):
        uri = outcome.description["ModelArtifacts"]["S3ModelArtifacts"]
        bucket, key = split_uri(uri)
        model = read_model(S3Objects(self.session.s3, bucket).read(key), predictor_type=predictor_type,
                           shape=(design.layout.feature_dim, self.cfg.train.hyperparameters.num_factors))
        if model.feature_dim != design.layout.feature_dim:
            raise ModelContentError(f"{uri}: the model has feature_dim {model.feature_dim}, the design "
                                    f"{design.layout.feature_dim}")
        log.info("read the FM of %s from %s", outcome.name, uri)
        return model

    def _details(self, outcome: JobOutcome, samples: int) -> dict[str, Any]:
        found, s = outcome.description, self.cfg.sagemaker
        return {
            "engine": "sagemaker", "job_name": outcome.name, "reused": outcome.reused,
            "artifact": found["ModelArtifacts"]["S3ModelArtifacts"],
            "instance_type": s.train_instance_type, "instance_count": s.train_instance_count, "spot": s.use_spot,
            "billable_seconds": found.get("BillableTimeInSeconds"),
            "training_seconds": found.get("TrainingTimeInSeconds"),
            "final_metrics": {m["MetricName"]: m["Value"] for m in found.get("FinalMetricDataList", [])},
            "samples": samples,
        }


def training_set(source: SampleSource, hp: FMHyperparameters, feature_dim: int,
                 predictor_type: str) -> tuple[Samples, dict[str, str]]:
    """The channel's samples and the job's hyperparameters. Implicit mode: ``hp.epochs`` epochs
    of samples (fresh negatives each) trained in one pass; other modes: the samples once,
    ``hp.epochs`` passes."""
    hyper = hp.to_sagemaker(feature_dim, predictor_type)
    if source.mode != "implicit":
        return source.epoch(0), hyper
    epochs = [source.epoch(e) for e in range(hp.epochs)]
    train = Samples(*(np.concatenate([getattr(e, f) for e in epochs]) for f in ("user", "item", "label")))
    return train, {**hyper, "epochs": "1"}


def _rows_writer(design: Design, samples: Samples, order: np.ndarray):
    """Writes rows ``[start, stop)`` of ``samples`` taken in ``order``, a bounded chunk at a time."""

    def write(stream: BinaryIO, start: int, stop: int) -> None:
        for low in range(start, stop, _ROWS_PER_WRITE):
            rows = order[low:min(stop, low + _ROWS_PER_WRITE)]
            write_sparse(stream, design.pair_rows(samples.user[rows], samples.item[rows]), samples.label[rows])

    return write
