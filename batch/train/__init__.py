"""Training: labelled samples → factorization machine, on the local engine or SageMaker.

The backend is chosen here and nowhere else (:func:`make_trainer`); both return an
:class:`FMModel` read from (or written as) the SageMaker artifact, so everything downstream is
the same whichever trained it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from batch.artifact import FMModel
from batch.aws.clients import NO_CLIENTS, AwsClients
from batch.config import FMHyperparameters, JobConfig
from batch.features.design import Design
from batch.train.samples import Samples, SampleSource


@dataclass
class FitResult:
    """A trained model and what the engine reports about the fit (device, seconds, samples/s,
    loss per epoch; or the SageMaker job name and billable time)."""

    model: FMModel
    details: dict[str, Any] = field(default_factory=dict)


class Trainer(Protocol):
    def fit(self, design: Design, source: SampleSource, test: Samples, hp: FMHyperparameters,
            predictor_type: str) -> FitResult:
        """Train on ``source`` (``test`` is the held-out set, for engines that report on it)."""


def make_trainer(cfg: JobConfig, *, run_id: str | None = None, clients: AwsClients = NO_CLIENTS) -> Trainer:
    """The trainer for ``cfg.train.backend`` (on the local backend, iALS or SGD as
    ``cfg.train.uses_ials`` says). ``run_id`` (names its jobs) and ``clients`` are for the
    SageMaker engine only."""
    if cfg.train.backend == "sagemaker":
        from batch.train.sagemaker import SageMakerFMTrainer

        return SageMakerFMTrainer(cfg, run_id=run_id, clients=clients)
    if cfg.train.uses_ials:
        from batch.train.ials_engine import IALSTrainer, member_carve

        return IALSTrainer(cfg.train.ials, cfg.train.device, member_carve(cfg.data))
    from batch.train.local import LocalFMTrainer

    return LocalFMTrainer(cfg.train.device)
