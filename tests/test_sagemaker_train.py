"""The SageMaker FM trainer against moto + the emulator (real local training behind it)."""

from __future__ import annotations

import dataclasses
import io
import os
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from blocks import SMALL, blocks_dataset
from botocore.validate import validate_parameters
from sagemaker_fixtures import BUCKET, SMALL_HP, emulated_aws, sagemaker_config
from test_item_item import brute_force_ease, every_session

from batch.artifact import read_model
from batch.aws.channels import MissingS3ObjectError
from batch.aws.recordio import read_sparse
from batch.aws.sagemaker_jobs import JobInputsChangedError, JobRunner, TrainingJobFailedError
from batch.config import TrainConfig
from batch.data.interactions import FeatureTable, Interactions
from batch.errors import AwsJobError, ConfigError
from batch.features.design import build_design
from batch.train import make_trainer
from batch.train.item_item import RECENCY_CHOICES, feature_rows, profiles, rating_weights, session_rows
from batch.train.local import LocalFMTrainer
from batch.train.sagemaker import SageMakerFMTrainer, training_set
from batch.train.samples import held_out_samples, training_source


@pytest.fixture(scope="module")
def problem():
    """A design, its implicit training source and held-out samples."""
    ds = blocks_dataset(**SMALL)
    source = training_source(ds, "implicit", threshold=4.0, negatives=2, seed=0)
    test = held_out_samples(ds, "implicit", threshold=4.0, negatives=2, seed=0)
    return build_design(ds), source, test


@pytest.fixture
def aws():
    with emulated_aws() as aws:
        yield aws


def fit(aws, problem, hp=SMALL_HP, run_id="run-1", member=0.0, **settings):
    """``member``: train.ials.item_item_sagemaker (0: the job's FM as it is)."""
    cfg = sagemaker_config(**settings)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, ials=dataclasses.replace(cfg.train.ials, item_item_sagemaker=member)))
    trainer = SageMakerFMTrainer(cfg, run_id=run_id, clients=aws.clients())
    design, source, test = problem
    return trainer.fit(design, source, test, hp, "binary_classifier")


def channel_objects(aws, channel):
    listing = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"runs/run-1/fm/{channel}/")
    return [o["Key"] for o in listing.get("Contents", [])]


def read_channel(aws, channel):
    """(rows, labels) of each object of the run's FM channel, in key order."""
    return [read_sparse(io.BytesIO(aws.s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()))
            for k in channel_objects(aws, channel)]


def test_fit_trains_through_a_training_job_and_reads_back_its_artifact(aws, problem):
    design, source, test = problem
    result = fit(aws, problem)
    assert result.model.feature_dim == design.layout.feature_dim
    assert result.model.predictor_type == "binary_classifier" and result.model.num_factors == SMALL_HP.num_factors
    details = result.details
    assert details["job_name"] == "topx-run-1-fm" and details["reused"] is False
    assert details["billable_seconds"] >= 1 and details["samples"] == SMALL_HP.epochs * len(source.epoch(0))
    assert set(details["final_metrics"]) == {"test:binary_classification_accuracy",
                                             "test:binary_classification_cross_entropy"}
    artifact = details["artifact"]
    assert artifact == f"s3://{BUCKET}/runs/run-1/fm/output/topx-run-1-fm/output/model.tar.gz"
    stored = read_model(aws.s3.get_object(Bucket=BUCKET, Key=artifact.split("/", 3)[3])["Body"].read())
    np.testing.assert_array_equal(stored.V, result.model.V)


def test_the_request_is_valid_with_string_hyperparameters_and_sharded_channels(aws, problem):
    fit(aws, problem)
    (request,) = aws.sent("CreateTrainingJob")
    shape = aws.sagemaker.meta.service_model.operation_model("CreateTrainingJob").input_shape
    validate_parameters(request, shape)  # raises on any invalid field
    hyper = request["HyperParameters"]
    assert all(isinstance(v, str) for v in hyper.values())
    assert hyper["feature_dim"] == str(problem[0].layout.feature_dim) and hyper["predictor_type"] == "binary_classifier"
    assert SMALL_HP.epochs == 3 and hyper["epochs"] == "1"  # implicit: one pass over 3 epochs' samples
    assert hyper["factors_wd"] == str(SMALL_HP.factors_wd)
    train, test = request["InputDataConfig"]
    assert train["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert train["ContentType"] == test["ContentType"] == "application/x-recordio-protobuf"
    assert request["AlgorithmSpecification"]["TrainingImage"] == \
        "438346466558.dkr.ecr.eu-west-1.amazonaws.com/factorization-machines:1"
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86_400}
    assert "EnableManagedSpotTraining" not in request


