"""Every trainer runs :class:`contracts.TrainerContract`: the local SGD engine, the local iALS
engine (what ``make_trainer`` picks for implicit mode on the local backend), with and without the
user history block, and SageMaker's FM against the emulator."""

from __future__ import annotations

import pytest
from contracts import TrainerContract
from sagemaker_fixtures import emulated_aws, sagemaker_config

from batch.config import IALSConfig
from batch.train.ials_engine import IALSTrainer
from batch.train.local import LocalFMTrainer
from batch.train.sagemaker import SageMakerFMTrainer


class TestLocalTrainer(TrainerContract):
    def make_trainer(self):
        return LocalFMTrainer("cpu")


class TestIALSTrainer(TrainerContract):
    def make_trainer(self):
        return IALSTrainer(IALSConfig(history=False), "cpu")


class TestIALSHistoryTrainer(TrainerContract):
    history = True  # users as the factors of the items they interacted with

    def make_trainer(self):
        return IALSTrainer(IALSConfig(), "cpu")


@pytest.mark.slow
class TestSageMakerTrainer(TrainerContract):
    @pytest.fixture(autouse=True)
    def _aws(self):
        with emulated_aws() as aws:
            self.aws = aws
            yield

    def make_trainer(self):
        # a new run id each time: the second fit must train again, not reuse the first job
        self.runs = getattr(self, "runs", 0) + 1
        return SageMakerFMTrainer(sagemaker_config(), run_id=f"contract-{self.runs}", clients=self.aws.clients())
