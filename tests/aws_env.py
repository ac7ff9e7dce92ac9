"""Helpers for tests against moto's in-process AWS: fake credentials, a Batch queue, the values
that fill deploy/'s placeholders, and the Step Functions request casing moto's executor lacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import validate_parameters

from batch.aws.deploy import render

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-1"
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:topx-db-AbCdEf"

# One value for every placeholder in deploy/ (TimeoutSeconds typed, as a number).
VALUES: dict[str, Any] = {
    "AccountId": ACCOUNT,
    "Region": REGION,
    "Bucket": "acme-recs",
    "Prefix": "topx",
    "ImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/topx:0.1.0-sagemaker",
    "Vcpus": "2",
    "MemoryMiB": "8192",
    "TimeoutSeconds": 86_400,
    "DatabaseSecretArn": SECRET_ARN,
    "Backend": "sagemaker",
    "JobQueue": "topx",
    "AlertTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:topx-alerts",
    "ScheduleExpression": "cron(0 3 * * ? *)",
    "ScheduleTimezone": "Europe/Berlin",
}


def job_definition() -> dict:
    """deploy/batch-job-definition.json rendered with :data:`VALUES`."""
    return render(DEPLOY / "batch-job-definition.json", **VALUES)


def validate(service: str, operation: str, params: dict) -> None:
    """Raise botocore's ParamValidationError unless ``params`` fit the operation's input."""
    model = botocore.session.get_session().get_service_model(service)
    validate_parameters(params, model.operation_model(operation).input_shape)


def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and region for boto3 that can reach nothing but moto."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BATCH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def make_queue(iam: Any, batch: Any, name: str = "topx") -> str:
    """An enabled job queue on an unmanaged compute environment; returns its name."""
    role = iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch.create_compute_environment(computeEnvironmentName="topx-ce", type="UNMANAGED", serviceRole=role)
    batch.create_job_queue(jobQueueName=name, priority=1, state="ENABLED",
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "topx-ce"}])
    return name


@contextmanager
def moto_s3(monkeypatch: pytest.MonkeyPatch, bucket: str, secret_key: str = "testing") -> Iterator[Any]:
    """moto's S3 with ``bucket``, as the client every s3:// access of topx uses (batch.storage);
    ``secret_key``: the fake secret access key (redaction tests look for it in output)."""
    import boto3
    from moto import mock_aws

    from batch import storage

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", secret_key),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        storage.set_s3_client(client)
        try:
            yield client
        finally:
            storage.set_s3_client(None)


@contextmanager
def step_functions_batch_casing() -> Iterator[None]:
    """Let moto's state-machine executor run ``batch:submitJob.sync``.

    Step Functions takes Batch parameters in PascalCase (``JobName``) and returns Batch's answers
    in PascalCase (``JobId``), converting with the service model. The parser moto vendors does
    this for other services but leaves Batch's conversion a no-op, so the call fails on
    ``JobName``. This patch applies the same shape-driven conversion for the test's duration.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_batch import (
        StateTaskServiceBatch,
    )

    model = botocore.session.get_session().get_service_model("batch")

    def operation(self, action):
        name = action or self._get_boto_service_action()
        return model.operation_model("".join(part.title() for part in name.split("_")))

    def parameters(self, parameters, boto_service_name=None, service_action_name=None):
        self._to_boto_request(parameters, operation(self, service_action_name).input_shape)

    def response(self, response, boto_service_name=None, service_action_name=None):
        self._from_boto_response(response, operation(self, service_action_name).output_shape)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StateTaskServiceBatch, "_normalise_parameters", parameters, raising=False)
        patch.setattr(StateTaskServiceBatch, "_normalise_response", response, raising=False)
        yield
