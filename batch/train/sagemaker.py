"""The SageMaker training engine: SageMaker's built-in Factorization Machines, driven by boto3.

The design rows of the training samples (and of the held-out samples, as the ``test`` channel)
are written as recordIO-protobuf in ``channel_shards`` objects each, the training job is created
(or found: see :mod:`batch.aws.sagemaker_jobs`), and its ``model.tar.gz`` is read with the same
code that reads the local engine's. The job reads a fixed data set, so in implicit mode the
channel holds ``epochs`` copies of the positives, each with its own freshly drawn negatives, and
the job makes one pass over it: negatives are redrawn every epoch as on the local engine's
sampled objective. The epochs are drawn and written one at a time (peak memory is one epoch,
not ``epochs`` of them), each shuffled on its own before the rows are cut into objects, since each
instance of a ``ShardedByS3Key`` job trains on its own objects only and samples come positives first.

In implicit mode, where the data is small enough, the FM read from the job gets the closed-form
item-item member (EASE, :mod:`batch.train.item_item`) as a block of factors of its own, as the
local engine's iALS does, weighted by ``train.ials.item_item_sagemaker`` (the FM's scores are
logits): the run's model.tar.gz is that FM, still one SageMaker FM artifact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from batch.artifact import FMModel, ModelContentError, read_model
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
from batch.train.ials_engine import item_item_settings, member_carve
from batch.train.item_item import NO_MEMBER, Carve, ItemItemSettings, feature_rows, fit_member, fm_with_item_item
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
        and return the model read from the job's ``model.tar.gz`` (with the item-item member,
        :func:`with_item_item`)."""
        self._check_settings()
        train, hyper = training_set(source, hp, design.layout.feature_dim, predictor_type)
        inputs = fingerprint(hyper, vars(hp), design.users, design.items, *train.inputs(),
                             test.user, test.item, test.label)

        def create(name: str, tags: list[dict[str, str]]) -> None:
            self._create(name, tags, design, train, test, hyper)

        outcome = self.jobs.ensure(TRAINING, "fm", inputs, create)
        model = self._read_model(outcome, design, predictor_type)
        model, member = with_item_item(model, design, source, item_item_settings(self.cfg.train.ials, "sagemaker"),
                                       member_carve(self.cfg.data))
        return FitResult(model, {**self._details(outcome, len(train)), **member})

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

    def _create(self, name: str, tags: list[dict[str, str]], design: Design, train: Channel, test: Samples,
                hyper: dict[str, str]) -> None:
        """Upload the channels, then create the training job."""
        objects = S3Objects(self.session.s3, self.session.bucket)
        shards = self.cfg.sagemaker.channel_shards
        parts = objects.upload_parts(self.session.key("fm", "train"), len(train), shards, train.writer(design))
        channels = [channel("train", self.session.uri("fm", "train") + "/", "ShardedByS3Key")]
        if len(test):
            parts += objects.upload_parts(self.session.key("fm", "test"), len(test), shards,
                                          lambda stream, start, stop: _write_rows(stream, design, test, start, stop))
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


