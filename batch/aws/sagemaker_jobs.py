"""Create, find, resume and wait for SageMaker jobs, in one place for both engines.

A job's name is fixed by the run and the stage (:func:`batch.aws.session.job_name`), so a run
that is started again finds its own jobs: a Completed one is reused instead of paid for twice,
an InProgress one is waited for, and after a Failed or Stopped one a fresh attempt starts under
the next name (``-r2``, ``-r3``, …). Every job carries a tag with a digest of its inputs; a job
found under the run's name but made from other inputs is refused rather than reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from batch.aws.session import SageMakerSession
from batch.errors import AwsJobError

log = logging.getLogger("topx.aws")

INPUTS_TAG = "topx:inputs-sha256"
MAX_ATTEMPTS = 99  # -r99 is the longest suffix the names leave room for
_MARGIN_S = 3600  # waiting covers the job's own limit plus instance start-up and upload


class JobFailedError(AwsJobError):
    """A SageMaker job ended Failed or Stopped; ``reason`` is SageMaker's FailureReason."""


class TrainingJobFailedError(JobFailedError):
    """A training job (FM or k-NN) failed."""


class TransformJobFailedError(JobFailedError):
    """A batch transform job failed."""


class JobTimeoutError(AwsJobError):
    """A job did not finish within its runtime limit plus a start-up margin."""


class JobInputsChangedError(AwsJobError):
    """A job of this run exists but was made from other inputs: the run id was reused."""

    exit_code = 2


@dataclass(frozen=True)
class JobKind:
    """How the SageMaker API names one kind of job's calls and fields."""

    noun: str
    api: str  # describe_<api>, create_<api>
    field: str  # TrainingJob → TrainingJobName, TrainingJobStatus, TrainingJobArn
    error: type[JobFailedError]
    waiter: str | None = None  # a botocore waiter to wait with, else our own polling with progress

    def describe(self, client: Any, name: str) -> dict[str, Any]:
        return getattr(client, f"describe_{self.api}")(**{f"{self.field}Name": name})


TRAINING = JobKind("training job", "training_job", "TrainingJob", TrainingJobFailedError)
TRANSFORM = JobKind("transform job", "transform_job", "TransformJob", TransformJobFailedError,
                    waiter="transform_job_completed_or_stopped")


@dataclass(frozen=True)
class JobOutcome:
    """A Completed job: its name and attempt number (1, 2, … as in ``-r2``), its final
    description, and whether an earlier run started it."""

    name: str
    attempt: int
    description: dict[str, Any]
    reused: bool


def fingerprint(*parts: Any) -> str:
    """SHA-256 hex digest of arrays (dtype, shape and bytes), sparse matrices and JSON-able values."""
    digest = hashlib.sha256()
    for part in parts:
        if sp.issparse(part):
            part = sp.csr_matrix(part)
            pieces = [np.asarray(part.shape), part.data, part.indices, part.indptr]
        elif isinstance(part, np.ndarray):
            pieces = [part]
        else:
            pieces = [json.dumps(part, sort_keys=True, default=str)]
        for piece in pieces:
            if isinstance(piece, np.ndarray):
                digest.update(f"{piece.dtype.str}{piece.shape}".encode())
                digest.update(memoryview(np.ascontiguousarray(piece)).cast("B"))
            else:
                digest.update(piece.encode())
            digest.update(b"\x00")
    return digest.hexdigest()


def is_not_found(exc: Exception) -> bool:
    """Does a botocore ClientError say the named job or model does not exist?"""
    error = getattr(exc, "response", {}).get("Error", {})
    message = str(error.get("Message", "")).lower()
    return error.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "not found" in message or "could not find" in message)


