"""Script-mode training jobs (the PyTorch framework container): packaging, the request against the
SageMaker SDK's PyTorch estimator, and the emulator running a fixture entry point."""

from __future__ import annotations

import copy
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from botocore.validate import validate_parameters
from oracles import run_oracle
from sagemaker_fixtures import BUCKET, REGION, ROLE, emulated_aws, sagemaker_config

from batch.aws.images import PYTORCH_ACCOUNTS, pytorch_image
from batch.aws.sagemaker_jobs import TRAINING, JobInputsChangedError, JobRunner, TrainingJobFailedError
from batch.aws.script_jobs import ScriptJob, ScriptSource, script_hyperparameters
from batch.aws.session import SageMakerSession
from batch.emulator.script import REASON_LIMIT, failure_reason, to_cmd_args, to_env_vars
from batch.errors import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "script_job"
SOURCE = ScriptSource((FIXTURE / "entry.py", FIXTURE / "counting.py"), "entry.py")
INSTANCE = "ml.c5.xlarge"


@pytest.fixture
def aws():
    with emulated_aws() as aws:
        yield aws


@pytest.fixture
def channel_file(tmp_path):
    path = tmp_path / "interactions.npz"
    np.savez(path, users=np.array([0, 0, 2, 3, 3, 3], np.int64), items=np.array([1, 2, 0, 4, 1, 2], np.int64),
             n_users=np.int64(5), n_items=np.int64(6))
    return path


def script_job(aws, source=SOURCE, run_id="run-1", **settings):
    session = SageMakerSession(sagemaker_config(**settings).sagemaker, run_id, sagemaker_client=aws.sagemaker,
                               s3_client=aws.s3)
    return ScriptJob(session, "ncf", source, pytorch_image(REGION, INSTANCE), INSTANCE)


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def object_keys(aws) -> list[str]:
    return sorted(o["Key"] for o in aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/run-1/ncf/")["Contents"])


# ---------------------------------------------------------------- packaging and hyperparameters


def test_sourcedir_packs_the_files_flat_and_always_to_the_same_bytes(tmp_path):
    first = SOURCE.package()
    copies = []
    for path in SOURCE.files:  # same content, other mtimes and modes
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())
        os.chmod(copy, 0o600)
        os.utime(copy, (1_000_000, 1_000_000))
        copies.append(copy)
    assert ScriptSource(tuple(reversed(copies)), "entry.py").package() == first
    assert first[:2] == b"\x1f\x8b" and first[4:8] == bytes(4)  # gzip, without a timestamp
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        found = tar.getmembers()
    assert [m.name for m in found] == ["counting.py", "entry.py"]
    assert {(m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname) for m in found} == {(0o644, 0, 0, 0, "", "")}
    assert tarfile.open(fileobj=io.BytesIO(first)).extractfile("entry.py").read() == (FIXTURE / "entry.py").read_bytes()


def test_a_source_must_hold_its_program_once():
    with pytest.raises(ValueError, match="not among"):
        ScriptSource((FIXTURE / "counting.py",), "entry.py")
    with pytest.raises(ValueError, match="share a name"):
        ScriptSource((FIXTURE / "entry.py", FIXTURE / "entry.py"), "entry.py")


def test_hyperparameters_are_json_encoded_and_the_toolkits_names_are_refused():
    hyper = script_hyperparameters({"epochs": "3", "lr": 0.001, "layers": [64, 32]}, program="entry.py",
                                   submit_directory="s3://b/k/sourcedir.tar.gz", job_name="j", region=REGION)
    assert hyper == {"epochs": '"3"', "lr": "0.001", "layers": "[64, 32]", "sagemaker_program": '"entry.py"',
                     "sagemaker_submit_directory": '"s3://b/k/sourcedir.tar.gz"',
                     "sagemaker_container_log_level": "20", "sagemaker_job_name": '"j"',
                     "sagemaker_region": f'"{REGION}"'}
    with pytest.raises(ConfigError, match="sagemaker_program"):
        script_hyperparameters({"sagemaker_program": "x.py"}, program="entry.py", submit_directory="s3://b/k",
                               job_name="j", region=REGION)


