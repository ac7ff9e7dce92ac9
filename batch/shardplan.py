"""A sharded run's plan: where it searches, and the three AWS Batch jobs that run it.

A sharded run (:mod:`batch.shards`) searches in its shard jobs with the local engine: the rule
lives here alone (:data:`SEARCH_BACKEND`), and the job plan is made from plain values, so
``topx run``, ``topx submit --shards`` and the pipeline's checks all read the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from batch import storage
from batch.config import JobConfig
from batch.errors import ConfigError

SEARCH_BACKEND = "local"  # a sharded run searches in its shard jobs, with the local engine
RUN_ID_ENV, SHARD_COUNT_ENV = "TOPX_RUN_ID", "TOPX_SHARD_COUNT"
# A sharded run's jobs: role, the `stage` parameter (the topx command), its job name's suffix.
ROLES = (("prepare", "run", "prepare"), ("shards", "shard", "shards"), ("finalize", "finalize", "finalize"))


def search_backend_with(train_backend: str, shards: int | None) -> str:
    """Where the search runs when only the training backend is given: with the training, except
    in a sharded run."""
    return SEARCH_BACKEND if shards is not None else train_backend


def check_sharded(cfg: JobConfig, shards: int) -> None:
    """A sharded run needs at least one shard and searches in its shard jobs, locally."""
    if shards < 1:
        raise ConfigError(f"--shards must be ≥ 1; got {shards}")
    if cfg.search.backend != SEARCH_BACKEND:
        raise ConfigError(f"a sharded run searches in its shard jobs with the {SEARCH_BACKEND} engine; set "
                          f"search.backend to {SEARCH_BACKEND} (TOPX_SEARCH_BACKEND={SEARCH_BACKEND}), or search on "
                          f"SageMaker without --shards")
    if cfg.rerank.enabled:
        raise ConfigError(f"a sharded run's shard jobs publish the FM's lists as searched: rerank.model "
                          f"{cfg.rerank.model} needs a run without --shards (or set rerank.model none)")


@dataclass(frozen=True)
class PlannedJob:
    """One job of a sharded run: ``stage`` is the topx command its ``stage`` parameter picks;
    ``array_size`` is set for the shard array only."""

    role: str
    name: str
    parameters: dict[str, str]
    environment: dict[str, str]
    array_size: int | None = None


def sharded_jobs(name: str, shards: int, workdir: str, run_id: str, *, parameters: dict[str, str],
                 environment: dict[str, str]) -> list[PlannedJob]:
    """Prepare, shard-array and finalize jobs of run ``run_id`` (no dependencies yet): every job
    finds the run through the shared ``s3://`` work directory and the run id in its environment."""
    if not storage.is_s3(workdir):
        raise ConfigError(f"a sharded run's jobs run on different machines and share the run through its work "
                          f"directory, which must be an s3:// prefix: pass --workdir s3://BUCKET/PREFIX (or set "
                          f"workdir in the config); got {workdir!r}")
    # The search backend is part of the run's settings: every job must say where the run searches.
    shared = {"TOPX_SEARCH_BACKEND": SEARCH_BACKEND, **environment, "TOPX_WORKDIR": workdir, RUN_ID_ENV: run_id}
    jobs = []
    for role, stage, suffix in ROLES:
        env = shared if role == "finalize" else {**shared, SHARD_COUNT_ENV: str(shards)}
        jobs.append(PlannedJob(role, f"{name[:127 - len(suffix)]}-{suffix}", {**parameters, "stage": stage}, env,
                               shards if role == "shards" else None))
    return jobs
