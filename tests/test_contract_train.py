"""Every trainer runs :class:`contracts.TrainerContract`: the local SGD engine, the local iALS
engine (what ``make_trainer`` picks for implicit mode on the local backend), with and without the
user history block, and SageMaker's FM against the emulator. Each ``make_trainer`` is annotated
with the class it makes, and a test checks that together they cover every trainer
:func:`batch.train.make_trainer` can return."""

from __future__ import annotations

import itertools
import sys
import typing

import pytest
from contracts import TrainerContract
from sagemaker_fixtures import emulated_aws, sagemaker_config

from batch.config import BACKENDS, MODES, IALSConfig, JobConfig, TrainConfig
from batch.errors import ConfigError
from batch.train import make_trainer
from batch.train.ials_engine import IALSTrainer
from batch.train.local import LocalFMTrainer
from batch.train.sagemaker import SageMakerFMTrainer


class TestLocalTrainer(TrainerContract):
    def make_trainer(self) -> LocalFMTrainer:
        return LocalFMTrainer("cpu")


class TestIALSTrainer(TrainerContract):
    def make_trainer(self) -> IALSTrainer:
        return IALSTrainer(IALSConfig(history=False), "cpu")


class TestIALSHistoryTrainer(TrainerContract):
    history = True  # users as the factors of the items they interacted with

    def make_trainer(self) -> IALSTrainer:
        return IALSTrainer(IALSConfig(), "cpu")


@pytest.mark.slow
class TestSageMakerTrainer(TrainerContract):
    @pytest.fixture(autouse=True)
    def _aws(self):
        with emulated_aws() as aws:
            self.aws = aws
            yield

    def make_trainer(self) -> SageMakerFMTrainer:
        # a new run id each time: the second fit must train again, not reuse the first job
        self.runs = getattr(self, "runs", 0) + 1
        return SageMakerFMTrainer(sagemaker_config(), run_id=f"contract-{self.runs}", clients=self.aws.clients())


def test_every_trainer_make_trainer_returns_runs_the_contract():
    made = set()
    for backend, mode, objective in itertools.product(BACKENDS, MODES, typing.get_args(
            typing.get_type_hints(TrainConfig)["objective"])):
        try:
            train = TrainConfig(backend=backend, mode=mode, objective=objective)
        except ConfigError:
            continue  # a combination the configuration refuses (ials on SageMaker)
        made.add(type(make_trainer(JobConfig(train=train), run_id="r")))
    module = sys.modules[__name__]
    covered = {typing.get_type_hints(cls.make_trainer)["return"] for cls in vars(module).values()
               if isinstance(cls, type) and issubclass(cls, TrainerContract) and cls is not TrainerContract}
    assert made == {LocalFMTrainer, IALSTrainer, SageMakerFMTrainer}
    assert made <= covered
