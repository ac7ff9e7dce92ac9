"""``topx tune``: a tiny budget on synthetic data writes a job file that ``topx run --config`` runs,
and the trial table; its budget parsing, job-file writing and missing-optuna message."""

from __future__ import annotations

import csv
import sys
import tomllib

import pytest

from batch.config import JobConfig, load_config
from batch.data.synth import generate
from batch.errors import ConfigError
from batch.tune import next_trial_fits, parse_budget, space
from batch.tune.jobfile import to_toml


@pytest.fixture
def small_space(monkeypatch):
    """A search space small enough that every trial trains in a moment."""
    monkeypatch.setattr(space, "IALS", {"train.hyperparameters.num_factors": ("int", 4, 8, False),
                                        "train.hyperparameters.epochs": ("int", 1, 2, False),
                                        "train.ials.reg": ("float", 1e-3, 1e-1, True)})


@pytest.mark.slow
def test_tune_writes_a_job_file_that_topx_run_takes(topx, tmp_path, small_space, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate(tmp_path / "syn", users=40, items=60, interactions=1200, seed=2)
    (tmp_path / "job.toml").write_text("[train.hyperparameters]\nepochs = 2\nnum_factors = 8\n[search]\ntop = 5\n")
    code, summary, err = topx("tune", "--data", "syn", "--config", "job.toml", "--budget", "5m", "--trials", "3",
                              "--out", "tuned")
    assert code == 0, err
    assert summary["trials"] == 3 and summary["protocol"] == "random"
    assert "trial 1/3: validation ndcg@10" in err and "trial 3/3" in err
    with open(tmp_path / "tuned" / "trials.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]
    assert rows[0]["epochs"] == "2" and rows[0]["num_factors"] == "8"  # the job's own settings come first
    assert max(float(r["ndcg@10"]) for r in rows) == pytest.approx(summary["validation_ndcg@10"], abs=1e-6)
    job = load_config(tmp_path / "tuned" / "best.toml", env={})
    assert job.data.path == "syn"
    assert job.train.hyperparameters.num_factors == summary["best"]["train.hyperparameters.num_factors"]
    assert job.train.ials.reg == summary["best"]["train.ials.reg"]
    assert job.search.top == 100  # tune writes what to compute, not the rest of the job
    code, ran, err = topx("run", "--config", "tuned/best.toml", "--workdir", "work", "--allow-regression")
    assert code == 0, err
    assert ran["status"] == "published" and ran["users"] == 40


def test_job_file_reads_back_as_the_same_settings():
    cfg = load_config(env={}, overrides={"data.path": 'data "quoted"\\dir', "train.hyperparameters.linear_wd": 1e-7,
                                         "train.features": False, "data.columns.rating": None})
    tree = {"data": cfg.to_dict()["data"], "train": cfg.to_dict()["train"]}
    back = load_config(text=to_toml(tree, "two\nlines"), env={})
    assert back.data == cfg.data and back.train == cfg.train
    assert tomllib.loads(to_toml(tree))["train"]["hyperparameters"]["linear_wd"] == 1e-7


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("10m", 600), ("1.5h", 5400)])
def test_budget(text, seconds):
    assert parse_budget(text) == seconds


def test_no_trial_starts_that_would_likely_overrun_the_budget():
    assert next_trial_fits(5.0, [])
    assert next_trial_fits(30.0, [20.0, 40.0, 25.0])
    assert not next_trial_fits(24.0, [20.0, 40.0, 25.0])


@pytest.mark.parametrize("text", ["", "m", "-5m", "0", "ten minutes"])
def test_bad_budget_is_a_config_error(text):
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


@pytest.mark.parametrize("table", ["IALS", "SGD"])
def test_every_searched_setting_is_a_setting(table):
    searched = getattr(space, table)
    for key, value in space.current(JobConfig().to_dict(), searched).items():
        load_config(env={}, overrides={key: value})


def test_the_space_follows_how_the_job_trains():
    assert space.space_for(JobConfig().train) is space.IALS  # implicit mode, local engine
    for overrides in ({"train.objective": "sampled"}, {"train.mode": "binary"}, {"train.backend": "sagemaker"}):
        assert space.space_for(load_config(env={}, overrides=overrides).train) is space.SGD


def test_without_optuna_the_message_names_the_extra(topx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    code, _, err = topx("tune", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "t"))
    assert code == 2
    assert "topx[tune]" in err and "optuna" in err
