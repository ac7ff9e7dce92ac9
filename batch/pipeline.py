"""``topx run``: ingest → train → rerank → repackage → search → evaluate → publish → report, resumable.

Each stage writes its output into the run directory ``<workdir>/runs/<run_id>/`` and is recorded
in ``run.json`` when it finishes (an ``s3://`` work directory is mirrored after every stage, see
:mod:`batch.runstore`). A run that failed is resumed by the next ``topx run`` with the
same settings (the same fingerprint): finished stages are skipped, the run id is kept, so a
SageMaker job that completed is reused and the publish step replaces rather than duplicates.
Any failure marks the run failed in the database and leaves the previously published lists
current (the publish step itself is atomic).

A sharded run (``shards=N``, ``topx run --shards N``) stops after evaluating: its ``collect``
step registers it in the database as ``collecting`` N shards and it waits, status
``collecting``, for N ``topx shard`` jobs and one ``topx finalize`` (:mod:`batch.shards`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from batch.aws.clients import NO_CLIENTS, AwsClients
from batch.config import JobConfig, compute_settings
from batch.errors import ConfigError, TopxError
from batch.log import redact
from batch.rundir import RunDir
from batch.runstore import RunStore
from batch.shardplan import check_sharded

log = logging.getLogger("topx.run")

# Statuses of a run the next `topx run` does not resume (waiting for shards counts as finished).
FINISHED = ("published", "collecting", "rejected")
STAGES = ("ingest", "train", "rerank", "repackage", "search", "evaluate", "publish", "report")
# The rerank stage and the stages that use its model: run again when it must (_check_rerank_stage).
RERANK_USERS = ("rerank", "search", "evaluate", "publish", "report")
# A sharded run: its shard jobs search and load, `topx finalize` publishes (batch.shards).
SHARDED_STAGES = ("ingest", "train", "repackage", "evaluate", "collect")
# Run ids name a directory, an S3 prefix and every published row: short and plain.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Settings that say where a run works and publishes, not what it computes.
def fingerprint(cfg: JobConfig) -> str:
    """Hash of the settings that decide what a run computes (not where or how it runs and
    publishes: :func:`~batch.config.compute_settings`)."""
    settings = compute_settings(cfg.to_dict())
    if not cfg.rerank.enabled:
        # without a re-ranker its settings change nothing, and runs from before it keep their fingerprint
        settings.pop("rerank")
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

    def reopen(self, stage: str) -> None:
        """Forget that ``stage`` finished, so the next run of this run id runs it again."""
        self.data["stages"].pop(stage, None)
        self.save()

    def set_status(self, status: str, error: str | None = None) -> None:
        self.data.update(status=status, error=error, updated_at=_now())
        self.save()

    def save(self) -> None:
        self.run.write_json("run.json", self.data)


def open_run(cfg: JobConfig, store: RunStore, *, fresh: bool = False, resume: str | None = None,
             run_id: str | None = None) -> RunState:
    """The run to work on: ``resume`` names one; ``run_id`` names one that is resumed if it
    exists and created if not; otherwise the latest run if it is unfinished (not waiting for
    its shards, nor rejected by the publish gate) and has the same fingerprint (unless
    ``fresh``); otherwise a new run."""
    if run_id:
        return _named_run(cfg, store, run_id)
    ids = store.run_ids()
    if resume:
        if resume not in ids:
            raise TopxError(f"no run {resume!r} in {cfg.workdir}")
        return RunState.load(store.pull(resume))
    if ids and not fresh:
        latest = store.state(ids[-1])
        if latest.get("status") not in FINISHED and latest.get("fingerprint") == fingerprint(cfg):
            log.info("resuming run %s after its last finished stage", ids[-1])
            return RunState.load(store.pull(ids[-1]))
    run_id = new_run_id()
    return RunState.create(store.run_dir(run_id), run_id, fingerprint(cfg))


def _named_run(cfg: JobConfig, store: RunStore, run_id: str) -> RunState:
    """Run ``run_id``: resumed if the store has it (with the same settings), else created."""
    check_run_id(run_id)
    saved = store.state(run_id)
    if not saved:
        return RunState.create(store.run_dir(run_id), run_id, fingerprint(cfg))
    if saved.get("fingerprint") != fingerprint(cfg):
        raise ConfigError(f"run {run_id} in {cfg.workdir} was made with other settings; its jobs must share "
                          f"one configuration (or use a new run id)")
    log.info("resuming run %s after its last finished stage", run_id)
    return RunState.load(store.pull(run_id))


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a valid run id, else :class:`ConfigError`."""
    if not RUN_ID.fullmatch(run_id or ""):
        raise ConfigError(f"run id {run_id!r}: up to 64 letters, digits, '.', '_' and '-', starting alphanumeric")
    return run_id


