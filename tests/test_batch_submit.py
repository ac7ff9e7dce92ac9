"""``topx submit`` and batch.aws.batch_jobs against moto's Batch.

moto's Docker-free Batch (``use_docker: False``) finishes a job the moment it is submitted; the
tests that need the statuses in between, or a failure with a reason, play the job's life in moto's
backend (:class:`Lifecycle`, :func:`failing_jobs`).
"""

from __future__ import annotations

import json
import logging
import shlex

import boto3
import pytest
from aws_env import ACCOUNT, DEPLOY, REGION, fake_credentials, job_definition, make_queue, validate
from moto import mock_aws
from moto.batch.models import Job, batch_backends

import batch.cli
from batch.aws import batch_jobs
from batch.aws.batch_jobs import BatchJobError, BatchRequestError, job_request, masked
from batch.errors import ConfigError
from batch.pipeline import RUN_ID

FAILURE = "Essential container in task exited"


@pytest.fixture
def aws(monkeypatch):
    """moto with an enabled queue ``topx`` and the job definition from deploy/."""
    fake_credentials(monkeypatch)
    with mock_aws(config={"batch": {"use_docker": False}}):
        client = boto3.client("batch")
        make_queue(boto3.client("iam"), client)
        client.register_job_definition(**job_definition())
        yield client


@pytest.fixture
def failing_jobs(monkeypatch):
    """Every job moto finishes fails as a container exiting with code 2 would."""
    original = Job._mark_stopped

    def fail(self, success=True):
        original(self, success=False)
        self.job_stopped_reason = FAILURE
        if self.latest_attempt:
            self.latest_attempt["statusReason"] = FAILURE
            self.latest_attempt["container"]["exitCode"] = 2

    monkeypatch.setattr(Job, "_mark_stopped", fail)


class Lifecycle:
    """Plays one job's statuses in moto's backend: each poll's sleep moves it one status on."""

    def __init__(self, job_id: str, statuses: list[str], *, exit_code: int | None = None):
        self.job = batch_backends[ACCOUNT][REGION]._jobs[job_id]
        self.job.job_stopped, self.job.attempts, self.job.latest_attempt = False, [], None
        self.statuses, self.exit_code, self.sleeps = list(statuses), exit_code, 0
        self.job.status = self.statuses.pop(0)

    def __call__(self, seconds: float) -> None:
        self.sleeps += 1
        status = self.statuses.pop(0)
        if status == "RUNNING":
            self.job._start_attempt()
        if status not in ("SUCCEEDED", "FAILED"):
            self.job.status = status
            return
        self.job._mark_stopped(success=status == "SUCCEEDED")
        if status == "FAILED":
            self.job.job_stopped_reason = FAILURE
            self.job.latest_attempt["container"].update(exitCode=self.exit_code, logStreamName="topx/default/x")


# ---- requests ---------------------------------------------------------------------------------

def test_job_request_shape_fits_submit_job():
    request = job_request(name="topx-1", queue="topx", definition="topx:2", parameters={"stage": "run"},
                          environment={"TOPX_TOP": "50"}, command=["cleanup", "--keep-runs", "3"], array_size=4)
    assert request == {
        "jobName": "topx-1", "jobQueue": "topx", "jobDefinition": "topx:2", "parameters": {"stage": "run"},
        "containerOverrides": {"environment": [{"name": "TOPX_TOP", "value": "50"}],
                               "command": ["cleanup", "--keep-runs", "3"]},
        "arrayProperties": {"size": 4}}
    validate("batch", "SubmitJob", request)


@pytest.mark.parametrize("bad", [{"name": "-x"}, {"name": "a b"}, {"array_size": 1}, {"array_size": 10_001}])
def test_job_request_refuses_what_batch_would(bad):
    with pytest.raises(ConfigError):
        job_request(**{"name": "topx-1", "queue": "q", "definition": "d", **bad})


def test_masked_hides_credentials_and_keeps_the_rest():
    request = job_request(name="j", queue="q", definition="d", environment={
        "TOPX_DATABASE_URL": "postgresql://writer:hunter2@db.example.com/topx", "API_TOKEN": "tok-123",
        "TOPX_DATABASE_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:db", "TOPX_TOP": "50"})
    shown = {e["name"]: e["value"] for e in masked(request)["containerOverrides"]["environment"]}
    assert shown == {"TOPX_DATABASE_URL": "postgresql://writer:***@db.example.com/topx", "API_TOKEN": "***",
                     "TOPX_DATABASE_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:db", "TOPX_TOP": "50"}
    assert request["containerOverrides"]["environment"][0]["value"].endswith("hunter2@db.example.com/topx")


# ---- submit, describe, wait --------------------------------------------------------------------

