"""The emulator itself: jobs that run, report InProgress then an outcome, fail on request, and serve
over HTTP; plus job names, image URIs and client settings."""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import time
import urllib.request

import numpy as np
import pytest
import scipy.sparse as sp
from botocore.exceptions import ClientError
from sagemaker_fixtures import BUCKET, REGION, ROLE, emulated_aws, sagemaker_config, search_request, tied_vectors

from batch.artifact import read_model
from batch.aws.images import image_uri
from batch.aws.recordio import write_dense, write_sparse
from batch.aws.requests import channel
from batch.aws.session import SageMakerSession, job_name
from batch.cli import aws as aws_cli
from batch.emulator.local import local_engines
from batch.emulator.server import FAKE_CREDENTIALS, emulator_server
from batch.errors import ConfigError
from batch.serve.search.local import LocalSearcher
from batch.serve.search.sagemaker import SageMakerKnnSearcher

FM_IMAGE = image_uri("fm", REGION)
KNN_IMAGE = image_uri("knn", REGION)


@pytest.fixture
def aws():
    with emulated_aws() as aws:
        yield aws


def put(aws, key, write, *args):
    stream = io.BytesIO()
    write(stream, *args)
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=stream.getvalue())
    return f"s3://{BUCKET}/{key}"


def create_training(aws, name, image, hyper, prefix):
    aws.sagemaker.create_training_job(
        TrainingJobName=name, AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=ROLE, HyperParameters=hyper, InputDataConfig=[channel("train", prefix, "FullyReplicated")],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out"},
        ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600})


def finished(aws, name, kind="training"):
    describe = getattr(aws.sagemaker, f"describe_{kind}_job")
    field = "TrainingJob" if kind == "training" else "TransformJob"
    while (found := describe(**{f"{field}Name": name}))[f"{field}Status"] == "InProgress":
        time.sleep(0.01)
    return found


def fm_channel(aws, rows=40, width=6):
    rng = np.random.default_rng(0)
    X = sp.random(rows, width, density=0.4, dtype=np.float32, random_state=rng).tocsr()
    return put(aws, "in/fm/part-0.rec", write_sparse, X, (rng.random(rows) > 0.5).astype(np.float32))


