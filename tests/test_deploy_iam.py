"""deploy/iam: least-privilege policies and trust documents for the five roles.

Each is checked against botocore's CreateRole/PutRolePolicy input shapes and created in moto
(which validates policy grammar); what a role may and may not do is checked with a small IAM
evaluator (moto has no policy simulator).
"""

from __future__ import annotations

import json

import boto3
import pytest
from aws_env import ACCOUNT, DEPLOY, REGION, VALUES, fake_credentials, job_definition, validate
from iam_policy import allowed
from moto import mock_aws

from batch.aws.deploy import ROLES, render

IAM = DEPLOY / "iam"
# The only actions granted on Resource "*": AWS offers no resource-level permission for them.
UNSCOPABLE = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "batch:DescribeJobs"}
SAGEMAKER = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
BUCKET = f"arn:aws:s3:::{VALUES['Bucket']}"


def policy(role: str) -> dict:
    return render(IAM / f"{ROLES[role]}-policy.json", **VALUES)


def trust(role: str) -> dict:
    return render(IAM / f"{ROLES[role]}-trust.json", **VALUES)


def test_every_file_belongs_to_a_role():
    expected = {f"{stem}-{kind}.json" for stem in ROLES.values() for kind in ("policy", "trust")}
    assert {p.name for p in IAM.glob("*.json")} == expected


@pytest.mark.parametrize("role", ROLES)
def test_role_requests_fit_the_iam_api(role):
    validate("iam", "CreateRole", {"RoleName": role, "AssumeRolePolicyDocument": json.dumps(trust(role))})
    validate("iam", "PutRolePolicy", {"RoleName": role, "PolicyName": role,
                                      "PolicyDocument": json.dumps(policy(role))})


@pytest.mark.parametrize("role", ROLES)
def test_no_wildcard_actions_and_scoped_resources(role):
    for statement in policy(role)["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert statement["Effect"] == "Allow" and statement.get("Sid")
        assert not any("*" in action for action in actions), statement
        if "*" in resources:
            assert set(actions) <= UNSCOPABLE, statement


def test_roles_are_created_in_moto(monkeypatch):
    fake_credentials(monkeypatch)
    with mock_aws():
        iam = boto3.client("iam")
        for role in ROLES:
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust(role)))
            iam.put_role_policy(RoleName=role, PolicyName=role, PolicyDocument=json.dumps(policy(role)))
        arns = {r["RoleName"]: r["Arn"] for r in iam.list_roles()["Roles"]}
    props = job_definition()["containerProperties"]
    assert props["jobRoleArn"] == arns["topx-job"]
    assert props["executionRoleArn"] == arns["topx-batch-execution"]


@pytest.mark.parametrize("role, service", [
    ("topx-job", "ecs-tasks.amazonaws.com"), ("topx-batch-execution", "ecs-tasks.amazonaws.com"),
    ("topx-sagemaker-execution", "sagemaker.amazonaws.com"), ("topx-state-machine", "states.amazonaws.com"),
    ("topx-scheduler", "scheduler.amazonaws.com"),
])
def test_trust_names_the_one_service(role, service):
    [statement] = trust(role)["Statement"]
    assert statement["Principal"] == {"Service": service} and statement["Action"] == "sts:AssumeRole"


