"""deploy/: the Batch job definition, the Step Functions state machine and the schedule.

Each definition is rendered with :func:`batch.aws.deploy.render`, checked against the botocore
input shape of the API that takes it, and, where moto implements the API, registered in moto.
"""

from __future__ import annotations

import json
import re
import time

import boto3
import pytest
from aws_env import (
    ACCOUNT,
    DEPLOY,
    REGION,
    VALUES,
    fake_credentials,
    job_definition,
    make_queue,
    step_functions_batch_casing,
    validate,
)
from moto import mock_aws

from batch.aws.deploy import main, placeholders, render
from batch.config import load_config
from batch.errors import ConfigError

STATE_MACHINE = DEPLOY / "schedule" / "state-machine.asl.json"
SCHEDULE = DEPLOY / "schedule" / "eventbridge-schedule.json"


@pytest.fixture
def aws(monkeypatch):
    fake_credentials(monkeypatch)
    monkeypatch.delenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", raising=False)
    with mock_aws(config={"batch": {"use_docker": False}, "stepfunctions": {"execute_state_machine": True}}):
        yield


def test_values_cover_every_placeholder_and_nothing_is_left():
    for path in DEPLOY.rglob("*.json"):
        assert placeholders(json.loads(path.read_text())) <= VALUES.keys(), path
        assert "${" not in json.dumps(render(path, **VALUES)).replace("${aws:", ""), path


def test_render_keeps_types_leaves_iam_variables_and_cannot_break_json(tmp_path):
    template = tmp_path / "t.json"
    template.write_text('{"n": "${N}", "s": "id-${N}", "q": "${Q}", "iam": "home/${aws:username}/*"}')
    out = render(template, N=7, Q='a"b\\c')
    assert out == {"n": 7, "s": "id-7", "q": 'a"b\\c', "iam": "home/${aws:username}/*"}
    with pytest.raises(ConfigError, match=r"\$\{N\}, \$\{Q\}"):
        render(template)


def test_command_line_renders_the_tree(tmp_path, capsys):
    args = [f"{k}={v}" for k, v in VALUES.items() if k != "TimeoutSeconds"] + ["TimeoutSeconds:=86400"]
    assert main(["--source", str(DEPLOY), "--out", str(tmp_path), *args]) == 0
    rendered = json.loads((tmp_path / "batch-job-definition.json").read_text())
    assert rendered["timeout"]["attemptDurationSeconds"] == 86400
    assert len(json.loads(capsys.readouterr().out)["files"]) == len(list(DEPLOY.rglob("*.json")))
    assert main(["--source", str(DEPLOY), "--out", str(tmp_path), "Region=x"]) == 2


# ---- the Batch job definition ------------------------------------------------------------

def test_job_definition_fits_register_job_definition():
    validate("batch", "RegisterJobDefinition", job_definition())


def test_every_command_parameter_has_a_default():
    jd = job_definition()
    refs = {arg[len("Ref::"):] for arg in jd["containerProperties"]["command"] if arg.startswith("Ref::")}
    assert refs == {"stage", "config"} and refs <= jd["parameters"].keys()


def test_job_environment_is_accepted_by_the_configuration():
    env = {e["name"]: e["value"] for e in job_definition()["containerProperties"]["environment"]}
    config = load_config(env={k: v for k, v in env.items() if k.startswith("TOPX_")})
    assert config.publish.database_secret_arn == VALUES["DatabaseSecretArn"]
    assert config.publish.database_url is None  # the URL never sits in the job definition
    assert config.train.backend == config.search.backend == "sagemaker"
    assert config.workdir == f"s3://{VALUES['Bucket']}/{VALUES['Prefix']}/work"  # retried attempts resume from it
    assert config.sagemaker.role_arn.endswith(":role/topx-sagemaker-execution")
    assert env["AWS_DEFAULT_REGION"] == REGION