def test_a_training_job_is_in_progress_first_then_completed_with_a_real_artifact(aws):
    prefix = fm_channel(aws).rsplit("/", 1)[0] + "/"
    create_training(aws, "fm-1", FM_IMAGE, {"feature_dim": "6", "num_factors": "2", "predictor_type": "regressor",
                                            "epochs": "2"}, prefix)
    first = aws.sagemaker.describe_training_job(TrainingJobName="fm-1")
    assert first["TrainingJobStatus"] == "InProgress" and "TrainingEndTime" not in first
    found = finished(aws, "fm-1")
    assert found["TrainingJobStatus"] == "Completed" and found["SecondaryStatus"] == "Completed"
    assert [t["Status"] for t in found["SecondaryStatusTransitions"]] == \
        ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert found["BillableTimeInSeconds"] >= 1
    key = found["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    assert key == "out/fm-1/output/model.tar.gz"
    model = read_model(aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert model.feature_dim == 6 and model.num_factors == 2 and model.predictor_type == "regressor"
    summaries = aws.sagemaker.list_training_jobs()["TrainingJobSummaries"]
    assert [s["TrainingJobStatus"] for s in summaries] == ["Completed"]


def test_job_names_are_unique_as_on_sagemaker(aws):
    prefix = fm_channel(aws).rsplit("/", 1)[0] + "/"
    hyper = {"feature_dim": "6", "num_factors": "2", "predictor_type": "regressor", "epochs": "1"}
    create_training(aws, "fm-1", FM_IMAGE, hyper, prefix)
    with pytest.raises(ClientError, match="ResourceInUse"):
        create_training(aws, "fm-1", FM_IMAGE, hyper, prefix)


@pytest.mark.parametrize("image, hyper, reason", [
    (FM_IMAGE, {"num_factors": "2", "predictor_type": "regressor"}, "missing required hyperparameter.*feature_dim"),
    (FM_IMAGE, {"feature_dim": "6", "num_factors": "2", "predictor_type": "regressor", "seed": "1"},
     "additional hyperparameters.*seed"),
    (FM_IMAGE, {"feature_dim": "7", "num_factors": "2", "predictor_type": "regressor"}, "has 6 features"),
    (KNN_IMAGE, {"feature_dim": "6", "k": "3", "predictor_type": "classifier", "sample_size": "40",
                 "index_type": "faiss.IVFPQ", "index_metric": "INNER_PRODUCT"}, "IVFPQ does not support"),
    ("123.dkr.ecr.eu-west-1.amazonaws.com/xgboost:1", {}, "no built-in algorithm"),
])
def test_what_the_algorithm_would_refuse_fails_the_job_with_a_reason(aws, image, hyper, reason):
    prefix = fm_channel(aws).rsplit("/", 1)[0] + "/"
    create_training(aws, "job", image, hyper, prefix)
    found = finished(aws, "job")
    assert found["TrainingJobStatus"] == "Failed" and re.search(reason, found["FailureReason"], re.I)


def test_an_injected_failure_fails_the_next_job_of_its_kind_only(aws):
    prefix = fm_channel(aws).rsplit("/", 1)[0] + "/"
    hyper = {"feature_dim": "6", "num_factors": "2", "predictor_type": "regressor", "epochs": "1"}
    aws.emulator.fail_next("training", "InternalServerError: injected")
    create_training(aws, "a", FM_IMAGE, hyper, prefix)
    create_training(aws, "b", FM_IMAGE, hyper, prefix)
    assert finished(aws, "a")["FailureReason"] == "InternalServerError: injected"
    assert finished(aws, "b")["TrainingJobStatus"] == "Completed"
    with pytest.raises(ValueError):
        aws.emulator.fail_next("endpoint", "x")


def test_a_knn_transform_writes_verbose_jsonlines_best_last_per_input_object(aws):
    items = np.array([[1, 0], [0, 1], [2, 2], [-1, 0]], np.float32)
    put(aws, "in/items/part-0.rec", write_dense, items, np.array([10, 11, 12, 13], np.float32))
    create_training(aws, "knn", KNN_IMAGE, {"feature_dim": "2", "k": "3", "predictor_type": "classifier",
                                            "sample_size": "4", "index_metric": "INNER_PRODUCT"}, f"s3://{BUCKET}/in/items/")
    artifact = finished(aws, "knn")["ModelArtifacts"]["S3ModelArtifacts"]
    aws.sagemaker.create_model(ModelName="knn-model", ExecutionRoleArn=ROLE,
                               PrimaryContainer={"Image": KNN_IMAGE, "ModelDataUrl": artifact})
    put(aws, "in/users/a.rec", write_dense, np.array([[1, 0]], np.float32))
    put(aws, "in/users/b.rec", write_dense, np.array([[0, 1], [-1, -1]], np.float32))
    aws.sagemaker.create_transform_job(
        TransformJobName="t", ModelName="knn-model", BatchStrategy="MultiRecord",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/in/users/"}},
                        "ContentType": "application/x-recordio-protobuf", "SplitType": "RecordIO"},
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/out/t", "Accept": "application/jsonlines; verbose=true",
                         "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1})
    assert finished(aws, "t", "transform")["TransformJobStatus"] == "Completed"
    lines = {name: [json.loads(x) for x in aws.s3.get_object(Bucket=BUCKET, Key=f"out/t/{name}")["Body"].read()
                    .decode().splitlines()] for name in ("a.rec.out", "b.rec.out")}
    assert lines["a.rec.out"] == [{"predicted_label": 12.0, "distances": [0.0, 1.0, 2.0],
                                   "labels": [11.0, 10.0, 12.0]}]
    assert [line["labels"][-1] for line in lines["b.rec.out"]] == [12.0, 13.0]
    assert lines["b.rec.out"][1]["distances"] == [-1.0, -1.0, 1.0]  # ascending: the best is last


def test_the_emulator_over_http_serves_a_search_with_clients_made_from_config(monkeypatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    with emulator_server(local_engines(), port=0, buckets=[BUCKET], region=REGION) as endpoint:
        try:
            request = search_request(tied_vectors())
            cfg = sagemaker_config(endpoint_url=endpoint.url)
            got = SageMakerKnnSearcher(cfg, run_id="served").search(request).lists
            want = LocalSearcher(method="exact").search(request).lists
            for a, b in zip(got.columns(), want.columns(), strict=True):
                assert np.array_equal(a, b)
        finally:  # the server's backends are process-wide: leave nothing for other tests
            urllib.request.urlopen(urllib.request.Request(f"{endpoint.url}/moto-api/reset", method="POST"))


def test_the_cli_command_serves_until_interrupted(monkeypatch):
    parser = argparse.ArgumentParser()
    aws_cli.register(parser.add_subparsers())
    args = parser.parse_args(["sagemaker-emulator", "--port", "0", "--bucket", "topx-cli", "--region", REGION])
    assert (args.host, args.port, args.bucket) == ("127.0.0.1", 0, ["topx-cli"])

    def interrupt_and_check_quiet(seconds):
        # request logs ("POST / 400" from a client's probe) are quiet unless --request-log
        assert logging.getLogger("werkzeug").getEffectiveLevel() == logging.WARNING
        raise KeyboardInterrupt

    monkeypatch.setattr(aws_cli.time, "sleep", interrupt_and_check_quiet)
    summary = args.handler(args)
    assert summary["stopped"] is True and summary["endpoint_url"].startswith("http://127.0.0.1:")
    assert FAKE_CREDENTIALS["aws_access_key_id"]


def test_job_names_follow_sagemakers_rule_and_stay_unique():
    rule = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    assert job_name("20240501T120000Z-abc", "fm") == "topx-20240501T120000Z-abc-fm"
    assert re.fullmatch(r"topx-2024-05-01T12-00-00Z-abc-[0-9a-f]{6}-fm", job_name("2024-05-01T12:00:00Z_abc", "fm"))
    lookalikes = ("nightly.1", "nightly_1", "nightly-1", "nightly--1")  # one slug, four run ids
    assert len({job_name(run, "fm") for run in lookalikes}) == len(lookalikes)
    assert job_name("r", "transform", attempt=3) == "topx-r-transform-r3"
    long_a, long_b = "x" * 80 + "a", "x" * 80 + "b"
    names = [job_name(run, stage, attempt) for run in (long_a, long_b) for stage in ("fm", "knn-model")
             for attempt in (1, 99)]
    assert all(rule.match(n) and len(n) <= 63 for n in names) and len(set(names)) == len(names)
    with pytest.raises(ConfigError):
        job_name("///", "fm")


def test_image_uris_per_region_with_an_override():
    assert image_uri("fm", "us-east-1") == "382416733822.dkr.ecr.us-east-1.amazonaws.com/factorization-machines:1"
    assert image_uri("knn", "eu-central-1") == "664544806723.dkr.ecr.eu-central-1.amazonaws.com/knn:1"
    assert image_uri("knn", "eu-west-1") == "438346466558.dkr.ecr.eu-west-1.amazonaws.com/knn:1"
    assert image_uri("knn", "cn-north-1", "my/knn:1") == "my/knn:1"
    with pytest.raises(ConfigError, match="sagemaker.knn_image"):
        image_uri("knn", "cn-north-1")


def test_clients_are_made_on_first_use_with_standard_retries_and_the_endpoint():
    session = SageMakerSession(sagemaker_config(endpoint_url="http://127.0.0.1:9").sagemaker, "r")
    assert session._clients == {"sagemaker": None, "s3": None}  # nothing made by the constructor
    for client in (session.sagemaker, session.s3):
        assert client.meta.endpoint_url == "http://127.0.0.1:9" and client.meta.region_name == REGION
        assert client.meta.config.retries["mode"] == "standard"
    assert session.uri("knn", "items") == f"s3://{BUCKET}/runs/r/knn/items"