def test_the_pytorch_image_follows_the_instance_family_and_config():
    assert pytorch_image("eu-west-1", "ml.c5.xlarge") == \
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.8.0-cpu-py312"
    assert pytorch_image("af-south-1", "ml.g5.2xlarge") == \
        "626614931356.dkr.ecr.af-south-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
    assert pytorch_image("cn-north-1", "ml.p3.2xlarge", "registry.example/torch:1") == "registry.example/torch:1"
    with pytest.raises(ConfigError, match="sagemaker.pytorch_image"):
        pytorch_image("cn-north-1", "ml.c5.xlarge")
    for unsupported in ("ml.inf2.xlarge", "ml.trn1.2xlarge", "c5.xlarge", "local"):
        with pytest.raises(ConfigError, match="Inferentia or Trainium"):
            pytorch_image("eu-west-1", unsupported)


# ---------------------------------------------------------------- the SDK as the oracle

SDK = """
import json, sys
from unittest import mock
import sagemaker
import sagemaker.image_uris as image_uris
from sagemaker.pytorch import PyTorch
asked = json.loads(sys.argv[1])
images = {f"{r} {t}": image_uris.retrieve("pytorch", r, version="2.8.0", py_version="py312", instance_type=t,
                                          image_scope="training") for r, t in asked["images"]}
sent = []
for case in asked["requests"]:
    client = mock.MagicMock()
    config = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
    session = sagemaker.Session(boto_session=mock.MagicMock(region_name=case["region"]), sagemaker_client=client,
                                sagemaker_config=config)
    spot = ({"use_spot_instances": True, "max_wait": case["max_wait"], "checkpoint_s3_uri": case["checkpoints"]}
            if case["spot"] else {})
    estimator = PyTorch(entry_point=case["program"], source_dir=case["source_dir"], role=case["role"],
                        instance_type=case["instance_type"], instance_count=1, framework_version="2.8.0",
                        py_version="py312", hyperparameters=case["hyperparameters"], output_path=case["output_path"],
                        code_location=case["code_location"], volume_size=case["volume"], max_run=case["max_run"],
                        tags=case["tags"], sagemaker_session=session, **spot)
    estimator.fit({"train": case["train"]}, job_name=case["name"], wait=False, logs=False)
    sent.append(client.create_training_job.call_args.kwargs)
print(json.dumps({"images": images, "requests": sent}))
"""
IMAGE_CASES = [(r, t) for r in sorted(PYTORCH_ACCOUNTS) for t in ("ml.m5.large", "ml.g5.xlarge")] + [
    ("eu-west-1", "ml.c5.xlarge"), ("eu-west-1", "ml.p3.2xlarge")]
JOB_NAME, TAGS = "topx-run-1-ncf-r2", [{"Key": "topx:inputs-sha256", "Value": "ab" * 32}]
OWN = {"epochs": "3", "embedding_size": "8", "layers": "64,32,16,8", "dropout": "0.2"}
SPOT = {False: {}, True: {"use_spot": True, "max_wait_s": 7200}}


def spot_job(aws, spot: bool) -> ScriptJob:
    return script_job(aws, max_runtime_s=3600, **SPOT[spot])


@pytest.fixture(scope="module")
def sdk():
    """The SDK's image URIs for IMAGE_CASES and the requests its PyTorch estimator sends for the
    jobs of :func:`spot_job` (on demand, then spot), from one run of the oracle."""
    cases = []
    for spot in SPOT:
        s = SageMakerSession(sagemaker_config(max_runtime_s=3600, **SPOT[spot]).sagemaker, "run-1")
        cases.append({"region": REGION, "program": "entry.py", "source_dir": str(FIXTURE), "role": ROLE,
                      "instance_type": INSTANCE, "hyperparameters": OWN, "output_path": s.uri("ncf", "output"),
                      "code_location": s.uri("ncf"), "volume": 30, "max_run": 3600, "tags": TAGS,
                      "train": s.uri("ncf", "train") + "/", "name": JOB_NAME, "spot": spot, "max_wait": 7200,
                      "checkpoints": s.uri("ncf", "checkpoints")})
    found = run_oracle("sagemaker", SDK, json.dumps({"images": IMAGE_CASES, "requests": cases}))
    return json.loads(found.splitlines()[-1])  # the SDK logs to stdout before it


