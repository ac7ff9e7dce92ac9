"""SageMaker framework training jobs in script mode: a Python entry point run in the PyTorch container.

This is what the SageMaker Python SDK's ``sagemaker.pytorch.PyTorch`` estimator does, with boto3.
Under the run's prefix, for stage ``<stage>`` and job ``<job>``:

    <stage>/train/<channel file>              the training data, read as the ``train`` channel
    <stage>/<job>/source/sourcedir.tar.gz     the entry point and its sibling modules
    <stage>/output/<job>/output/model.tar.gz  what the script wrote into SM_MODEL_DIR

The job runs on one instance of the region's PyTorch training image. Its hyperparameters are the
caller's plus the SDK's ``sagemaker_program``, ``sagemaker_submit_directory``,
``sagemaker_container_log_level``, ``sagemaker_job_name`` and ``sagemaker_region``, every value
JSON-encoded as the SDK sends them: the container's training toolkit decodes them and runs
``python <program> --key value …`` with the caller's own. The job is found, reused, waited for
and retried as any other (:mod:`batch.aws.sagemaker_jobs`); its inputs digest covers the code,
the data and the hyperparameters.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch.aws.channels import S3Objects, split_uri
from batch.aws.requests import file_channel, training_request, volume_for
from batch.aws.sagemaker_jobs import TRAINING, JobOutcome, JobRunner, fingerprint
from batch.aws.session import SageMakerSession
from batch.errors import ConfigError

log = logging.getLogger("topx.aws")

SOURCE_ARCHIVE = "sourcedir.tar.gz"
CONTAINER_LOG_LEVEL = 20  # logging.INFO, the SDK's default container_log_level
RESERVED_PREFIX = "sagemaker_"  # the toolkit keeps such hyperparameters for itself


@dataclass(frozen=True)
class ScriptSource:
    """The code of a script-mode job: ``files`` packed side by side at the archive's top level,
    ``program`` (the name of one of them) the script the container runs."""

    files: tuple[Path, ...]
    program: str

    def __post_init__(self):
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"source files share a name: {names}")
        if self.program not in names:
            raise ValueError(f"the program {self.program!r} is not among the source files {names}")

    def package(self) -> bytes:
        """``sourcedir.tar.gz``: the files in name order, each with mode 0644, mtime 0 and no
        owner, in a gzip stream without a timestamp, so the same code always packs to the same bytes."""
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as stream, \
                tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.files, key=lambda p: p.name):
                data = path.read_bytes()
                info = tarfile.TarInfo(path.name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def script_hyperparameters(own: Mapping[str, Any], *, program: str, submit_directory: str, job_name: str,
                           region: str) -> dict[str, str]:
    """The job's HyperParameters: ``own`` and the SDK's ``sagemaker_*`` ones, each value
    JSON-encoded as the SDK's framework estimators encode them (so a string ``"3"`` is sent as
    ``"\\"3\\""``, and the script receives ``--key 3``)."""
    reserved = sorted(k for k in own if k.startswith(RESERVED_PREFIX))
    if reserved:
        raise ConfigError(f"hyperparameters {', '.join(reserved)}: names starting with {RESERVED_PREFIX!r} "
                          "are the training toolkit's and never reach the script")
    values = {**own, "sagemaker_submit_directory": submit_directory, "sagemaker_program": program,
              "sagemaker_container_log_level": CONTAINER_LOG_LEVEL, "sagemaker_job_name": job_name,
              "sagemaker_region": region}
    return {str(k): json.dumps(v) for k, v in values.items()}


@dataclass(frozen=True)
class ScriptJob:
    """One stage's script-mode training job in ``session``'s run: ``source`` run on one
    ``instance_type`` instance of ``image``."""

    session: SageMakerSession
    stage: str
    source: ScriptSource
    image: str
    instance_type: str

    def train(self, channel_file: Path, hyperparameters: Mapping[str, Any], destination: Path) -> JobOutcome:
        """Train on ``channel_file`` (the ``train`` channel's one file) and download the job's
        model.tar.gz to ``destination``; a Completed job made from the same code, data and
        hyperparameters is reused, an InProgress one waited for."""
        if not channel_file.is_file():
            raise ConfigError(f"{channel_file}: the training data of the {self.stage} job is missing")
        self.session.check()
        code = self.source.package()
        with open(channel_file, "rb") as data:
            data_digest = hashlib.file_digest(data, "sha256").hexdigest()
        inputs = fingerprint("script", self.stage, self.source.program, hashlib.sha256(code).hexdigest(),
                             channel_file.name, data_digest, dict(hyperparameters))

        def create(name: str, tags: list[dict[str, str]]) -> None:
            self._create(name, tags, code, channel_file, hyperparameters)

        outcome = JobRunner(self.session).ensure(TRAINING, self.stage, inputs, create)
        self._download(outcome, destination)
        return outcome

    def request(self, name: str, tags: list[dict[str, str]], hyperparameters: Mapping[str, Any],
                channel_bytes: int) -> dict[str, Any]:
        """CreateTrainingJob arguments of attempt ``name``."""
        s = self.session
        hyper = script_hyperparameters(hyperparameters, program=self.source.program, job_name=name,
                                       submit_directory=s.uri(self.stage, name, "source", SOURCE_ARCHIVE),
                                       region=s.region)
        return training_request(s, name=name, stage=self.stage, image=self.image, hyperparameters=hyper,
                                channels=[file_channel("train", s.uri(self.stage, "train") + "/")],
                                instance_type=self.instance_type, instance_count=1,
                                volume=volume_for(channel_bytes), tags=tags, spot=s.settings.use_spot)

    def _create(self, name: str, tags: list[dict[str, str]], code: bytes, channel_file: Path,
                hyperparameters: Mapping[str, Any]) -> None:
        """Upload the code and the channel, then create the training job."""
        s = self.session
        S3Objects(s.s3, s.bucket).clear(s.key(self.stage, "train"))
        s.s3.upload_file(str(channel_file), s.bucket, s.key(self.stage, "train", channel_file.name))
        s.s3.put_object(Bucket=s.bucket, Key=s.key(self.stage, name, "source", SOURCE_ARCHIVE), Body=code)
        log.info("uploaded %s (%.1f MB) and %s to %s", channel_file.name, channel_file.stat().st_size / 1e6,
                 SOURCE_ARCHIVE, s.uri(self.stage))
        s.sagemaker.create_training_job(**self.request(name, tags, hyperparameters, channel_file.stat().st_size))

    def _download(self, outcome: JobOutcome, destination: Path) -> None:
        """The job's model.tar.gz to ``destination``, through a temporary file renamed into place."""
        uri = outcome.description["ModelArtifacts"]["S3ModelArtifacts"]
        bucket, key = split_uri(uri)
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".part")
        S3Objects(self.session.s3, bucket).download(key, str(partial))
        os.replace(partial, destination)
        log.info("downloaded the artifact of %s from %s to %s", outcome.name, uri, destination)