def run_job(cfg: JobConfig, *, fresh: bool = False, resume: str | None = None, run_id: str | None = None,
            shards: int | None = None, clients: AwsClients = NO_CLIENTS) -> dict[str, Any]:
    """Run (or resume) the whole job; returns the one-line summary. ``run_id``: the run to create
    or resume; ``shards``: stop at ``collecting`` for that many shard jobs (see module doc).
    ``clients``: AWS clients handed in (SageMaker, S3, Secrets Manager) instead of made from ``cfg``."""
    from batch.report import REPORT_NAME, require_plotting
    from batch.stages import Stages

    if shards is not None:
        check_sharded(cfg, shards)
    else:
        require_plotting()  # the report is written after publishing: fail before training instead
    store = RunStore(cfg.workdir, cfg.scratch)
    state = open_run(cfg, store, fresh=fresh, resume=resume, run_id=run_id)
    if shards is not None and state.data["status"] == "published":
        return _sharded_summary(state, False, 0.0)  # finalized already: a late retry of its prepare job
    if shards is None:
        _check_rerank_stage(cfg, state)
    stages = Stages(cfg, state.run, state.run_id, clients, data_root=store.local_root, shards=shards)
    resumed = bool(state.data["stages"])
    started = time.perf_counter()
    for stage in SHARDED_STAGES if shards is not None else STAGES:
        if not state.finished(stage):
            _run_stage(cfg, store, state, stages, stage, clients)
    if shards is not None:
        state.data["shards"] = shards
        state.set_status("collecting")
        store.push(state.run)
        return _sharded_summary(state, resumed, time.perf_counter() - started)
    state.set_status("published")
    store.push(state.run)
    report = store.location(state.run_id, REPORT_NAME)
    log.info("the report of run %s is at %s", state.run_id, report)
    return {**_summary(state, resumed, time.perf_counter() - started), "report": report}


def _check_rerank_stage(cfg: JobConfig, state: RunState) -> None:
    """A rerank stage recorded finished counts only while what it left is what ``[rerank]`` asks
    now (``--resume`` takes a run whatever its fingerprint): when it trained another model or
    none, or its model file is missing or not the one it recorded, it is reopened, with the
    stages after it that use its model (search, evaluate, publish, report)."""
    from batch.lineage import RERANK_MODEL, model_digest

    done = state.data["stages"].get("rerank")
    if done is None:
        return
    made, path = done.get("summary") or {}, state.run.file(RERANK_MODEL)
    if made.get("model") != cfg.rerank.model:
        why = f"it made model {made.get('model')!r}, the settings ask for {cfg.rerank.model!r}"
    elif cfg.rerank.enabled and not path.exists():
        why = f"{path} is missing"
    elif cfg.rerank.enabled and made.get("sha256") != model_digest(path):
        why = f"{path} is not the model it recorded"
    else:
        return
    log.warning("run %s: the rerank stage runs again (%s), and the stages after it that use its model",
                state.run_id, why)
    for stage in RERANK_USERS:
        state.reopen(stage)


def _run_stage(cfg: JobConfig, store: RunStore, state: RunState, stages, stage: str, clients: AwsClients) -> None:
    t0 = time.perf_counter()
    try:
        summary = getattr(stages, stage)()
    except BaseException as exc:
        _fail(cfg, state, stage, exc, clients)
        store.push(state.run)
        raise
    state.finish(stage, time.perf_counter() - t0, summary)
    store.push(state.run)
    log.info("stage %s finished in %.1f s", stage, time.perf_counter() - t0)


def _fail(cfg: JobConfig, state: RunState, stage: str, exc: BaseException, clients: AwsClients) -> None:
    from batch.publish.gate import GateRefusedError

    reason = redact(f"{stage}: {type(exc).__name__}: {exc}")
    # A rejected run is done (the database says so already): the next `topx run` starts afresh.
    state.set_status("rejected" if isinstance(exc, GateRefusedError) else "failed", reason)
    try:
        from batch.publish import database_url, mark_failed

        mark_failed(database_url(cfg, secrets_client=clients.secrets), state.run_id, reason)
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


def _sharded_summary(state: RunState, resumed: bool, seconds: float) -> dict[str, Any]:
    stages = state.data["stages"]
    return {
        "run_id": state.run_id, "status": state.data["status"], "resumed": resumed,
        "shards": state.data.get("shards"), "users": stages["ingest"]["summary"]["users"],
        "items": stages["ingest"]["summary"]["items"], "metrics": stages["evaluate"]["summary"].get("headline", {}),
        "database": stages.get("collect", {}).get("summary", {}).get("database"),
        "seconds": {**{s: stages[s]["seconds"] for s in SHARDED_STAGES if s in stages}, "total": round(seconds, 2)},
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
