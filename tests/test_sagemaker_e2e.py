"""``topx run --backend sagemaker`` end to end against the emulator (moto + the local engines).

The whole job with SageMaker training and k-NN search must publish exactly the lists the local
exact search gives for the same trained model; a failed FM job, a failed transform and a missing
S3 object each give a named error and leave the previously published run current.
"""

import json

import numpy as np
import pytest
import sqlalchemy as sa
from sagemaker_fixtures import BUCKET, REGION, ROLE, emulated_aws

from batch.aws.channels import MissingS3ObjectError
from batch.aws.sagemaker_jobs import TrainingJobFailedError, TransformJobFailedError
from batch.cli import main
from batch.config import load_config
from batch.emulator.local import local_engines
from batch.emulator.server import emulator_server
from batch.errors import AwsJobError
from batch.lists import KeyedLists, TopLists
from batch.pipeline import run_job
from batch.publish import make_engine
from batch.rundir import RunDir
from batch.serve.recommend import candidates, exclusion, recommend
from batch.serve.repackage import Vectors
from batch.serve.search.local import LocalSearcher
from batch.serve.similar import audiences_for_run, similar_for_run

SETTINGS = {
    "data": {"synth": {"users": 60, "items": 90, "interactions": 2400, "seed": 5}},
    "train": {"hyperparameters": {"epochs": 2, "num_factors": 6, "mini_batch_size": 128}},
    "search": {"top": 8},
    "audience": {"items": "*", "size": 5},
    "sagemaker": {"region": REGION, "role_arn": ROLE, "s3_prefix": f"s3://{BUCKET}/topx", "poll_s": 0.01,
                  "channel_shards": 2},
}


def job(tmp_path, db_url, backend="sagemaker"):
    tree = json.loads(json.dumps(SETTINGS))
    tree["workdir"] = str(tmp_path / "work")
    tree["publish"] = {"database_url": db_url, "gate": {"allow_regression": True}}  # tiny data, 2 epochs
    tree["train"]["backend"] = tree["search"]["backend"] = backend
    return load_config(base=tree, env={})


def view(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT user_id, rank, item_id, score FROM current_recommendations "
                                    "ORDER BY user_id, rank")).fetchall()
        runs = dict(conn.execute(sa.text("SELECT id, status FROM runs")).fetchall())
    engine.dispose()
    return rows, runs


@pytest.fixture
def aws():
    with emulated_aws() as emulated:
        yield emulated


def test_sagemaker_run_publishes_exactly_the_lists_of_the_local_search(tmp_path, db_url, aws):
    cfg = job(tmp_path, db_url)
    summary = run_job(cfg, clients=aws.clients())
    run = RunDir(tmp_path / "work" / "runs" / summary["run_id"])
    published = TopLists.load(run.file("lists.npz"))

    dataset, vectors = run.load_dataset(), Vectors.load(run.file("vectors.npz"))
    allowed, _ = candidates(vectors, dataset.items, cfg.search)
    local = recommend(vectors, LocalSearcher(method="exact"), top=8, candidates=allowed,
                      exclude=exclusion(dataset, include_held_out=True)).lists
    for name, sagemaker_column, local_column in zip(("user", "rank", "item", "score", "probability", "source"),
                                                    published.columns(), local.columns(), strict=True):
        assert np.array_equal(sagemaker_column, local_column), name

    # similar items and audiences through k-NN jobs of their own: the local exact search's too
    for name, make in (("similar", similar_for_run), ("audiences", audiences_for_run)):
        got, want = KeyedLists.load(run.file(f"{name}.npz")), make(cfg, run)
        assert len(want) and all(np.array_equal(getattr(got, c), getattr(want, c))
                                 for c in ("key", "rank", "value", "score")), name

    rows, runs = view(db_url)
    assert runs[summary["run_id"]] == "current" and len(rows) == len(published) == summary["rows"]
    assert [job.removeprefix(f"topx-{summary['run_id']}") for job in aws.training_jobs()] == \
        ["-fm", "-knn", "-knn-audience", "-knn-similar"]
    assert len(aws.transform_jobs()) == 3
    assert run.read_json("metrics.json")["train"]["engine"]["job_name"].endswith("-fm")


def test_a_sagemaker_run_takes_its_database_url_from_an_injected_secrets_client(tmp_path, db_url, aws):
    import boto3

    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="topx-db", SecretString=db_url)["ARN"]
    tree = job(tmp_path, db_url).to_dict()
    tree["publish"] = {"database_secret_arn": arn, "gate": {"allow_regression": True}}
    summary = run_job(load_config(base=tree, env={}), clients=aws.clients(secrets=secrets))
    rows, runs = view(db_url)
    assert runs[summary["run_id"]] == "current" and len(rows) == summary["rows"]


@pytest.mark.parametrize("kind, error", [("training", TrainingJobFailedError), ("transform", TransformJobFailedError)])
def test_a_failed_sagemaker_job_is_a_named_error_and_the_previous_run_stays(tmp_path, db_url, aws, kind, error):
    previous = run_job(job(tmp_path, db_url, backend="local"))
    before, _ = view(db_url)
    aws.emulator.fail_next(kind, "AlgorithmError: ran out of disk")
    with pytest.raises(error, match="ran out of disk") as failed:
        run_job(job(tmp_path, db_url), clients=aws.clients())
    assert isinstance(failed.value, AwsJobError) and failed.value.reason == "AlgorithmError: ran out of disk"
    after, runs = view(db_url)
    assert after == before and runs[previous["run_id"]] == "current"
    assert sorted(runs.values()) == ["current", "failed"]


def test_a_missing_s3_object_is_a_named_error_and_the_previous_run_stays(tmp_path, db_url, aws):
    previous = run_job(job(tmp_path, db_url, backend="local"))
    before, _ = view(db_url)

    def lose_the_artifact(params, **kwargs):  # the object vanishes between the job and our download
        if params["Key"].endswith("model.tar.gz"):
            aws.s3.delete_object(Bucket=params["Bucket"], Key=params["Key"])

    aws.s3.meta.events.register("before-parameter-build.s3.GetObject", lose_the_artifact)
    with pytest.raises(MissingS3ObjectError, match="model.tar.gz: no such S3 object"):
        run_job(job(tmp_path, db_url), clients=aws.clients())
    after, runs = view(db_url)
    assert after == before and runs[previous["run_id"]] == "current" and "failed" in runs.values()


def test_cli_run_with_the_sagemaker_backend_against_the_emulator_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    config = tmp_path / "job.toml"
    config.write_text(
        '[data.synth]\nusers = 40\nitems = 60\ninteractions = 1000\n'
        '[train.hyperparameters]\nepochs = 1\nnum_factors = 4\n'
        f'[sagemaker]\nregion = "{REGION}"\nrole_arn = "{ROLE}"\ns3_prefix = "s3://{BUCKET}/topx"\npoll_s = 0.05\n')
    with emulator_server(local_engines(), "127.0.0.1", 0, buckets=[BUCKET], region=REGION) as endpoint:
        monkeypatch.setenv("TOPX_SAGEMAKER_ENDPOINT_URL", endpoint.url)
        code = main(["run", "--config", str(config), "--backend", "sagemaker", "--top", "5",
                     "--workdir", str(tmp_path / "w"), "--allow-regression"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "published" and summary["rows"] == 40 * 5
