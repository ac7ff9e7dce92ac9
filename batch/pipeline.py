"""``topx run``: ingest → train → repackage → search → evaluate → publish, resumable.

Each stage writes its output into the run directory ``<workdir>/runs/<run_id>/`` and is recorded
in ``run.json`` when it finishes (an ``s3://`` work directory is mirrored after every stage, see
:mod:`batch.runstore`). A run that failed is resumed by the next ``topx run`` with the
same settings (the same fingerprint): finished stages are skipped, the run id is kept, so a
SageMaker job that completed is reused and the publish step replaces rather than duplicates.
Any failure marks the run failed in the database and leaves the previously published lists
current (the publish step itself is atomic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from batch.config import JobConfig
from batch.errors import TopxError
from batch.log import redact
from batch.rundir import RunDir
from batch.runstore import RunStore

log = logging.getLogger("topx.run")

STAGES = ("ingest", "train", "repackage", "search", "evaluate", "publish")


def fingerprint(cfg: JobConfig) -> str:
    """Hash of the settings that decide what a run computes (not where it publishes)."""
    settings = cfg.to_dict()
    for key in ("publish", "workdir", "scratch", "batch"):
        settings.pop(key)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def new_run_id() -> str:
    """Sortable to the millisecond (the latest run is the resume candidate) and short (it is
    stored on every published row): ``20261121T120000123Z-3f9a``."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{uuid.uuid4().hex[:4]}"


class RunState:
    """``run.json`` of a run directory: id, fingerprint, status and the finished stages."""

    def __init__(self, run: RunDir, data: dict[str, Any]):
        self.run, self.data = run, data

    @classmethod
    def create(cls, run: RunDir, run_id: str, fp: str) -> RunState:
        state = cls(run, {"run_id": run_id, "fingerprint": fp, "status": "running",
                          "started_at": _now(), "stages": {}})
        state.save()
        return state

    @classmethod
    def load(cls, run: RunDir) -> RunState:
        return cls(run, run.read_json("run.json"))

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    def finished(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def finish(self, stage: str, seconds: float, summary: dict[str, Any]) -> None:
        self.data["stages"][stage] = {"finished_at": _now(), "seconds": round(seconds, 3), "summary": summary}
        self.save()

    def set_status(self, status: str, error: str | None = None) -> None:
        self.data.update(status=status, error=error, updated_at=_now())
        self.save()

    def save(self) -> None:
        self.run.write_json("run.json", self.data)


def open_run(cfg: JobConfig, store: RunStore, *, fresh: bool = False, resume: str | None = None) -> RunState:
    """The run to work on: ``resume`` names one; otherwise the latest run if it is unfinished and
    has the same fingerprint (unless ``fresh``); otherwise a new run."""
    ids = store.run_ids()
    if resume:
        if resume not in ids:
            raise TopxError(f"no run {resume!r} in {cfg.workdir}")
        return RunState.load(store.pull(resume))
    if ids and not fresh:
        latest = store.state(ids[-1])
        if latest.get("status") != "published" and latest.get("fingerprint") == fingerprint(cfg):
            log.info("resuming run %s after its last finished stage", ids[-1])
            return RunState.load(store.pull(ids[-1]))
    run_id = new_run_id()
    return RunState.create(store.run_dir(run_id), run_id, fingerprint(cfg))


def run_job(cfg: JobConfig, *, fresh: bool = False, resume: str | None = None, **context: Any) -> dict[str, Any]:
    """Run (or resume) the whole job; returns the one-line summary. ``context``: injected boto3
    clients for the SageMaker engines (``sagemaker_client``, ``s3_client``)."""
    from batch.stages import Stages

    store = RunStore(cfg.workdir, cfg.scratch)
    state = open_run(cfg, store, fresh=fresh, resume=resume)
    stages = Stages(cfg, state.run, state.run_id, context, data_root=store.local_root)
    resumed = bool(state.data["stages"])
    started = time.perf_counter()
    for stage in STAGES:
        if state.finished(stage):
            continue
        t0 = time.perf_counter()
        try:
            summary = getattr(stages, stage)()
        except BaseException as exc:
            _fail(cfg, state, stage, exc, context)
            store.push(state.run)
            raise
        state.finish(stage, time.perf_counter() - t0, summary)
        store.push(state.run)
        log.info("stage %s finished in %.1f s", stage, time.perf_counter() - t0)
    state.set_status("published")
    store.push(state.run)
    return _summary(state, resumed, time.perf_counter() - started)


def _fail(cfg: JobConfig, state: RunState, stage: str, exc: BaseException, context: dict) -> None:
    reason = redact(f"{stage}: {type(exc).__name__}: {exc}")
    state.set_status("failed", reason)
    try:
        from batch.publish import database_url, mark_failed

        mark_failed(database_url(cfg, secrets_client=context.get("secrets_client")), state.run_id, reason)
    except Exception as db_exc:  # the database may be what failed; the run.json still says so
        log.warning("could not record the failure in the database: %s", redact(str(db_exc)))


def _summary(state: RunState, resumed: bool, seconds: float) -> dict[str, Any]:
    stages = state.data["stages"]
    publish = stages["publish"]["summary"]
    evaluate = stages["evaluate"]["summary"]
    return {
        "run_id": state.run_id, "status": "published", "resumed": resumed,
        "users": stages["ingest"]["summary"]["users"], "items": stages["ingest"]["summary"]["items"],
        "rows": publish.get("rows"), "lists": stages["search"]["summary"].get("users"),
        "metrics": evaluate.get("headline", {}), "database": publish.get("database"),
        "seconds": {**{s: stages[s]["seconds"] for s in STAGES}, "total": round(seconds, 2)},
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