def batch_action(strategy: dict, *, exit_code: int | None = None, reason: str = "", status_reason: str = "") -> str:
    """What AWS Batch does with a failed attempt: the first rule whose given patterns all match
    decides; a pattern ending in * matches a prefix; no match at all means RETRY."""
    seen = {"onExitCode": "" if exit_code is None else str(exit_code), "onReason": reason,
            "onStatusReason": status_reason}
    for rule in strategy["evaluateOnExit"]:
        tests = {k: v for k, v in rule.items() if k != "action"}
        if all(seen[k].startswith(p[:-1]) if p.endswith("*") else seen[k] == p for k, p in tests.items()):
            return rule["action"].upper()
    return "RETRY"


@pytest.mark.parametrize("failure, action", [
    ({"exit_code": 2, "status_reason": "Essential container in task exited"}, "EXIT"),  # bad input
    ({"exit_code": 1, "status_reason": "Essential container in task exited"}, "EXIT"),
    ({"exit_code": 3, "status_reason": "Essential container in task exited"}, "EXIT"),  # refused by the gate
    ({"status_reason": "Host EC2 (instance i-0abc) terminated."}, "RETRY"),  # spot reclaim, host failure
    ({"exit_code": 137}, "RETRY"),  # SIGKILL from outside
    ({"exit_code": 75}, "RETRY"),  # a temporary failure: database or AWS unreachable, SIGTERM (batch.transient)
    ({"exit_code": 137, "reason": "OutOfMemoryError: Container killed due to memory usage"}, "EXIT"),
    ({"reason": "CannotPullContainerError: pull image manifest has been retried 5 time(s)"}, "EXIT"),
])
def test_retry_strategy_retries_infrastructure_only(failure, action):
    assert batch_action(job_definition()["retryStrategy"], **failure) == action


def test_retry_patterns_are_valid_batch_globs():
    strategy = job_definition()["retryStrategy"]
    assert 1 <= strategy["attempts"] <= 10 and len(strategy["evaluateOnExit"]) <= 5
    for rule in strategy["evaluateOnExit"]:
        for key, pattern in rule.items():
            allowed = {"onExitCode": r"[0-9]*\*?", "action": "RETRY|EXIT"}.get(key, r"[A-Za-z0-9.: \t]*\*?")
            assert re.fullmatch(allowed, pattern), (key, pattern)


def test_job_definition_registers_in_moto(aws):
    client = boto3.client("batch")
    arn = client.register_job_definition(**job_definition())["jobDefinitionArn"]
    registered = client.describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"][0]
    assert registered["containerProperties"]["command"] == ["Ref::stage", "--config", "Ref::config"]
    assert registered["timeout"] == {"attemptDurationSeconds": 86_400}
    assert registered["retryStrategy"]["attempts"] == 3


# ---- the state machine ---------------------------------------------------------------------

def state_machine() -> dict:
    return render(STATE_MACHINE, **VALUES)


def test_state_machine_structure():
    asl = state_machine()
    states = asl["States"]
    task = states[asl["StartAt"]]
    assert task["Resource"] == "arn:aws:states:::batch:submitJob.sync"
    assert task["Parameters"]["JobDefinition"] == job_definition()["jobDefinitionName"]
    for name, state in states.items():
        targets = [state.get("Next")] + [c["Next"] for c in state.get("Catch", [])]
        assert all(t in states for t in targets if t), name
        assert state["Type"] in ("Succeed", "Fail") or ("Next" in state) != bool(state.get("End")), name
    # A failed job is caught, reported and ends in the Fail state; success ends in Succeed.
    assert [c["ErrorEquals"] for c in task["Catch"]] == [["States.ALL"]]
    notify = states[task["Catch"][0]["Next"]]
    assert notify["Resource"] == "arn:aws:states:::sns:publish"
    assert states[notify["Next"]]["Type"] == "Fail" and states[notify["Catch"][0]["Next"]]["Type"] == "Fail"
    assert states[task["Next"]]["Type"] == "Succeed"


def test_state_machine_retries_only_api_errors():
    for retry in state_machine()["States"]["RunTopx"]["Retry"]:
        assert all(error.startswith("Batch.") for error in retry["ErrorEquals"]), retry
        assert retry["MaxAttempts"] <= 3