def test_the_image_table_is_the_sdks(sdk):
    assert {f"{r} {t}": pytorch_image(r, t) for r, t in IMAGE_CASES} == sdk["images"]


@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
def test_the_request_is_what_the_sdks_pytorch_estimator_sends(aws, sdk, spot):
    ours = spot_job(aws, spot).request(JOB_NAME, TAGS, OWN, channel_bytes=5 * 2**20)
    validate_parameters(ours, aws.sagemaker.meta.service_model.operation_model("CreateTrainingJob").input_shape)
    theirs = copy.deepcopy(sdk["requests"][spot])
    # What the SDK adds on its own and topx does not ask for: the debugger's hook and the
    # profiler's output (SageMaker Debugger), and metrics as time series.
    for extra in ("DebugHookConfig", "ProfilerConfig"):
        theirs.pop(extra)
    theirs["AlgorithmSpecification"].pop("EnableSageMakerMetricsTimeSeries")
    assert ours == theirs


# ---------------------------------------------------------------- the emulator runs the job


def test_the_emulator_runs_the_entry_point_and_its_artifact_comes_back(aws, channel_file, tmp_path):
    destination = tmp_path / "run" / "rerank" / "model.tar.gz"
    outcome = script_job(aws).train(channel_file, {"epochs": "3", "layers": "64,32"}, destination)
    assert outcome.name == "topx-run-1-ncf" and outcome.reused is False
    assert object_keys(aws) == ["runs/run-1/ncf/output/topx-run-1-ncf/output/model.tar.gz",
                                "runs/run-1/ncf/topx-run-1-ncf/source/sourcedir.tar.gz",
                                "runs/run-1/ncf/train/interactions.npz"]
    found = members(destination)
    assert set(found) == {"summary.json", "extra/note.txt"} and found["extra/note.txt"] == b"nested\n"
    summary = json.loads(found["summary.json"])
    assert summary["argv"] == ["--epochs", "3", "--layers", "64,32"]
    assert summary["epochs"] == 3 and summary["counts"] == [2, 0, 1, 3, 0]
    assert summary["topx_importable"] is False  # the container has no topx
    env = summary["env"]
    assert env["SM_CHANNEL_TRAIN"].endswith("/input/data/train") and env["SM_MODEL_DIR"].endswith("/model")
    assert (env["SM_CURRENT_HOST"], env["SM_HOSTS"], env["SM_CHANNELS"]) == ("algo-1", '["algo-1"]', '["train"]')
    assert env["SM_HPS"] == '{"epochs":"3","layers":"64,32"}' and env["SM_HP_EPOCHS"] == "3"
    assert (env["SM_NUM_GPUS"], env["CUDA_VISIBLE_DEVICES"]) == ("0", "")  # a CPU image sees no GPU
    assert env["SM_USER_ENTRY_POINT"] == "entry.py" and env["SM_CURRENT_INSTANCE_TYPE"] == INSTANCE
    assert env["SM_MODULE_DIR"] == f"s3://{BUCKET}/runs/run-1/ncf/topx-run-1-ncf/source/sourcedir.tar.gz"
    assert env["TRAINING_JOB_NAME"] == "topx-run-1-ncf"
    assert not list(destination.parent.glob("*.part"))


