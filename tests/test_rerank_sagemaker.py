"""NeuMF as a SageMaker script-mode job: the real entry point, run by the emulator, trains the
same weights as the local engine."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from sagemaker_fixtures import BUCKET, emulated_aws, sagemaker_config

from batch.aws.sagemaker_jobs import TrainingJobFailedError
from batch.rerank import ncf
from batch.rerank.sagemaker import PACKAGE, SOURCE, train_ncf_job
from batch.rundir import RunDir

SETTINGS = ncf.NCFSettings(factors=4, layers=(16, 8), epochs=2, batch_size=64, seed=3, device="cpu")


@pytest.fixture
def aws():
    with emulated_aws() as aws:
        yield aws


@pytest.fixture
def run(tmp_path):
    """A run directory holding a channel file of 30 users × 40 items."""
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 30 * 40, 300))
    run = RunDir(tmp_path / "runs" / "run-7")
    run.file("rerank").mkdir(parents=True)
    ncf.save_interactions(run.file("rerank/interactions.npz"), keys // 40, keys % 40, 30, 40)
    return run


def test_the_emulated_job_trains_the_weights_of_the_local_engine(aws, run):
    made = train_ncf_job(sagemaker_config(), aws.clients(), run, run.file("rerank/interactions.npz"),
                         SETTINGS.to_hyperparameters())
    assert made == run.file("rerank/model.tar.gz") and aws.training_jobs() == ["topx-run-7-ncf"]
    remote, settings = ncf.load_artifact(made)
    assert settings == ncf.NCFSettings(**{**vars(SETTINGS), "device": "auto"})  # the instance picks the device
    local = ncf.train_ncf(*ncf.load_interactions(run.file("rerank/interactions.npz")), SETTINGS)
    theirs, ours = remote.state_dict(), local.state_dict()
    assert list(theirs) == list(ours)
    for name in ours:
        assert torch.equal(theirs[name], ours[name]), name


def test_the_job_ships_entry_and_ncf_as_they_are(aws, run):
    aws.emulator.fail_next("training", "CapacityError: no ml.g5.xlarge capacity")  # no need to train here
    with pytest.raises(TrainingJobFailedError, match="no ml.g5.xlarge capacity"):
        train_ncf_job(sagemaker_config(script_instance_type="ml.g5.xlarge"), aws.clients(), run,
                      run.file("rerank/interactions.npz"), SETTINGS.to_hyperparameters(), run_id="nightly")
    (request,) = aws.sent("CreateTrainingJob")
    assert request["TrainingJobName"] == "topx-nightly-ncf"
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.8.0-gpu-py312")
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    hyper = {k: json.loads(v) for k, v in request["HyperParameters"].items()}
    assert hyper["sagemaker_program"] == "entry.py" and hyper["device"] == "auto" and hyper["layers"] == "16,8"
    key = "runs/nightly/ncf/topx-nightly-ncf/source/sourcedir.tar.gz"
    assert hyper["sagemaker_submit_directory"] == f"s3://{BUCKET}/{key}"
    body = aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        shipped = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert shipped == {name: (PACKAGE / name).read_bytes() for name in ("entry.py", "ncf.py")}
    assert body == SOURCE.package()