def test_submit_and_describe(aws):
    request = job_request(name="topx-1", queue="topx", definition="topx", parameters={"config": "s3://b/x.toml"},
                          environment={"TOPX_TOP": "50"})
    submitted = batch_jobs.submit(aws, request)
    job = batch_jobs.describe(aws, submitted["jobId"])
    assert job["jobName"] == "topx-1" and job["status"] == "SUCCEEDED"
    assert job["parameters"] == {"stage": "run", "config": "s3://b/x.toml"}  # definition default + override
    env = {e["name"]: e["value"] for e in job["container"]["environment"]}
    assert env["TOPX_TOP"] == "50" and env["TOPX_DATABASE_SECRET_ARN"].startswith("arn:aws:secretsmanager:")
    with pytest.raises(BatchRequestError, match="no job nope"):
        batch_jobs.describe(aws, "nope")


@pytest.fixture
def topx_log():
    """Records of the ``topx`` logger at INFO, however logging was set up before."""
    records, handler, logger = [], logging.Handler(), logging.getLogger("topx")
    handler.emit = records.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_wait_logs_every_status_until_success(aws, topx_log):
    job_id = batch_jobs.submit(aws, job_request(name="topx-1", queue="topx", definition="topx"))["jobId"]
    life = Lifecycle(job_id, ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"])
    job = batch_jobs.wait(aws, job_id, poll_s=0, sleep=life)
    assert job["status"] == "SUCCEEDED" and life.sleeps == 5
    seen = [r.getMessage().split(") ")[1].split(" ")[0] for r in topx_log if r.getMessage().startswith("job ")]
    assert seen == ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]


def test_wait_failure_names_the_reason_exit_code_and_log_stream(aws):
    job_id = batch_jobs.submit(aws, job_request(name="topx-1", queue="topx", definition="topx"))["jobId"]
    life = Lifecycle(job_id, ["RUNNABLE", "RUNNING", "FAILED"], exit_code=2)
    with pytest.raises(BatchJobError) as caught:
        batch_jobs.wait(aws, job_id, poll_s=0, sleep=life)
    message = str(caught.value)
    assert message.startswith(f"AWS Batch job topx-1 ({job_id}) FAILED: {FAILURE}")
    assert "attempt 1: exit code 2" in message and "log stream topx/default/x" in message
    assert caught.value.reason == FAILURE and caught.value.job_id == job_id


# ---- array job and its dependent final job -----------------------------------------------------

def test_array_then_final_depends_on_the_whole_array(aws):
    array, final = batch_jobs.submit_array_then_final(
        aws, job_request(name="shards", queue="topx", definition="topx", array_size=3),
        job_request(name="finish", queue="topx", definition="topx", parameters={"stage": "cleanup"}))
    described = batch_jobs.describe(aws, array["jobId"])
    assert described["arrayProperties"]["size"] == 3
    children = aws.list_jobs(arrayJobId=array["jobId"])["jobSummaryList"]
    assert sorted(c["jobId"] for c in children) == [f"{array['jobId']}:{i}" for i in range(3)]
    last = batch_jobs.describe(aws, final["jobId"])
    assert last["dependsOn"] == [{"jobId": array["jobId"]}] and last["parameters"]["stage"] == "cleanup"


def test_n_to_n_final_is_an_array_of_the_same_size(aws):
    array, final = batch_jobs.submit_array_then_final(
        aws, job_request(name="a", queue="topx", definition="topx", array_size=2),
        job_request(name="b", queue="topx", definition="topx", array_size=2), n_to_n=True)
    assert batch_jobs.describe(aws, final["jobId"])["dependsOn"] == [{"jobId": array["jobId"], "type": "N_TO_N"}]
    with pytest.raises(ConfigError, match="size 2"):
        batch_jobs.submit_array_then_final(
            aws, job_request(name="a", queue="topx", definition="topx", array_size=2),
            job_request(name="b", queue="topx", definition="topx"), n_to_n=True)


def test_failed_array_lists_its_failed_children(aws, failing_jobs):
    array = batch_jobs.submit(aws, job_request(name="shards", queue="topx", definition="topx", array_size=2))
    with pytest.raises(BatchJobError) as caught:
        batch_jobs.wait(aws, array["jobId"], poll_s=0)
    assert "2 of 2 child jobs failed" in str(caught.value)
    assert f"child {array['jobId']}:0: {FAILURE}" in str(caught.value)


# ---- the command line ---------------------------------------------------------------------------

def test_submit_wait_success(aws, topx):
    code, summary, err = topx("submit", "--queue", "topx", "--name", "nightly", "--param", "stage=run", "--wait",
                              "--poll", "0")
    assert code == 0
    [job] = summary["jobs"]
    assert job["jobName"] == "nightly" and job["status"] == "SUCCEEDED" and job["role"] == "job"
    assert f"job nightly ({job['jobId']}) SUCCEEDED" in err