@pytest.mark.parametrize("action, resource, ok", [
    ("sagemaker:CreateTrainingJob", f"{SAGEMAKER}:training-job/topx-20260101-fm", True),
    ("sagemaker:CreateTrainingJob", f"{SAGEMAKER}:training-job/other-x", False),
    ("sagemaker:StopTransformJob", f"{SAGEMAKER}:transform-job/topx-knn-1", True),
    ("sagemaker:CreateModel", f"{SAGEMAKER}:model/topx-knn-1", True),
    ("sagemaker:ListTags", f"{SAGEMAKER}:training-job/topx-20260101-fm", True),
    ("sagemaker:DeleteModel", f"{SAGEMAKER}:model/prod-fraud", False),
    ("sagemaker:DeleteModel", f"{SAGEMAKER}:model/topx-knn-1", False),  # topx never deletes a model
    ("sagemaker:CreateEndpoint", f"{SAGEMAKER}:endpoint/topx-x", False),
    ("s3:GetObject", f"{BUCKET}/topx/data/u.data", True),
    ("s3:PutObject", f"{BUCKET}/topx/sagemaker/train/part-0", True),
    ("s3:GetObject", f"{BUCKET}/billing/invoices.csv", False),
    ("s3:GetObject", "arn:aws:s3:::other-bucket/topx/u.data", False),
    ("s3:DeleteBucket", BUCKET, False),
    ("secretsmanager:GetSecretValue", VALUES["DatabaseSecretArn"], True),
    ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:admin-AbCdEf", False),
    ("logs:GetLogEvents",  # nor reads logs: its own go to CloudWatch through the Batch execution role
     f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs:log-stream:topx-1/algo-1", False),
    ("logs:GetLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/x:log-stream:a", False),
])
def test_job_role_may_only_touch_its_own_things(action, resource, ok):
    assert allowed(policy("topx-job"), action, resource) is ok


@pytest.mark.parametrize("prefix, ok", [("topx/", True), ("topx/data/", True), ("billing/", False), (None, False)])
def test_job_role_lists_only_its_prefix(prefix, ok):
    context = {} if prefix is None else {"s3:prefix": prefix}
    assert allowed(policy("topx-job"), "s3:ListBucket", BUCKET, context) is ok


@pytest.mark.parametrize("role_name, service, ok", [
    ("topx-sagemaker-execution", "sagemaker.amazonaws.com", True),
    ("topx-sagemaker-execution", "ec2.amazonaws.com", False),
    ("topx-job", "sagemaker.amazonaws.com", False),
    ("admin", "sagemaker.amazonaws.com", False),
])
def test_job_role_passes_only_the_sagemaker_role_to_sagemaker(role_name, service, ok):
    context = {"iam:PassedToService": service}
    assert allowed(policy("topx-job"), "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/{role_name}", context) is ok


def test_sagemaker_role_reads_and_writes_only_its_prefix():
    role = policy("topx-sagemaker-execution")
    assert allowed(role, "s3:GetObject", f"{BUCKET}/topx/sagemaker/train/part-0")
    # a script-mode container fetches its own code with the role
    assert allowed(role, "s3:GetObject", f"{BUCKET}/topx/sagemaker/run-1/ncf/topx-run-1-ncf/source/sourcedir.tar.gz")
    assert not allowed(role, "s3:GetObject", f"{BUCKET}/topx/config/topx.toml")
    assert allowed(role, "s3:ListBucket", BUCKET, {"s3:prefix": "topx/sagemaker/train/"})
    assert not allowed(role, "s3:ListBucket", BUCKET, {"s3:prefix": "topx/"})
    assert not allowed(role, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/topx-job")


def test_state_machine_role_submits_only_topx_jobs():
    role = policy("topx-state-machine")
    batch = f"arn:aws:batch:{REGION}:{ACCOUNT}"
    assert allowed(role, "batch:SubmitJob", f"{batch}:job-definition/topx:3")
    assert allowed(role, "batch:SubmitJob", f"{batch}:job-queue/topx")
    assert not allowed(role, "batch:SubmitJob", f"{batch}:job-definition/other:1")
    rules = f"arn:aws:events:{REGION}:{ACCOUNT}:rule"
    assert allowed(role, "events:PutRule", f"{rules}/StepFunctionsGetEventsForBatchJobsRule")
    assert not allowed(role, "events:PutRule", f"{rules}/other")
    assert allowed(role, "sns:Publish", VALUES["AlertTopicArn"])


def test_scheduler_role_starts_only_the_topx_state_machine():
    role = policy("topx-scheduler")
    states = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine"
    assert allowed(role, "states:StartExecution", f"{states}:topx")
    assert not allowed(role, "states:StartExecution", f"{states}:other")