class JobRunner:
    """Runs the jobs of one :class:`SageMakerSession`; see the module docstring."""

    def __init__(self, session: SageMakerSession):
        self.session = session

    def ensure(self, kind: JobKind, stage: str, inputs: str,
               create: Callable[[str, list[dict[str, str]]], None]) -> JobOutcome:
        """The Completed job of ``stage``: reused, waited for, or made by ``create(name, tags)``
        (which uploads what the job reads and calls create_*), then waited for."""
        name, attempt, found = self.latest(kind, stage)
        if found is None:
            log.info("starting %s %s", kind.noun, name)
            create(name, [{"Key": INPUTS_TAG, "Value": inputs}])
            return JobOutcome(name, attempt, self.wait(kind, name), reused=False)
        self._check_inputs(kind, name, found, inputs)
        if found[f"{kind.field}Status"] == "Completed":
            log.info("reusing %s %s, completed by an earlier run", kind.noun, name)
            return JobOutcome(name, attempt, found, reused=True)
        log.info("%s %s is already %s: waiting for it", kind.noun, name, found[f"{kind.field}Status"])
        return JobOutcome(name, attempt, self.wait(kind, name), reused=True)

    def latest(self, kind: JobKind, stage: str) -> tuple[str, int, dict[str, Any] | None]:
        """The stage's newest attempt that has not failed (name, number, description), or the
        name and number of the next attempt to start and None."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            name = self.session.job_name(stage, attempt)
            found = self.describe(kind, name)
            if found is None:
                return name, attempt, None
            status = found[f"{kind.field}Status"]
            if status not in ("Failed", "Stopped"):
                return name, attempt, found
            log.warning("%s %s ended %s (%s); starting a new attempt", kind.noun, name, status,
                        found.get("FailureReason") or "no reason given")
        raise AwsJobError(f"{MAX_ATTEMPTS} attempts of {kind.noun} {stage} failed; use a new run id",
                          job_name=name)

    def describe(self, kind: JobKind, name: str) -> dict[str, Any] | None:
        """The job's description, or None if there is no such job."""
        try:
            return kind.describe(self.session.sagemaker, name)
        except Exception as exc:  # botocore's ClientError comes from the client's own class tree
            if is_not_found(exc):
                return None
            raise

    def wait(self, kind: JobKind, name: str) -> dict[str, Any]:
        """Block until the job ends; its final description if Completed, else raise
        ``kind.error`` carrying SageMaker's FailureReason."""
        limit_s = self._limit_s()
        final = self._wait_waiter(kind, name, limit_s) if kind.waiter else self._poll(kind, name, limit_s)
        status = final[f"{kind.field}Status"]
        if status != "Completed":
            reason = final.get("FailureReason") or f"the job was {status.lower()}"
            raise kind.error(f"SageMaker {kind.noun} {name} {status.lower()}: {reason}", job_name=name,
                             reason=reason)
        log.info("%s %s completed", kind.noun, name)
        return final

    def _limit_s(self) -> float:
        settings = self.session.settings
        return (settings.max_wait_s if settings.use_spot else settings.max_runtime_s) + _MARGIN_S

    def _poll(self, kind: JobKind, name: str, limit_s: float) -> dict[str, Any]:
        """Describe every ``poll_s`` seconds, logging each status and secondary-status change."""
        deadline, progress = time.monotonic() + limit_s, _Progress(kind, name)
        while True:
            found = kind.describe(self.session.sagemaker, name)
            progress.report(found)
            if found[f"{kind.field}Status"] not in ("InProgress", "Stopping"):
                return found
            if time.monotonic() > deadline:
                raise JobTimeoutError(f"{kind.noun} {name} still running after {limit_s:.0f} s", job_name=name)
            time.sleep(self.session.settings.poll_s)

    def _wait_waiter(self, kind: JobKind, name: str, limit_s: float) -> dict[str, Any]:
        """botocore's waiter, with attempts for the whole limit: its default gives up after an hour."""
        from botocore.exceptions import WaiterError

        poll_s = self.session.settings.poll_s
        config = {"Delay": poll_s, "MaxAttempts": max(1, math.ceil(limit_s / poll_s))}
        log.info("waiting for %s %s (checking every %g s, for up to %.0f s)", kind.noun, name, poll_s, limit_s)
        try:
            waiter = self.session.sagemaker.get_waiter(kind.waiter)
            waiter.wait(**{f"{kind.field}Name": name}, WaiterConfig=config)
        except WaiterError as exc:
            found = kind.describe(self.session.sagemaker, name)
            if found[f"{kind.field}Status"] in ("InProgress", "Stopping"):
                raise JobTimeoutError(f"{kind.noun} {name}: {exc}", job_name=name) from None
            return found
        return kind.describe(self.session.sagemaker, name)

    def _check_inputs(self, kind: JobKind, name: str, found: dict[str, Any], inputs: str) -> None:
        tags = self.session.sagemaker.list_tags(ResourceArn=found[f"{kind.field}Arn"]).get("Tags", [])
        recorded = {t["Key"]: t["Value"] for t in tags}.get(INPUTS_TAG)
        if recorded != inputs:
            raise JobInputsChangedError(
                f"{kind.noun} {name} exists but was made from other inputs than this run's; a run id "
                "names one run's data and settings: start a new run id", job_name=name)


class _Progress:
    """Logs a job's status and its new secondary-status transitions, once each."""

    def __init__(self, kind: JobKind, name: str):
        self.kind, self.name, self.status, self.transitions = kind, name, None, 0

    def report(self, found: dict[str, Any]) -> None:
        transitions = found.get("SecondaryStatusTransitions", [])
        for step in transitions[self.transitions:]:
            log.info("%s %s: %s — %s", self.kind.noun, self.name, step.get("Status"), step.get("StatusMessage", ""))
        self.transitions = max(self.transitions, len(transitions))
        status = found[f"{self.kind.field}Status"]
        if status != self.status:
            log.info("%s %s is %s", self.kind.noun, self.name, status)
            self.status = status
