"""NeuMF as a SageMaker script-mode job: the real entry point, run by the emulator, trains the
same weights as the local engine, and ``topx run --backend sagemaker --rerank ncf`` publishes the
lists the local re-ranker gives."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sagemaker_fixtures import BUCKET, REGION, ROLE, emulated_aws, sagemaker_config

from batch.aws.sagemaker_jobs import TrainingJobFailedError
from batch.aws.script_jobs import ScriptSource
from batch.config import load_config
from batch.lists import SOURCE_RERANKED, TopLists
from batch.pipeline import run_job
from batch.rerank import ncf
from batch.rerank.sagemaker import PACKAGE, SOURCE, train_ncf_job
from batch.rerank.train import train_reranker
from batch.rundir import RunDir
from batch.stages import Stages

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


# ---------------------------------------------------------------- topx run --backend sagemaker --rerank ncf

RUN_SETTINGS = {
    "data": {"synth": {"users": 60, "items": 90, "interactions": 2400, "seed": 5}},
    "train": {"hyperparameters": {"epochs": 2, "num_factors": 6, "mini_batch_size": 128}},
    "search": {"top": 8},
    "rerank": {"model": "ncf", "candidates": 20, "ncf": {"factors": 4, "layers": "16,8", "epochs": 2,
                                                         "batch_size": 256, "seed": 1}},
    "sagemaker": {"region": REGION, "role_arn": ROLE, "s3_prefix": f"s3://{BUCKET}/topx", "poll_s": 0.01,
                  "channel_shards": 2},
}


def run_config(tmp_path, backend="sagemaker"):
    tree = json.loads(json.dumps(RUN_SETTINGS))
    tree["workdir"] = str(tmp_path / "work")
    tree["publish"] = {"database_url": f"sqlite:///{tmp_path / 'topx.db'}", "gate": {"allow_regression": True}}
    tree["train"]["backend"] = tree["search"]["backend"] = backend
    return load_config(base=tree, env={})


def test_a_sagemaker_run_publishes_the_lists_the_local_reranker_gives(tmp_path, aws):
    cfg = run_config(tmp_path)
    summary = run_job(cfg, clients=aws.clients())
    run_id = summary["run_id"]
    run = RunDir(tmp_path / "work" / "runs" / run_id)
    assert f"topx-{run_id}-ncf" in aws.training_jobs()
    published = TopLists.load(run.file("lists.npz"))
    assert (published.source == SOURCE_RERANKED).any()

    # the same run directory, re-ranked by a NeuMF the local engine trains: the same weights, the same lists
    twin = RunDir(tmp_path / "twin" / run_id)
    shutil.copytree(run.path, twin.path)
    local_cfg = run_config(tmp_path, backend="local")
    train_reranker(local_cfg, twin, twin.load_dataset(against_model=False))
    (theirs, _), (ours, _) = ncf.load_artifact(run.file("rerank/model.tar.gz")), ncf.load_artifact(
        twin.file("rerank/model.tar.gz"))
    for name, tensor in ours.state_dict().items():
        assert torch.equal(theirs.state_dict()[name], tensor), name
    Stages(local_cfg, twin, run_id).search()
    local = TopLists.load(twin.file("lists.npz"))
    for name, sagemaker_column, local_column in zip(("user", "rank", "item", "score", "probability", "source"),
                                                    published.columns(), local.columns(), strict=True):
        assert np.array_equal(sagemaker_column, local_column), name


def test_a_failing_entry_point_stops_the_run_and_the_resumed_run_reuses_the_fm_job(tmp_path, aws, monkeypatch):
    """The NeuMF job fails (an entry point that does not know NeuMF's hyperparameters): topx says
    why, with SageMaker's FailureReason; the run resumed reuses the FM job and trains NeuMF anew."""
    fixture = Path(__file__).parent / "fixtures" / "script_job"
    monkeypatch.setattr("batch.rerank.sagemaker.SOURCE", ScriptSource((fixture / "entry.py", fixture / "counting.py"),
                                                                       "entry.py"))
    cfg = run_config(tmp_path)
    with pytest.raises(TrainingJobFailedError) as failed:
        run_job(cfg, clients=aws.clients(), run_id="nightly")
    assert str(failed.value).startswith("SageMaker training job topx-nightly-ncf failed: AlgorithmError: "
                                        "ExecuteUserScriptError:\nExitCode 2\n")
    assert "entry.py: error: unrecognized arguments: --batch_size 256 --device auto" in failed.value.reason
    monkeypatch.undo()
    summary = run_job(cfg, clients=aws.clients(), run_id="nightly")
    assert summary["run_id"] == "nightly"
    created = [r["TrainingJobName"] for r in aws.sent("CreateTrainingJob")]
    assert created == ["topx-nightly-fm", "topx-nightly-ncf", "topx-nightly-ncf-r2", "topx-nightly-knn",
                       "topx-nightly-knn-similar"]  # similar items: a k-NN index of the item factors