def test_channels_hold_every_sample_in_three_shuffled_objects(aws, problem):
    design, source, test = problem
    fit(aws, problem)
    samples = training_set(source, SMALL_HP, design.layout.feature_dim, "binary_classifier")[0].samples()
    parts = read_channel(aws, "train")
    assert len(parts) == 3 and len(channel_objects(aws, "test")) == 3
    X = np.vstack([p[0].toarray() for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    assert len(labels) == len(samples)
    expected = design.pair_rows(samples.user, samples.item).toarray()
    np.testing.assert_array_equal(np.sort(X @ np.arange(X.shape[1])), np.sort(expected @ np.arange(X.shape[1])))
    assert labels.sum() == samples.label.sum()
    assert all(0 < p[1].mean() < 1 for p in parts)  # shuffled: positives and negatives in every shard


def test_implicit_channels_hold_fresh_negatives_for_every_epoch(problem):
    design, source, _ = problem
    channel, hyper = training_set(source, SMALL_HP, design.layout.feature_dim, "binary_classifier")
    samples = channel.samples()
    epochs = [source.epoch(e) for e in range(SMALL_HP.epochs)]
    assert hyper["epochs"] == "1" and len(samples) == sum(len(e) for e in epochs)
    negatives = [set(zip(e.user[e.label == 0].tolist(), e.item[e.label == 0].tolist(), strict=True)) for e in epochs]
    assert negatives[0] != negatives[1] != negatives[2]  # redrawn, as the local engine redraws them
    assert samples.label.sum() == SMALL_HP.epochs * epochs[0].label.sum()  # the positives once per epoch
    regression = training_source(blocks_dataset(**SMALL), "regression", threshold=4.0, negatives=2, seed=0)
    rows, hyper = training_set(regression, SMALL_HP, design.layout.feature_dim, "regressor")
    assert hyper["epochs"] == "3" and len(rows) == len(regression.epoch(0))


def test_the_default_implicit_channel_holds_eight_negatives_per_positive_per_epoch(aws):
    """The implicit default chosen on a validation split of the embedded default (NDCG@10 0.1559
    with 8 negatives per positive vs 0.1516 with 4 and 0.1437 with 2): every epoch's positives
    come with 8 unseen items each in the uploaded channel."""
    t = TrainConfig(backend="sagemaker")
    ds = blocks_dataset(**SMALL)
    source = training_source(ds, t.mode, threshold=t.threshold, negatives=t.negatives, seed=0)
    test = held_out_samples(ds, t.mode, threshold=t.threshold, negatives=t.negatives, seed=0)
    fit(aws, (build_design(ds), source, test))
    labels = np.concatenate([p[1] for p in read_channel(aws, "train")])
    assert t.negatives == 8
    assert labels.sum() == SMALL_HP.epochs * len(ds.train)
    assert (labels == 0).sum() == SMALL_HP.epochs * 8 * len(ds.train)


def test_the_channel_is_written_epoch_after_epoch_each_epoch_shuffled_on_its_own(aws, problem):
    design, source, _ = problem
    fit(aws, problem)
    channel = training_set(source, SMALL_HP, design.layout.feature_dim, "binary_classifier")[0]
    X = sp.vstack([p[0] for p in read_channel(aws, "train")]).tocsr()
    y = np.concatenate([p[1] for p in read_channel(aws, "train")])
    whole = channel.samples()
    assert (X != design.pair_rows(whole.user, whole.item)).nnz == 0  # byte for byte the blocks in order
    np.testing.assert_array_equal(y, whole.label)
    start = 0
    for e in range(SMALL_HP.epochs):
        drawn = source.epoch(e)
        block = whole.user[start:start + len(drawn)], whole.item[start:start + len(drawn)]
        assert sorted(zip(*block, strict=True)) == sorted(zip(drawn.user, drawn.item, strict=True))
        assert not np.array_equal(block[0], drawn.user)  # shuffled within the epoch
        start += len(drawn)
    assert start == len(y)


def test_writing_the_implicit_channel_holds_one_epoch_at_a_time():
    """Drawing and writing 8 epochs peaks where 2 epochs do (one epoch and one chunk of encoded
    rows), not at 8 epochs' samples held together."""
    ds = blocks_dataset(n_users=400, n_items=300, per_user=60, seed=3)
    source = training_source(ds, "implicit", threshold=4.0, negatives=4, seed=0)
    design = build_design(ds)

    def peak(epochs: int) -> tuple[int, int]:
        tracemalloc.start()
        channel = training_set(source, dataclasses.replace(SMALL_HP, epochs=epochs),
                               design.layout.feature_dim, "binary_classifier")[0]
        write = channel.writer(design)
        bounds = np.linspace(0, len(channel), 4).astype(int)
        with open(os.devnull, "wb") as sink:
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
                write(sink, int(start), int(stop))
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top, len(channel)

    two, rows_two = peak(2)
    eight, rows_eight = peak(8)
    epoch_bytes = rows_two // 2 * 12  # int32 user, int32 item, float32 label
    assert rows_eight == 4 * rows_two
    assert eight < two + epoch_bytes, (two, eight, epoch_bytes)  # all 8 epochs would add 6 epochs and more


def test_the_job_trains_the_local_engine_on_exactly_the_channel_rows(aws, problem):
    result = fit(aws, problem)
    parts = read_channel(aws, "train")
    X = sp.vstack([p[0] for p in parts]).tocsr()
    y = np.concatenate([p[1] for p in parts])
    one_pass = dataclasses.replace(SMALL_HP, epochs=1)  # implicit: the channel holds every epoch
    direct = LocalFMTrainer("cpu").fit_rows(X, y, one_pass, "binary_classifier").model
    np.testing.assert_array_equal(direct.V, result.model.V)
    np.testing.assert_array_equal(direct.w, result.model.w)


@pytest.fixture
def rated_problem():
    """``problem`` with training ratings from 1 to 5, which weight the item-item member's
    interactions, and indicator item features (``parity=even`` / ``parity=odd``) it may fit with."""
    ds = blocks_dataset(**SMALL)
    rating = np.random.default_rng(2).choice([1.0, 3.0, 4.0, 5.0], len(ds.train)).astype(np.float32)
    ds = dataclasses.replace(ds, train=Interactions(ds.train.user, ds.train.item, rating, ds.train.timestamp),
                             item_features=FeatureTable(ds.item_features.matrix, ("parity=even", "parity=odd")))
    source = training_source(ds, "implicit", threshold=4.0, negatives=2, seed=0)
    test = held_out_samples(ds, "implicit", threshold=4.0, negatives=2, seed=0)
    return build_design(ds), source, test


def test_implicit_mode_adds_the_item_item_member_to_the_jobs_fm_once_without_changing_the_jobs_artifact(
        aws, rated_problem):
    problem = rated_problem
    design, source, _ = problem
    layout = design.layout
    plain = fit(aws, problem)
    assert plain.details["item_item_factors"] == 0
    result = fit(aws, problem, member=0.7)
    again = fit(aws, problem, member=0.7)  # a resumed run: the completed job, the member added once
    assert again.details["reused"] is True and again.details["item_item_factors"] == layout.n_items
    np.testing.assert_array_equal(result.model.V, again.model.V)
    k = SMALL_HP.num_factors
    assert result.model.num_factors == k + min(layout.n_users, layout.n_items)
    np.testing.assert_array_equal(result.model.V[:, :k], plain.model.V)
    artifact = result.details["artifact"]
    stored = read_model(aws.s3.get_object(Bucket=BUCKET, Key=artifact.split("/", 3)[3])["Body"].read())
    np.testing.assert_array_equal(stored.V, plain.model.V)
    # the scores are the job's FM's plus 0.7 × EASE's on every pair a user does not have
    users = np.repeat(np.arange(layout.n_users), layout.n_items)
    items = np.tile(np.arange(layout.n_items), layout.n_users)
    rows = design.pair_rows(users, items)
    p = source.positives
    ials = sagemaker_config().train.ials
    c = rating_weights(p.user, p.rating, layout.n_users, ials.item_item_rating_exponent)
    assert c.min() < 1, "the problem's ratings weight its interactions"
    X = profiles(p.user, p.item, p.timestamp, layout.n_users, layout.n_items, 0.0, 5.0, c).toarray()
    chosen = result.details["item_item_recency"]  # chosen on a carve of the training data
    assert chosen in RECENCY_CHOICES and len(result.details["item_item_recency_validation"]) == len(RECENCY_CHOICES)
    W = profiles(p.user, p.item, p.timestamp, layout.n_users, layout.n_items, chosen, 5.0, c).toarray()
    Z = session_rows(p.user, p.item, p.timestamp, layout.n_users, layout.n_items, ials.item_item_session_gap, c)
    unseen = (X == 0).ravel()
    # the features joined or not as the carve chose, as on the local engine
    by_weight = result.details["item_item_features_validation"]
    assert set(by_weight) == {f"{ials.item_item_features:g}", "0"}
    F = feature_rows(design).toarray()
    joined = by_weight[f"{ials.item_item_features:g}"] > by_weight["0"]
    assert len(F) == 2 and result.details["item_item_feature_rows"] == (len(F) if joined else 0)
    ease = brute_force_ease(X, W, ials.item_item_l2, every_session(Z, X), ials.item_item_sessions, F,
                            ials.item_item_features if result.details["item_item_feature_rows"] else 0.0)
    expected = plain.model.decision(rows) + 0.7 * ease.ravel()
    np.testing.assert_allclose(result.model.decision(rows)[unseen], expected[unseen], rtol=1e-4, atol=1e-4)


def test_a_second_fit_of_the_run_reuses_the_completed_job(aws, problem):
    first = fit(aws, problem)
    again = fit(aws, problem)
    assert aws.training_jobs() == ["topx-run-1-fm"] and len(aws.sent("CreateTrainingJob")) == 1
    assert again.details["reused"] is True
    np.testing.assert_array_equal(first.model.V, again.model.V)


def test_a_job_left_in_progress_by_a_crashed_run_is_waited_for(aws, problem, monkeypatch):
    def crash(self, kind, name):
        raise KeyboardInterrupt  # the process dies right after creating the job

    with monkeypatch.context() as patch:
        patch.setattr(JobRunner, "wait", crash)
        with pytest.raises(KeyboardInterrupt):
            fit(aws, problem)
    result = fit(aws, problem)
    assert result.details["reused"] is True and aws.training_jobs() == ["topx-run-1-fm"]
    assert result.model.feature_dim == problem[0].layout.feature_dim


def test_a_failed_job_raises_its_failure_reason_and_the_next_run_starts_a_new_attempt(aws, problem):
    aws.emulator.fail_next("training", "AlgorithmError: CUDA out of memory")
    with pytest.raises(TrainingJobFailedError) as failed:
        fit(aws, problem)
    assert failed.value.reason == "AlgorithmError: CUDA out of memory"
    assert failed.value.job_name == "topx-run-1-fm" and "CUDA out of memory" in str(failed.value)
    assert isinstance(failed.value, AwsJobError)
    result = fit(aws, problem)
    assert result.details["job_name"] == "topx-run-1-fm-r2" and result.details["reused"] is False
    assert aws.training_jobs() == ["topx-run-1-fm", "topx-run-1-fm-r2"]


def test_a_deleted_artifact_is_a_named_error(aws, problem):
    artifact = fit(aws, problem).details["artifact"]
    aws.s3.delete_object(Bucket=BUCKET, Key=artifact.split("/", 3)[3])
    with pytest.raises(MissingS3ObjectError, match="model.tar.gz: no such S3 object"):
        fit(aws, problem)


def test_a_run_id_reused_for_other_inputs_is_refused(aws, problem):
    fit(aws, problem)
    with pytest.raises(JobInputsChangedError, match="topx-run-1-fm"):
        fit(aws, problem, hp=SMALL_HP.__class__(num_factors=4, epochs=4, mini_batch_size=64))


def test_managed_spot_training_sets_the_wait_limit_and_checkpoints(aws, problem):
    fit(aws, problem, use_spot=True, max_runtime_s=3600, max_wait_s=7200)
    (request,) = aws.sent("CreateTrainingJob")
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/runs/run-1/fm/checkpoints"}


@pytest.mark.parametrize("settings, message", [
    ({"role_arn": None}, "sagemaker.role_arn"),
    ({"s3_prefix": None}, "sagemaker.s3_prefix"),
    ({"s3_prefix": "topx-bucket/runs"}, "s3://bucket/prefix"),
    ({"region": "mars-north-1"}, "sagemaker.fm_image"),
    ({"use_spot": True, "max_runtime_s": 7200, "max_wait_s": 3600}, "max_wait_s"),
    ({"channel_shards": 2, "train_instance_count": 3}, "channel_shards"),
])
def test_settings_a_job_cannot_run_without_are_config_errors_before_any_upload(aws, problem, settings, message):
    with pytest.raises(ConfigError, match=message):
        fit(aws, problem, **settings)
    assert aws.requests == [] and "Contents" not in aws.s3.list_objects_v2(Bucket=BUCKET)


def test_an_image_override_serves_regions_the_table_does_not_know(aws, problem):
    image = "111122223333.dkr.ecr.mars-north-1.amazonaws.com/factorization-machines:1"
    fit(aws, problem, region="mars-north-1", fm_image=image)
    (request,) = aws.sent("CreateTrainingJob")
    assert request["AlgorithmSpecification"]["TrainingImage"] == image


def test_make_trainer_picks_the_sagemaker_engine(aws):
    cfg = sagemaker_config()
    cfg = cfg.__class__(**{**cfg.__dict__, "train": cfg.train.__class__(backend="sagemaker")})
    trainer = make_trainer(cfg, run_id="r", clients=aws.clients())
    assert isinstance(trainer, SageMakerFMTrainer) and aws.requests == []