def test_a_run_job_carries_one_run_id_for_all_its_attempts(aws, topx):
    def submitted(*argv):
        code, summary, _ = topx("submit", "--queue", "topx", *argv)
        assert code == 0
        env = batch_jobs.describe(aws, summary["jobs"][0]["jobId"])["container"].get("environment", [])
        return summary.get("run_id"), {e["name"]: e["value"] for e in env}.get("TOPX_RUN_ID")

    made, given = submitted("--name", "nightly")  # stage `run`, the definition's default
    assert made == given and RUN_ID.fullmatch(made)  # Batch retries reuse the job's environment
    assert submitted("--param", "stage=run", "--env", "TOPX_RUN_ID=backfill-7") == ("backfill-7", "backfill-7")
    assert submitted("--param", "stage=cleanup") == (None, None)
    assert submitted("--command", "runs") == (None, None)


def test_submit_wait_failure_exits_non_zero_with_the_reason(aws, topx, failing_jobs):
    code, summary, err = topx("submit", "--queue", "topx", "--name", "nightly", "--wait", "--poll", "0")
    assert code == 1 and summary is None
    assert "topx: error: AWS Batch job nightly (" in err and f"FAILED: {FAILURE}; attempt 1: exit code 2" in err


def test_submit_array_with_final_job(aws, topx):
    code, summary, _ = topx("submit", "--queue", "topx", "--name", "rank", "--array-size", "4",
                            "--final-param", "stage=cleanup", "--env", "TOPX_RUN_ID=r1", "--wait", "--poll", "0")
    assert code == 0
    array, final = summary["jobs"]
    assert (array["role"], final["role"]) == ("array", "final") and final["jobName"] == "rank-final"
    assert array["status"] == final["status"] == "SUCCEEDED"
    described = batch_jobs.describe(aws, final["jobId"])
    assert described["dependsOn"] == [{"jobId": array["jobId"]}]
    assert {"name": "TOPX_RUN_ID", "value": "r1"} in described["container"]["environment"]


def test_dry_run_prints_the_request_masked_and_calls_nothing(topx, monkeypatch):
    def no_aws(*args, **kwargs):
        raise AssertionError("a dry run must not create an AWS client")

    monkeypatch.setattr(boto3, "client", no_aws)
    monkeypatch.setattr(batch_jobs, "client", no_aws)
    code, summary, err = topx("submit", "--queue", "topx", "--name", "n1", "--param", "config=s3://b/j.toml",
                              "--env", "TOPX_DATABASE_URL=postgresql://w:hunter2@db/topx", "--env", "MY_TOKEN=abc",
                              "--array-size", "2", "--final-param", "stage=cleanup", "--dry-run")
    assert code == 0 and summary["dry_run"] is True
    array, final = summary["requests"]
    assert array == {"jobName": "n1", "jobQueue": "topx", "jobDefinition": "topx",
                     "parameters": {"config": "s3://b/j.toml"}, "arrayProperties": {"size": 2},
                     "containerOverrides": {"environment": [
                         {"name": "TOPX_DATABASE_URL", "value": "postgresql://w:***@db/topx"},
                         {"name": "MY_TOKEN", "value": "***"}]}}
    assert final["parameters"] == {"config": "s3://b/j.toml", "stage": "cleanup"}
    assert final["dependsOn"] == [{"jobId": "<jobId of the array job>"}]
    assert "hunter2" not in err + json.dumps(summary) and "abc" not in json.dumps(summary)


def test_unknown_queue_is_reported(aws, topx):
    code, _, err = topx("submit", "--queue", "nope", "--name", "n1")
    assert code == 1 and "AWS Batch refused SubmitJob: ClientException" in err and "nope" in err


@pytest.mark.parametrize("argv, message", [
    ((), "no job queue"),
    (("--queue", "q", "--final-param", "stage=x"), "need --array-size"),
    (("--queue", "q", "--param", "novalue"), "--param expects KEY=VALUE"),
    (("--queue", "q", "--array-size", "1"), "array size must be 2 to 10000"),
])
def test_bad_options_are_input_errors(topx, argv, message):
    code, _, err = topx("submit", "--dry-run", *argv)
    assert code == 2 and message in err


def test_plain_credentials_in_env_are_warned_about_but_never_shown(aws, topx):
    code, summary, err = topx("submit", "--queue", "topx", "--env", "TOPX_DATABASE_URL=postgresql://w:hunter2@db/x")
    assert code == 0 and "TOPX_DATABASE_URL holds a credential in plain text" in err
    assert "hunter2" not in err + json.dumps(summary)


def test_readme_submit_examples_parse(monkeypatch):
    readme = (DEPLOY / "README.md").read_text()
    examples = [line.split("  #")[0] for line in readme.splitlines() if line.startswith("topx submit")]
    assert len(examples) >= 4
    parser = batch.cli.build_parser()
    for line in examples:
        assert parser.parse_args(shlex.split(line)[1:]).handler is not None, line


def test_missing_region_is_a_configuration_error(monkeypatch, tmp_path):
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookups from tests
    with pytest.raises(ConfigError, match="no AWS region"):
        batch_jobs.client()
