"""A SageMaker emulator on top of moto: jobs that really run, on the local engines.

moto's SageMaker backend records a training or transform job as Completed the moment it is
created and writes nothing. Inside ``with SageMakerEmulator():`` a created job instead runs in
a thread with the local engines on its real S3 inputs (:mod:`batch.emulator.jobs`; a framework
image's script-mode job runs its entry point, :mod:`batch.emulator.script`) and
writes its real outputs, while describe calls report it InProgress (with secondary-status
transitions) and then Completed or Failed with a FailureReason, billable seconds and final
metrics. Job and model names must be unique, as on SageMaker.

The patch is on moto's backend class, so it serves in-process ``mock_aws`` and a
``ThreadedMotoServer`` in the same process alike. ``fail_next(kind, reason)`` makes the next
job of a kind fail. ``topx sagemaker-emulator`` serves this on a port (:mod:`batch.emulator.server`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from unittest import mock

from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ResourceInUseException, ValidationError
from moto.sagemaker.models import SageMakerModelBackend

from batch.emulator.engines import Engines
from batch.emulator.jobs import EmulatedJobError, MotoS3, train_fm
from batch.emulator.knn import train_knn, transform
from batch.emulator.script import FRAMEWORK_IMAGES, train_script

log = logging.getLogger("topx.emulator")

KINDS = ("training", "transform")
_active_lock = threading.Lock()
_active: list[SageMakerEmulator] = []


@dataclass
class _Run:
    """One emulated job: what its thread found (``outcome`` None while running) and what has been
    reported through describe so far."""

    kind: str
    job: Any
    started: float = field(default_factory=time.monotonic)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None
    reason: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    describes: int = 0
    ended: bool = False  # the outcome has been reported
    thread: threading.Thread | None = None


class SageMakerEmulator:
    """Context manager that makes moto's SageMaker jobs run; see the module docstring. The first
    describe of a job always answers InProgress: a caller sees every job running before it ends."""

    def __init__(self, engines: Engines):
        self.engines = engines
        self._runs: dict[str, _Run] = {}  # by job ARN
        self._failures: dict[str, list[str]] = {kind: [] for kind in KINDS}
        self._lock = threading.RLock()
        self._stack: ExitStack | None = None

    def fail_next(self, kind: str, reason: str) -> None:
        """Make the next created job of ``kind`` (``training`` or ``transform``) end Failed with
        FailureReason ``reason``, without running it."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        with self._lock:
            self._failures[kind].append(reason)

    def __enter__(self) -> SageMakerEmulator:
        with _active_lock:
            if _active:
                raise RuntimeError("a SageMakerEmulator is already active in this process")
            _active.append(self)
        self._stack = ExitStack()
        for name, make in _PATCHES.items():
            wrapper = make(self, getattr(SageMakerModelBackend, name))
            self._stack.enter_context(mock.patch.object(SageMakerModelBackend, name, wrapper))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.join()
        self._stack.close()
        with _active_lock:
            _active.remove(self)

    def join(self) -> None:
        """Wait for every job started so far to finish its work."""
        for run in list(self._runs.values()):
            run.thread.join()

    # -------------------------------------------------------------------- running a job

    def _start(self, kind: str, backend: Any, job: Any) -> None:
        with self._lock:
            failure = self._failures[kind].pop(0) if self._failures[kind] else None
        run = _Run(kind, job)
        _report_start(run)
        perform = _performer(kind, backend, job, self.engines)
        run.thread = threading.Thread(target=self._work, args=(run, perform, failure), name=f"emulated {kind} job",
                                      daemon=True)
        self._runs[job.arn] = run
        run.thread.start()

    def _work(self, run: _Run, perform: Callable[[], list], failure: str | None) -> None:
        """The job's thread: do the work, record the outcome; describe reports it later."""
        metrics: list = []
        try:
            self._step(run, "Downloading", "Downloading input data")
            if failure is not None:
                raise EmulatedJobError(failure)
            self._step(run, "Training", "Training image download completed. Training in progress.")
            metrics = perform()
            self._step(run, "Uploading", "Uploading generated training model")
            outcome, reason = "Completed", None
        except EmulatedJobError as exc:
            outcome, reason = "Failed", str(exc)
        except Exception as exc:  # any other error fails the job, as an algorithm error fails SageMaker's
            log.exception("emulated job %s failed", run.job.arn)
            outcome, reason = "Failed", f"AlgorithmError: {type(exc).__name__}: {exc}"
        with self._lock:
            self._step(run, outcome, "Training job completed" if reason is None else reason)
            run.metrics, run.outcome, run.reason = metrics, outcome, reason

    def _step(self, run: _Run, status: str, message: str) -> None:
        with self._lock:
            if run.transitions:
                run.transitions[-1]["EndTime"] = utcnow()
            run.transitions.append({"Status": status, "StartTime": utcnow(), "StatusMessage": message})

    def _refresh(self, job: Any | None, *, described: bool) -> None:
        """Bring the moto job up to date with its run before moto answers about it."""
        run = None if job is None else self._runs.get(job.arn)
        if run is None:
            return
        with self._lock:
            run.describes += described
            done = run.outcome is not None and run.describes > 1
            if run.kind == "training":
                shown = run.transitions if done else [t for t in run.transitions if t["Status"] not in
                                                      ("Completed", "Failed")]
                job.secondary_status_transitions = [dict(t) for t in shown]
                job.secondary_status = shown[-1]["Status"]
            if done and not run.ended:
                _report_end(run)
                run.ended = True


