"""``topx submit --shards N`` against moto's Batch (no Docker), the sharded state machine in moto's
Step Functions, and a sharded run end to end: the jobs submit creates are played one by one, each
in-process with the command and environment Batch would give its container, on an ``s3://`` work
directory in moto's S3 and a real database.
"""

from __future__ import annotations

import json
import os
import time

import boto3
import pytest
import sqlalchemy as sa
from aws_env import ACCOUNT, DEPLOY, VALUES, fake_credentials, job_definition, make_queue, step_functions_batch_casing
from moto import mock_aws

import batch.cli
from batch import storage
from batch.aws import batch_jobs
from batch.aws.deploy import render
from batch.publish import make_engine

WORKDIR = "s3://acme-recs/topx/work"
CONFIG = "s3://acme-recs/topx/config/topx.toml"  # the job definition's default `config` parameter
JOB_TOML = """
[data.synth]
users = 60
items = 90
interactions = 2500
seed = 5
[train.hyperparameters]
epochs = 2
num_factors = 8
[search]
top = 7
"""
SHARDED_MACHINE = DEPLOY / "schedule" / "state-machine-sharded.asl.json"


@pytest.fixture
def aws(monkeypatch):
    """moto with the queue, the job definition from deploy/, and the bucket holding the job's config."""
    fake_credentials(monkeypatch)
    with mock_aws(config={"batch": {"use_docker": False}, "stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("batch")
        make_queue(boto3.client("iam"), client)
        client.register_job_definition(**job_definition())
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="acme-recs", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(Bucket="acme-recs", Key="topx/config/topx.toml", Body=JOB_TOML.encode())
        storage.set_s3_client(s3)
        try:
            yield client
        finally:
            storage.set_s3_client(None)


def environment(job: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["container"]["environment"]}


def command(job: dict) -> list[str]:
    """The container's command with the job's parameters filled in, as Batch runs it."""
    params = job["parameters"]
    return [params.get(arg.removeprefix("Ref::"), arg) if arg.startswith("Ref::") else arg
            for arg in job["container"]["command"]]


def submitted(aws, topx, *extra: str) -> tuple[dict, list[dict]]:
    code, summary, err = topx("submit", "--queue", "topx", "--name", "nightly", "--shards", "3", "--workdir", WORKDIR,
                              *extra)
    assert code == 0, err
    return summary, [batch_jobs.describe(aws, job["jobId"]) for job in summary["jobs"]]


# ---- submit ------------------------------------------------------------------------------------

def test_submit_shards_chains_prepare_array_and_finalize_with_one_run_id(aws, topx):
    summary, (prepare, shards, final) = submitted(aws, topx, "--wait", "--poll", "0")

    assert [j["role"] for j in summary["jobs"]] == ["prepare", "shards", "finalize"]
    assert all(j["status"] == "SUCCEEDED" for j in summary["jobs"])
    assert [j["jobName"] for j in (prepare, shards, final)] == ["nightly-prepare", "nightly-shards", "nightly-finalize"]
    assert shards["arrayProperties"]["size"] == 3
    assert shards["dependsOn"] == [{"jobId": prepare["jobId"]}] and final["dependsOn"] == [{"jobId": shards["jobId"]}]
    assert [command(j)[0] for j in (prepare, shards, final)] == ["run", "shard", "finalize"]
    assert {environment(j)["TOPX_RUN_ID"] for j in (prepare, shards, final)} == {summary["run_id"]}
    assert {environment(j)["TOPX_WORKDIR"] for j in (prepare, shards, final)} == {WORKDIR}
    assert environment(prepare)["TOPX_SHARD_COUNT"] == environment(shards)["TOPX_SHARD_COUNT"] == "3"
    for job in (prepare, shards, final):  # what each container runs parses as the topx command it names
        assert batch.cli.build_parser().parse_args(command(job)).command == command(job)[0]


def test_dry_run_prints_three_requests_and_calls_nothing(topx, monkeypatch):
    def no_aws(*args, **kwargs):
        raise AssertionError("a dry run must not create an AWS client")

    monkeypatch.setattr(boto3, "client", no_aws)
    monkeypatch.setattr(batch_jobs, "client", no_aws)
    code, summary, _ = topx("submit", "--queue", "topx", "--name", "n1", "--shards", "4", "--workdir", WORKDIR,
                            "--env", "TOPX_TOP=20", "--dry-run")
    assert code == 0 and summary["dry_run"] is True
    prepare, shards, final = summary["requests"]
    assert [r["parameters"]["stage"] for r in (prepare, shards, final)] == ["run", "shard", "finalize"]
    assert shards["arrayProperties"] == {"size": 4} and "arrayProperties" not in prepare
    assert shards["dependsOn"] == [{"jobId": "<jobId of the prepare job>"}]
    assert final["dependsOn"] == [{"jobId": "<jobId of the array job>"}]
    for request in (prepare, shards, final):
        env = {e["name"]: e["value"] for e in request["containerOverrides"]["environment"]}
        assert env["TOPX_RUN_ID"] == summary["run_id"] and env["TOPX_TOP"] == "20"


@pytest.mark.parametrize("argv, message", [
    (("--shards", "3"), "must be an s3:// prefix"),
    (("--shards", "3", "--workdir", "/tmp/work"), "must be an s3:// prefix"),
    (("--shards", "1", "--workdir", WORKDIR), "--shards must be 2 to 10000"),
    (("--shards", "3", "--workdir", WORKDIR, "--array-size", "3"), "makes its own three jobs"),
    (("--shards", "3", "--workdir", WORKDIR, "--command", "cleanup"), "makes its own three jobs"),
])
def test_bad_sharded_submissions_are_input_errors(topx, argv, message):
    code, _, err = topx("submit", "--queue", "q", "--dry-run", *argv)
    assert code == 2 and message in err


# ---- the jobs, played ---------------------------------------------------------------------------

def play(job: dict, monkeypatch, topx, machine: str, index: int | None = None) -> dict:
    """Run one Batch job's container in-process: its command, its TOPX_* environment, a scratch
    directory of its own (another machine), and AWS_BATCH_JOB_ARRAY_INDEX for an array child."""
    with monkeypatch.context() as env:
        for name in [n for n in os.environ if n.startswith("TOPX_")]:
            env.delenv(name)
        for name, value in environment(job).items():
            if name.startswith("TOPX_"):
                env.setenv(name, value)
        env.setenv("TOPX_SCRATCH", machine)
        if index is not None:
            env.setenv("AWS_BATCH_JOB_ARRAY_INDEX", str(index))
        code, summary, err = topx(*command(job))
    assert code == 0, err
    return summary


def test_a_submitted_sharded_run_end_to_end(aws, topx, db_url, monkeypatch, tmp_path):
    # Train locally (the job definition's backend is SageMaker) and publish to the test's database.
    # Small data: the run ranks below the popularity list, which is not what this test is about.
    summary, (prepare, shards, final) = submitted(aws, topx, "--env", "TOPX_TRAIN_BACKEND=local",
                                                  "--env", f"TOPX_DATABASE_URL={db_url}",
                                                  "--env", "TOPX_PUBLISH_GATE_ALLOW_REGRESSION=true")
    run_id = summary["run_id"]

    prepared = play(prepare, monkeypatch, topx, str(tmp_path / "machine-prepare"))
    assert prepared["status"] == "collecting" and prepared["run_id"] == run_id
    children = sorted(c["jobId"] for c in aws.list_jobs(arrayJobId=shards["jobId"])["jobSummaryList"])
    loaded = [play(batch_jobs.describe(aws, child), monkeypatch, topx, str(tmp_path / f"machine-{i}"), index=i)
              for i, child in enumerate(children)]
    finalized = play(final, monkeypatch, topx, str(tmp_path / "machine-final"))

    assert [s["shard"] for s in loaded] == [0, 1, 2] and sum(s["users"] for s in loaded) == 60
    assert finalized["status"] == "current" and finalized["rows"] == 60 * 7
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT run_id, COUNT(*), COUNT(DISTINCT user_id) FROM current_recommendations "
                                    "GROUP BY run_id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(run_id, 60 * 7, 60)]
    state = json.loads(storage.read_bytes(f"{WORKDIR}/runs/{run_id}/run.json"))
    assert state["status"] == "published" and {"collect", "finalize"} <= set(state["stages"])


# ---- the sharded state machine -------------------------------------------------------------------

def run_sharded_machine(shards: int) -> tuple[dict, list[dict]]:
    batch, sfn = boto3.client("batch"), boto3.client("stepfunctions")
    boto3.client("sns").create_topic(Name="topx-alerts")
    arn = sfn.create_state_machine(name="topx-sharded", definition=json.dumps(render(SHARDED_MACHINE, **VALUES)),
                                   roleArn=f"arn:aws:iam::{ACCOUNT}:role/topx-state-machine")["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name="nightly-1", input=json.dumps({"shards": shards}))
    for _ in range(200):  # the executor runs in a thread; bounded wait for it to finish
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if described["status"] != "RUNNING":
            break
        time.sleep(0.05)
    jobs = batch.list_jobs(jobQueue="topx", jobStatus="SUCCEEDED")["jobSummaryList"]
    parents = [j for j in jobs if ":" not in j["jobId"]]  # an array child is ARRAY_ID:INDEX
    return described, [batch_jobs.describe(batch, j["jobId"]) for j in parents]


def test_sharded_state_machine_runs_prepare_shards_and_finalize(aws):
    with step_functions_batch_casing():
        described, jobs = run_sharded_machine(3)
    assert described["status"] == "SUCCEEDED"
    by_name = {j["jobName"]: j for j in jobs}
    assert set(by_name) == {"topx-prepare", "topx-shards", "topx-finalize"}
    assert by_name["topx-shards"]["arrayProperties"]["size"] == 3
    assert [command(by_name[n])[0] for n in ("topx-prepare", "topx-shards", "topx-finalize")] == \
        ["run", "shard", "finalize"]
    for job in by_name.values():  # one run id (the execution's name), the shared work directory, local search
        env = environment(job)
        assert env["TOPX_RUN_ID"] == "nightly-1" and env["TOPX_SEARCH_BACKEND"] == "local"
        assert env["TOPX_WORKDIR"] == "s3://acme-recs/topx/work"
    assert environment(by_name["topx-shards"])["TOPX_SHARD_COUNT"] == "3"


def test_sharded_state_machine_settles_the_run_and_fails_when_a_job_fails(aws, monkeypatch):
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")  # every Batch job fails
    with step_functions_batch_casing():
        described, _ = run_sharded_machine(2)
    assert described["status"] == "FAILED" and described["error"] == "TopxJobFailed"
    history = boto3.client("stepfunctions").get_execution_history(executionArn=described["executionArn"])["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert entered == ["NameTheRun", "Prepare", "SettleFailedRun", "NotifyFailure", "Failed"]
