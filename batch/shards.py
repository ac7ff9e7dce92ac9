"""Scale-out without SageMaker: a sharded run's shard jobs and its final job.

::

    topx run --shards N --run-id R     ingest, train, repackage, evaluate; run R `collecting` N shards
    topx shard --run-id R --index I    (× N, e.g. an AWS Batch array job) users u % N == I: search, load
    topx finalize --run-id R           every shard loaded? R becomes current : R fails, its rows go

Every job pulls run R from the work directory, which must be shared (an ``s3://`` prefix) when
the jobs run on different machines. Shards interleave users (user index modulo N), so each gets
as many users and a like mix of model and cold users. The database side is
:mod:`batch.publish.collect`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from batch import storage
from batch.aws.clients import NO_CLIENTS, AwsClients
from batch.config import JobConfig, compute_settings
from batch.errors import ConfigError, PublishError, StageError
from batch.lists import TopLists
from batch.pipeline import RunState, check_run_id, fingerprint
from batch.publish.collect import LOADED, IncompleteRunError, finalize_run, load_shard, shard_state
from batch.publish.gate import GateRefusedError
from batch.rundir import RunDir
from batch.runinfo import run_info
from batch.runstore import RunStore
from batch.shardplan import check_sharded
from batch.stages import Stages, keyed_lists, rules

log = logging.getLogger("topx.run")


def run_settings(cfg: JobConfig, run_id: str) -> dict[str, Any]:
    """What run ``run_id`` computes (its saved settings, less where it works and publishes), for
    its shard and final jobs to start from: they need not repeat ``topx run``'s options."""
    location = storage.join(cfg.workdir, "runs", check_run_id(run_id), "config.json")
    if not storage.exists(location):
        return {}
    saved = json.loads(storage.read_bytes(location).decode("utf-8"))
    return compute_settings(saved)


def shard_users(n_users: int, index: int, shards: int) -> np.ndarray:
    """The users of shard ``index`` of ``shards``: int64 (≈ n_users / shards,), sorted, every
    ``shards``-th user from ``index`` on."""
    if not 0 <= index < shards:
        raise ConfigError(f"shard index must be 0 to {shards - 1}; got {index}")
    return np.arange(index, n_users, shards, dtype=np.int64)


def run_shard(cfg: JobConfig, run_id: str, index: int, shards: int | None = None, *,
              clients: AwsClients = NO_CLIENTS) -> dict[str, Any]:
    """Compute and load shard ``index`` of collecting run ``run_id``; nothing to do if it is
    loaded already. ``shards``: the count the caller expects (checked against the run's)."""
    started = time.perf_counter()
    state = _pull(cfg, run_id)
    shards = _shard_count(state, shards)
    check_sharded(cfg, shards)
    shard_users(0, index, shards)  # a bad index fails before any work
    stages = Stages(cfg, state.run, run_id, clients)
    url = stages.database_url()
    summary = {"command": "shard", "run_id": run_id, "shard": index, "shards": shards}
    if shard_state(url, run_id, index) == LOADED:
        log.info("run %s shard %d is loaded already; nothing to do", run_id, index)
        return {**summary, "loaded": False, "rows": 0, "users": 0, "seconds": round(time.perf_counter() - started, 3)}
    dataset = state.run.load_dataset()
    lists = shard_lists(cfg, state.run, shard_users(dataset.n_users, index, shards), clients)
    loaded = load_shard(url, run_id, index, lists, dataset.users, dataset.items)
    return {**summary, **loaded, "seconds": round(time.perf_counter() - started, 3)}


def shard_lists(cfg: JobConfig, run: RunDir, users: np.ndarray, clients: AwsClients = NO_CLIENTS) -> TopLists:
    """The lists of ``users`` exactly as the search stage makes them for every user."""
    from batch.serve.recommend import search_run
    from batch.serve.search import make_searcher

    return search_run(cfg, run, make_searcher(cfg, clients=clients), users).lists


def finalize(cfg: JobConfig, run_id: str, *, clients: AwsClients = NO_CLIENTS) -> dict[str, Any]:
    """Publish collecting run ``run_id`` if all its shards loaded, else fail it (raising
    :class:`IncompleteRunError`); ``run.json`` records either outcome."""
    started = time.perf_counter()
    store = RunStore(cfg.workdir, cfg.scratch)
    state = _pull(cfg, run_id, store)
    stages = Stages(cfg, state.run, run_id, clients)
    dataset = state.run.load_dataset()
    stages.keyed_lists()  # similar items and audiences: item-keyed, computed once here, not per shard
    keyed = keyed_lists(state.run, rules(cfg, state.run))
    try:
        result = finalize_run(stages.database_url(), run_info(cfg, state.run, run_id, dataset), dataset.items,
                              item_titles=dataset.item_titles, item_attributes=dataset.item_attributes,
                              keep_runs=cfg.publish.keep_runs,
                              gate=cfg.publish.gate, users=dataset.users, **keyed)
    except PublishError as exc:
        # A new `topx run --shards N --run-id R` then collects again: afresh if the run failed,
        # as a no-op if it is still collecting.
        state.reopen("collect")
        if isinstance(exc, IncompleteRunError):
            state.set_status("failed", str(exc))
        elif isinstance(exc, GateRefusedError):
            state.set_status("rejected", str(exc))
        store.push(state.run)
        raise
    state.finish("finalize", time.perf_counter() - started, result)
    state.set_status("published")
    store.push(state.run)
    return {"command": "finalize", **result}


def _pull(cfg: JobConfig, run_id: str, store: RunStore | None = None) -> RunState:
    """Run ``run_id`` from the work directory, made with the same settings as ``cfg``: a shard
    computed under other settings would publish lists that do not belong together."""
    store = store or RunStore(cfg.workdir, cfg.scratch)
    saved = store.state(check_run_id(run_id))
    if not saved:
        raise StageError(f"no run {run_id!r} in {cfg.workdir}: the jobs of a sharded run must share an s3:// work "
                         f"directory, and `topx run --shards N --run-id {run_id}` must have run first")
    if saved.get("fingerprint") != fingerprint(cfg):
        raise ConfigError(f"run {run_id} was made with other settings than this job's; its jobs must share one "
                          f"configuration")
    return RunState.load(store.pull(run_id))


def _shard_count(state: RunState, expected: int | None) -> int:
    shards = state.data.get("shards")
    if shards is None:
        raise StageError(f"run {state.run_id} is not a sharded run: start it with topx run --shards N")
    if expected is not None and expected != shards:
        raise ConfigError(f"run {state.run_id} has {shards} shards, not {expected}")
    return int(shards)