def test_state_machine_fits_create_state_machine():
    validate("stepfunctions", "CreateStateMachine", {
        "name": "topx", "definition": json.dumps(state_machine()),
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/topx-state-machine", "type": "STANDARD"})


def run_execution(fail: bool, monkeypatch) -> tuple[dict, dict]:
    """Run the state machine once in moto; the Batch job succeeds or fails as told."""
    batch, sfn, sns = (boto3.client(s) for s in ("batch", "stepfunctions", "sns"))
    make_queue(boto3.client("iam"), batch)
    batch.register_job_definition(**job_definition())
    sns.create_topic(Name="topx-alerts")
    arn = sfn.create_state_machine(name="topx", definition=json.dumps(state_machine()),
                                   roleArn=f"arn:aws:iam::{ACCOUNT}:role/topx-state-machine")["stateMachineArn"]
    if fail:  # moto's Docker-free Batch fails every job while this is set
        monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")
    execution = sfn.start_execution(stateMachineArn=arn, name="nightly", input="{}")["executionArn"]
    for _ in range(200):  # the executor runs in a thread; bounded wait for it to finish
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            break
        time.sleep(0.05)
    events = sfn.get_execution_history(executionArn=execution)["events"]
    return described, {e["type"]: e for e in events}


def test_state_machine_runs_the_job_to_success(aws, monkeypatch):
    with step_functions_batch_casing():
        described, _ = run_execution(False, monkeypatch)
    assert described["status"] == "SUCCEEDED"
    job = json.loads(described["output"])["job"]
    assert job["Status"] == "SUCCEEDED" and job["JobName"] == "topx-scheduled"
    # the execution's name is the run id of every attempt of the job
    environment = boto3.client("batch").describe_jobs(jobs=[job["JobId"]])["jobs"][0]["container"]["environment"]
    assert {"name": "TOPX_RUN_ID", "value": "nightly"} in environment
    listed = boto3.client("batch").list_jobs(jobQueue="topx", jobStatus="SUCCEEDED")["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [job["JobId"]]


def test_state_machine_reports_and_fails_when_the_job_fails(aws, monkeypatch):
    from moto.sns.models import sns_backends

    with step_functions_batch_casing():
        described, events = run_execution(True, monkeypatch)
    assert described["status"] == "FAILED" and described["error"] == "TopxJobFailed"
    assert events["TaskFailed"]["taskFailedEventDetails"]["error"] == "States.TaskFailed"
    topic = sns_backends[ACCOUNT][REGION].topics[VALUES["AlertTopicArn"]]
    [(_, message, subject, *_)] = topic.sent_notifications
    assert subject == "topx run failed"
    error = json.loads(message)
    assert error["Error"] == "States.TaskFailed" and json.loads(error["Cause"])["Status"] == "FAILED"


# ---- the schedule --------------------------------------------------------------------------

def test_schedule_fits_create_schedule_and_starts_the_state_machine(aws):
    schedule = render(SCHEDULE, **VALUES)
    validate("scheduler", "CreateSchedule", schedule)
    arn = boto3.client("stepfunctions").create_state_machine(
        name="topx", definition=json.dumps(state_machine()),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/topx-state-machine")["stateMachineArn"]
    assert schedule["Target"]["Arn"] == arn
    assert schedule["Target"]["RoleArn"].endswith(":role/topx-scheduler")
    client = boto3.client("scheduler")
    client.create_schedule(**schedule)
    stored = client.get_schedule(Name=schedule["Name"])
    assert stored["ScheduleExpression"] == "cron(0 3 * * ? *)" and stored["Target"]["Arn"] == arn


def test_readme_documents_every_placeholder_role_and_variable():
    readme = (DEPLOY / "README.md").read_text()
    names = set(VALUES) | {f"topx-{stem}" for stem in ("job", "batch-execution", "sagemaker-execution")}
    names |= {e["name"] for e in job_definition()["containerProperties"]["environment"]}
    assert [name for name in sorted(names) if f"`{name}`" not in readme] == []