def _performer(kind: str, backend: Any, job: Any, engines: Engines) -> Callable[[], list]:
    """What the job does: picked by the algorithm's image for training, k-NN for a transform."""
    s3 = MotoS3(backend.account_id, backend.region_name)
    if kind == "transform":
        return partial(transform, job, backend, s3, engines)
    image = job.algorithm_specification.get("TrainingImage", "")
    algorithms = {"/factorization-machines:": partial(train_fm, job, s3, engines), "/knn:": partial(train_knn, job, s3),
                  **{repository: partial(train_script, job, s3) for repository in FRAMEWORK_IMAGES}}
    for repository, train in algorithms.items():
        if repository in image:
            return train

    def unknown() -> list:
        raise EmulatedJobError(f"emulator: no built-in algorithm or framework image to play for image {image!r}")

    return unknown


def _report_start(run: _Run) -> None:
    job, now = run.job, utcnow()
    job.creation_time = job.last_modified_time = now
    if run.kind == "training":
        job.training_job_status, job.secondary_status = "InProgress", "Starting"
        job.secondary_status_transitions, job.final_metric_data_list = [], []
        job.training_start_time, job.training_end_time = now, None
        run.transitions.append({"Status": "Starting", "StartTime": now,
                                "StatusMessage": "Launching requested ML instances"})
    else:
        job.transform_job_status, job.transform_start_time, job.transform_end_time = "InProgress", now, None


def _report_end(run: _Run) -> None:
    job, now = run.job, utcnow()
    seconds = max(1, round(time.monotonic() - run.started))
    job.last_modified_time = now
    if run.kind == "training":
        job.training_job_status, job.training_end_time = run.outcome, now
        job.training_time_in_seconds = job.billable_time_in_seconds = seconds
        job.final_metric_data_list = [dict(m, Timestamp=now) for m in run.metrics]
    else:
        job.transform_job_status, job.transform_end_time = run.outcome, now
    if run.reason is not None:
        job.failure_reason = run.reason


# ------------------------------------------------------------------------ moto patches


def _create(kind: str, jobs: str, name_param: str):
    def make(emulator: SageMakerEmulator, original):
        def create(backend, **kwargs):
            name = kwargs[name_param]
            if name in getattr(backend, jobs):  # SageMaker refuses a second job of the same name
                raise ResourceInUseException(f"{kind.capitalize()} job names must be unique within an AWS "
                                             f"account and region, and a job with the name {name} already exists")
            job = original(backend, **kwargs)
            emulator._start(kind, backend, job)
            return job
        return create
    return make


def _describe(jobs: str):
    def make(emulator: SageMakerEmulator, original):
        def describe(backend, *args, **kwargs):
            name = args[0] if args else next(iter(kwargs.values()))
            emulator._refresh(getattr(backend, jobs).get(name), described=True)
            return original(backend, *args, **kwargs)
        return describe
    return make


def _list(jobs: str):
    def make(emulator: SageMakerEmulator, original):
        def list_jobs(backend, *args, **kwargs):
            for job in list(getattr(backend, jobs).values()):
                emulator._refresh(job, described=False)
            return original(backend, *args, **kwargs)
        return list_jobs
    return make


def _create_model(emulator: SageMakerEmulator, original):
    def create_model(backend, **kwargs):
        if kwargs["model_name"] in backend._models:
            raise ValidationError(f"Cannot create already existing model {kwargs['model_name']!r}.")
        return original(backend, **kwargs)
    return create_model


_PATCHES = {
    "create_training_job": _create("training", "training_jobs", "training_job_name"),
    "describe_training_job": _describe("training_jobs"),
    "list_training_jobs": _list("training_jobs"),
    "create_transform_job": _create("transform", "transform_jobs", "transform_job_name"),
    "describe_transform_job": _describe("transform_jobs"),
    "list_transform_jobs": _list("transform_jobs"),
    "create_model": _create_model,
}