class Channel:
    """The training channel: ``blocks`` blocks of samples in order, each shuffled on its own, drawn
    one at a time (``draw(b)``) so that at most one block is held in memory."""

    def __init__(self, draw: Callable[[int], Samples], blocks: int, orders: Callable[[int], np.random.Generator],
                 inputs: tuple[Any, ...]):
        self._draw, self.blocks, self._orders, self._inputs = draw, blocks, orders, inputs
        self._lengths: list[int] | None = None

    def inputs(self) -> tuple[Any, ...]:
        """What decides the channel's content, for the job's fingerprint."""
        return self._inputs

    def block(self, b: int) -> Samples:
        """Block ``b`` in channel order."""
        s = self._draw(b)
        order = self._orders(b).permutation(len(s))
        return Samples(s.user[order], s.item[order], s.label[order])

    @property
    def lengths(self) -> list[int]:
        if self._lengths is None:
            self._lengths = [len(self._draw(b)) for b in range(self.blocks)]
        return self._lengths

    def __len__(self) -> int:
        return sum(self.lengths)

    def samples(self) -> Samples:
        """Every row in channel order, in one piece (all blocks in memory: small data only)."""
        blocks = [self.block(b) for b in range(self.blocks)]
        return Samples(*(np.concatenate([getattr(b, f) for b in blocks]) for f in ("user", "item", "label")))

    def writer(self, design: Design):
        """Writes rows ``[start, stop)`` of the channel, a bounded chunk at a time; calls come in
        increasing ``start`` (as :meth:`S3Objects.upload_parts` makes them), so each block is
        drawn once."""
        starts = np.concatenate([[0], np.cumsum(self.lengths)])
        held: dict[int, Samples] = {}

        def write(stream: BinaryIO, start: int, stop: int) -> None:
            for b in range(self.blocks):
                low, high = max(start, int(starts[b])), min(stop, int(starts[b + 1]))
                if low >= high:
                    continue
                if b not in held:
                    held.clear()
                    held[b] = self.block(b)
                _write_rows(stream, design, held[b], low - int(starts[b]), high - int(starts[b]))

        return write


def training_set(source: SampleSource, hp: FMHyperparameters, feature_dim: int,
                 predictor_type: str) -> tuple[Channel, dict[str, str]]:
    """The channel and the job's hyperparameters. Implicit mode: ``hp.epochs`` epochs of samples
    (fresh negatives each) trained in one pass; other modes: the samples once, ``hp.epochs`` passes."""
    hyper = hp.to_sagemaker(feature_dim, predictor_type)
    if source.mode != "implicit":
        once = source.epoch(0)
        return Channel(lambda b: once, 1, lambda b: np.random.default_rng(hp.seed),
                       (once.user, once.item, once.label)), hyper
    p = source.positives
    inputs = ("implicit-epochs", hp.epochs, source.negatives, source.n_items, source.seed, hp.seed,
              p.user, p.item, source.seen)
    channel_ = Channel(source.epoch, hp.epochs, lambda e: np.random.default_rng([hp.seed, e, 1]), inputs)
    return channel_, {**hyper, "epochs": "1"}


def with_item_item(model: FMModel, design: Design, source: SampleSource, member: ItemItemSettings,
                   carve: Carve | None = None) -> tuple[FMModel, dict[str, Any]]:
    """Implicit mode, where ``member`` applies to the data's size: ``model`` (the job's FM) plus
    the item-item member (:func:`batch.train.item_item.fm_with_item_item`, weight
    ``member.weight``) fitted on ``source``'s positives (its recency chosen on ``carve``), and
    what the training metrics record of it (:meth:`batch.train.item_item.Member.details`); else
    ``model`` and those of no member. The job's own artifact is never changed, so a resumed run
    that reads it again adds the member once."""
    layout = design.layout
    if source.mode != "implicit" or member.weight <= 0:
        return model, NO_MEMBER
    started, p = time.perf_counter(), source.positives
    fitted = fit_member(p.user, p.item, p.timestamp, p.rating, layout.n_users, layout.n_items, member, carve,
                        feature_rows(design))
    if fitted is None:
        return model, NO_MEMBER
    log.info("item-item member (%s) added to the FM: %d factors, %.1f s", fitted.describe(member), fitted.rank,
             time.perf_counter() - started)
    return fm_with_item_item(model, layout, fitted.users, fitted.items, member.weight), fitted.details()


def _write_rows(stream: BinaryIO, design: Design, samples: Samples, start: int, stop: int) -> None:
    for low in range(start, stop, _ROWS_PER_WRITE):
        rows = slice(low, min(stop, low + _ROWS_PER_WRITE))
        write_sparse(stream, design.pair_rows(samples.user[rows], samples.item[rows]), samples.label[rows])