def test_a_failing_entry_point_fails_the_job_with_the_end_of_its_stderr(aws, channel_file, tmp_path):
    destination = tmp_path / "model.tar.gz"
    with pytest.raises(TrainingJobFailedError) as failed:
        script_job(aws).train(channel_file, {"epochs": "1", "fail": "no interactions for user 7"}, destination)
    reason = failed.value.reason
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage \"")
    assert "about to fail" in reason and "ValueError: no interactions for user 7" in reason
    assert reason.endswith('Command "python entry.py --epochs 1 --fail no interactions for user 7"')
    assert str(failed.value) == f"SageMaker training job topx-run-1-ncf failed: {reason}"
    assert failed.value.exit_code == 1 and not destination.exists()
    # the run started again makes a new attempt, which succeeds
    outcome = script_job(aws).train(channel_file, {"epochs": "1"}, destination)
    assert (outcome.name, outcome.attempt) == ("topx-run-1-ncf-r2", 2) and destination.exists()


def test_a_script_that_outlives_its_runtime_limit_is_stopped(aws, channel_file, tmp_path):
    with pytest.raises(TrainingJobFailedError) as failed:
        script_job(aws, max_runtime_s=1).train(channel_file, {"epochs": "1", "sleep": "60"}, tmp_path / "model.tar.gz")
    assert failed.value.reason == ("MaxRuntimeExceeded: Training job topx-run-1-ncf ran longer than "
                                   "MaxRuntimeInSeconds (1 s) and was stopped")


def test_a_run_started_again_reuses_its_completed_job(aws, channel_file, tmp_path):
    first, again = tmp_path / "a" / "model.tar.gz", tmp_path / "b" / "model.tar.gz"
    script_job(aws).train(channel_file, {"epochs": "2"}, first)
    outcome = script_job(aws).train(channel_file, {"epochs": "2"}, again)
    assert outcome.reused is True and len(aws.sent("CreateTrainingJob")) == 1
    assert members(again) == members(first)
    with pytest.raises(JobInputsChangedError):
        script_job(aws).train(channel_file, {"epochs": "5"}, again)


def test_a_missing_entry_point_or_channel_file_is_named(aws, channel_file, tmp_path):
    with pytest.raises(ConfigError, match="training data of the ncf job is missing"):
        script_job(aws).train(tmp_path / "absent.npz", {"epochs": "1"}, tmp_path / "model.tar.gz")
    # a sourcedir.tar.gz without the program the job names
    aws.s3.put_object(Bucket=BUCKET, Key="code/sourcedir.tar.gz", Body=ScriptSource(
        (FIXTURE / "counting.py",), "counting.py").package())
    job = script_job(aws)
    request = job.request("topx-run-1-bare", [], {"epochs": "1"}, 10)
    request["HyperParameters"]["sagemaker_submit_directory"] = json.dumps(f"s3://{BUCKET}/code/sourcedir.tar.gz")
    aws.s3.upload_file(str(channel_file), BUCKET, "runs/run-1/ncf/train/interactions.npz")
    aws.sagemaker.create_training_job(**request)
    with pytest.raises(TrainingJobFailedError, match="ClientError: the entry point entry.py is not in"):
        JobRunner(job.session).wait(TRAINING, "topx-run-1-bare")


# ---------------------------------------------------------------- the toolkit's conventions


def test_arguments_and_environment_follow_the_training_toolkit():
    assert to_cmd_args({"model_dir": "/opt/ml/model", "batch_size": 25, "k": 3, "flag": True, "m": {"b": 2, "a": 1}}) \
        == ["--batch_size", "25", "--flag", "True", "-k", "3", "-m", "a=1,b=2", "--model_dir", "/opt/ml/model"]
    assert to_env_vars({"hps": {"b": 1, "a": "x"}, "model_dir": "/opt/ml/model", "num_gpus": 0, "none": None}) == {
        "SM_HPS": '{"a":"x","b":1}', "SM_MODEL_DIR": "/opt/ml/model", "SM_NUM_GPUS": "0", "SM_NONE": ""}


def test_a_failure_reason_keeps_within_sagemakers_limit():
    stderr = "\n".join(f"line {i} " + "x" * 200 for i in range(30)) + "\nValueError: the end"
    reason = failure_reason(2, stderr, "python entry.py")
    assert len(reason) <= REASON_LIMIT and reason.endswith('ValueError: the end"\nCommand "python entry.py"')
    assert "line 29 " in reason and "line 20 " not in reason  # the last lines that fit
