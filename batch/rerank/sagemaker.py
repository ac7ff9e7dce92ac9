"""NeuMF trained as a SageMaker script-mode job in the PyTorch framework container.

``entry.py`` and ``ncf.py`` of this package are shipped as they are in ``sourcedir.tar.gz``; the
run's training pairs (``interactions.npz``) are the ``train`` channel; the job (stage ``ncf``,
named ``topx-<run>-ncf``) runs on one ``sagemaker.script_instance_type`` instance (else
``train_instance_type``) of the region's PyTorch training image (``sagemaker.pytorch_image``
overrides it), and its ``model.tar.gz`` (what ``entry.py`` wrote into SM_MODEL_DIR) is
downloaded into the run directory. See :mod:`batch.aws.script_jobs` for the S3 layout, the
hyperparameters and how a run started again reuses its job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from batch.aws.clients import AwsClients
from batch.aws.images import pytorch_image
from batch.aws.script_jobs import ScriptJob, ScriptSource
from batch.aws.session import SageMakerSession
from batch.config import JobConfig

if TYPE_CHECKING:
    from batch.rundir import RunDir

log = logging.getLogger("topx.rerank")

STAGE = "ncf"
PACKAGE = Path(__file__).resolve().parent
SOURCE = ScriptSource((PACKAGE / "entry.py", PACKAGE / "ncf.py"), "entry.py")
ARTIFACT = "rerank/model.tar.gz"


def train_ncf_job(cfg: JobConfig, clients: AwsClients, run: RunDir, channel_file: Path,
                  hyperparameters: Mapping[str, str], *, run_id: str | None = None) -> Path:
    """Train NeuMF on ``channel_file`` (``interactions.npz``) with ``hyperparameters`` (NCFSettings'
    fields as strings) as the ``ncf`` job of run ``run_id`` (default: the run directory's name),
    and return the local path of its downloaded model.tar.gz, ``<run>/rerank/model.tar.gz``.

    ``device`` is sent as ``auto``: on SageMaker the instance decides, GPU on ``ml.g*`` and
    ``ml.p*``. Failures are :class:`~batch.aws.sagemaker_jobs.TrainingJobFailedError` with the
    job's FailureReason (a failing script: the end of its stderr)."""
    s = cfg.sagemaker
    session = SageMakerSession(s, run_id or run.path.resolve().name, sagemaker_client=clients.sagemaker,
                               s3_client=clients.s3)
    instance_type = s.script_instance_type or s.train_instance_type
    image = pytorch_image(session.region, instance_type, s.pytorch_image)
    own = {**hyperparameters, "device": "auto"} if "device" in hyperparameters else dict(hyperparameters)
    destination = run.file(ARTIFACT)
    outcome = ScriptJob(session, STAGE, SOURCE, image, instance_type).train(Path(channel_file), own, destination)
    log.info("NeuMF trained by %s job %s", "an earlier run's" if outcome.reused else "SageMaker", outcome.name)
    return destination
