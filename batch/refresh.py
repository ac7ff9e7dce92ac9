"""``topx refresh --users FILE``: recompute a few users' lists with the current run's model and
publish them as a new run that carries every other user's rows over (new sign-ups, users with new
activity), without training.

1. The current run is read from the database; its run directory (``--run``, else
   ``<workdir>/runs/<run id>``, else the directory of its ``model_location``) must hold the very
   model the run was published from (its SHA-256 against the one the run's metrics record).
2. Settings: the run's own (its ``config.json``), under ``--config``, ``TOPX_*`` and options, as for
   the serving commands; the candidate rules must be the run's (their digest against the one its
   ``lists.npz`` records), and so must every other setting that decides the lists
   (:data:`PINNED`: list length, seen items, the category cap's column, the re-ranker and its
   candidates), since the carried rows were made with them.
3. The job's data source is read again as ``topx run`` ingests it, for the users' current
   activity (:mod:`batch.serve.refresh`), and their lists are searched.
4. :func:`batch.publish.refresh.publish_refresh` publishes the new run, gated like any run.

Run ids: a refresh publishes a new run and never writes over a published one. ``--run-id R``
naming a run that was published (current, superseded or pruned) is refused
(:class:`~batch.publish.refresh.RunIdTakenError`, exit 2), with one exception that makes a retried
job idempotent: when R is the current run and is a refresh of the very same users (the digest of
their ids, ``users_sha256``, recorded in ``runs.counts.refresh``), that refresh already published
and its summary is returned (``already_published``) without computing or publishing anything.
An id whose publish failed or was rejected may be used again, as for ``topx publish``.

Metrics: a refresh neither trains nor evaluates, and the model is the source run's, so the new
run carries the source run's stored metrics, marked ``refresh`` (with ``source_run`` and a note
saying so); the publish gate judges those, and its other checks (rows present, users without a
list) on the new run's own rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batch import lineage, storage
from batch.aws.clients import NO_CLIENTS, AwsClients
from batch.config import JobConfig
from batch.data.interactions import IdMap
from batch.errors import NoRunError, StaleArtifactError
from batch.rundir import RunDir

log = logging.getLogger("topx.refresh")

METRICS_NOTE = ("carried over from the source run: a refresh recomputes some users' lists with the source run's "
                "model and neither trains nor evaluates")


def refresh(located: JobConfig, users: str, settings: Callable[[dict], JobConfig], *, run_dir: str | None = None,
            run_id: str | None = None, clients: AwsClients = NO_CLIENTS) -> dict[str, Any]:
    """Refresh the users listed in file ``users`` (see the module doc). ``located``: the settings
    that say where the database and work directory are; ``settings(saved)``: the job settings
    over the run's saved ones; ``run_dir``: the current run's run directory when it is not
    where ``located`` says; ``run_id``: the new run's id (default a new one)."""
    from batch.data import load_dataset
    from batch.data.default import resolve_data
    from batch.pipeline import check_run_id, new_run_id
    from batch.publish import database_url
    from batch.publish.connect import require_existing
    from batch.publish.refresh import publish_refresh, published_run
    from batch.publish.registry import RunInfo
    from batch.serve.refresh import in_data, read_users, refresh_lists
    from batch.serve.repackage import vectors_for

    url = database_url(located, secrets_client=clients.secrets)
    current = current_run(url, require_existing)
    run = source_dir(located, current, run_dir)
    check_model(run, current)
    cfg = settings(_saved(run))
    check_rules(cfg, run)
    check_settings(cfg, run)
    source = run.load_dataset()
    wanted = read_users(users, source.users, header=cfg.data.columns.user)
    new_id = check_run_id(run_id) if run_id else new_run_id()
    digest = users_digest(wanted.ids)  # of every id the file names, those skipped below included
    earlier = published_run(url, new_id) if run_id else None
    if earlier is not None:
        return already_published(earlier, digest)
    now = load_dataset(resolve_data(cfg.data, cfg.workdir))
    wanted, unknown = in_data(wanted, source, now, users)
    found = refresh_lists(cfg, run.load_model(), run.load_layout(), source, vectors_for(run), wanted.ids, now,
                          _searcher(cfg), reranker(cfg, run, source), member(current, run))
    report = {"source_run": current["id"], "model_run": run.path.name, "users_file": str(users),
              "users_sha256": digest, "duplicates": wanted.duplicates, **unknown, **found.report,
              **item_item_part(current, found.report)}
    info = RunInfo(run_id=new_id, config=cfg.to_dict(),
                   model_location=current["model_location"], started_at=datetime.now(UTC),
                   metrics={**(current["metrics"] or {}),
                            "refresh": {"source_run": current["id"], "note": METRICS_NOTE}},
                   counts={**(current["counts"] or {}), "refresh": _counted(report)})
    published = publish_refresh(url, info, current["id"], found.lists, found.users, source.items,
                                keep_runs=cfg.publish.keep_runs, gate=cfg.publish.gate,
                                known_users=source.n_users + found.report["unknown_to_run"])
    return {"command": "refresh", **published, "refresh": report}


def _engine(current: dict[str, Any]) -> dict[str, Any]:
    return ((current.get("metrics") or {}).get("train") or {}).get("engine") or {}


def item_item_factors(current: dict[str, Any]) -> int:
    """The factors of the run's item-item member (EASE; ``item_item_factors`` in its training
    metrics), 0 when the model has none."""
    return int(_engine(current).get("item_item_factors") or 0)


def member(current: dict[str, Any], run: RunDir):
    """The item-item member's settings (the run's saved ``train.ials``, with the recency and rating
    exponent its training used) and factors when the run's model has one, else None."""
    from batch.config import load_config
    from batch.train.ials_engine import item_item_settings

    factors = item_item_factors(current)
    if not factors:
        return None
    saved = _saved(run)
    ials = saved.get("train", {}).get("ials", {})
    if "item_item_rating_exponent" not in ials:  # a run from before the member weighted ratings
        saved = {**saved, "train": {**saved.get("train", {}), "ials": {**ials, "item_item_rating_exponent": 0.0}}}
    train = load_config(env={}, base=saved).train
    settings = item_item_settings(train.ials, train.backend)
    # as the run's training fitted it: the recency it chose and the rating weights' exponent it used
    # (0 where its data's ratings were ignored); absent from runs from before, which used the settings
    engine = _engine(current)
    fitted = {name: float(engine[f"item_item_{name}"]) for name in ("recency", "rating_exponent")
              if engine.get(f"item_item_{name}") is not None}
    return dataclasses.replace(settings, **fitted), factors


def item_item_part(current: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """With the item-item member, ``item_item``: its ``factors`` and the users whose member part
    was ``recomputed`` from their current profile (every rebuilt vector); empty without it."""
    factors = item_item_factors(current)
    return {"item_item": {"factors": factors, "recomputed": found["rebuilt_vectors"]}} if factors else {}


def users_digest(ids: IdMap) -> str:
    """Hex SHA-256 of a refresh's user ids (sorted, unique, as text, one a line): which users a
    refresh run refreshed, for telling a retry of it from another refresh."""
    return hashlib.sha256("".join(f"{value}\n" for value in ids.ids.tolist()).encode()).hexdigest()


def already_published(row: dict[str, Any], digest: str) -> dict[str, Any]:
    """The summary of the refresh run ``row`` (a published run's ``runs`` row) when it is current
    and refreshed the users of ``digest`` (a retry of that refresh); else
    :class:`~batch.publish.refresh.RunIdTakenError`."""
    from batch.publish.refresh import taken

    done = (row.get("counts") or {}).get("refresh") or {}
    if row["status"] != "current" or done.get("users_sha256") != digest:
        raise taken(row["id"], row["status"] if row["status"] != "current" or not done else
                    "current, a refresh of other users")
    log.info("run %s is current and refreshed these very users: nothing to do", row["id"])
    return {"command": "refresh", "run_id": row["id"], "source_run": done.get("source_run"), "already_published": True,
            "rows": row["n_rows"], "users": row["n_users"], "refresh": done}


def current_run(url: str, require_existing: Callable[[str], str]) -> dict[str, Any]:
    """The current run's ``runs`` row; :class:`NoRunError` when nothing is published (a SQLite
    file that does not exist included: a refresh never creates a database)."""
    from batch.errors import NoDatabaseError
    from batch.publish import current_run as read_current
    from batch.publish.connect import shown

    try:
        require_existing(url)
    except NoDatabaseError as exc:
        raise NoRunError(f"no current run to refresh: {exc}") from None
    found = read_current(url)
    if found is None:
        raise NoRunError(f"no current run in {shown(url)} to refresh: publish one first (topx run)")
    return found


def source_dir(located: JobConfig, current: dict[str, Any], given: str | None) -> RunDir:
    """The current run's run directory: ``given``, else the work directory's run of the current
    run's model (the current run, or the run a refresh run's model came from: ``model_run``),
    pulled from an ``s3://`` work directory into the scratch directory, else the directory of
    the run's ``model_location``; :class:`NoRunError` when none holds a model."""
    from batch.runstore import RunStore

    if given is not None:
        run = RunDir(given)
        run.require("model.tar.gz")
        return run
    model_run = ((current.get("counts") or {}).get("refresh") or {}).get("model_run", current["id"])
    places = []
    if storage.is_s3(located.workdir):
        store = RunStore(located.workdir, located.scratch)
        if store.state(model_run):
            places.append(store.pull(model_run).path)
    else:
        places.append(Path(located.workdir) / "runs" / model_run)
    if current.get("model_location") and not storage.is_s3(current["model_location"]):
        places.append(Path(current["model_location"]).parent)
    for place in places:
        if (place / "model.tar.gz").exists():
            return RunDir(place)
    raise NoRunError(f"the run directory of the current run {current['id']} is not here (looked in "
                     f"{', '.join(map(str, places)) or 'no local place'}): pass --run RUNDIR")


def check_model(run: RunDir, current: dict[str, Any]) -> None:
    """The run directory's model must be the one the current run was published from, whose digest
    its stored metrics record (:class:`StaleArtifactError`)."""
    metrics = current.get("metrics") or {}
    digest = next((metrics[s][lineage.KEY] for s in ("evaluate", "train")
                   if lineage.KEY in (metrics.get(s) or {})), None)
    lineage.check(run.model, digest, f"the current run {current['id']}'s lists",
                  f"pass --run with the run directory of run {current['id']}")


def check_rules(cfg: JobConfig, run: RunDir) -> None:
    """The candidate rules of ``cfg`` must be those the run's lists were made with (the digest
    its ``lists.npz`` records, else its saved settings'), as the carried rows were."""
    from batch.config import load_config

    lists = run.file("lists.npz")
    if lists.exists():
        expected = lineage.recorded(lists, lineage.RULES_KEY)
    else:
        expected = lineage.rules_digest(load_config(env={}, base=_saved(run)).search)
    if lineage.rules_digest(cfg.search) != expected:
        raise StaleArtifactError(f"the candidate rules (search.allow, deny, suppress, include/exclude_attributes, "
                                 f"availability, reference_time, max_per_category, and the files' contents) differ "
                                 f"from those run {run.path.name}'s lists were made with: a refresh keeps the "
                                 f"run's rules, so that refreshed and carried-over lists agree; run topx run to "
                                 f"publish lists with new rules")


# Settings besides the candidate rules that decide a user's list; a refresh must keep the run's.
PINNED = ("search.top", "search.exclude_seen", "search.category", "rerank.model", "rerank.candidates")


def check_settings(cfg: JobConfig, run: RunDir) -> None:
    """Every setting of :data:`PINNED` that decides the run's lists must be the run's (its saved
    ``config.json``), as the carried rows were made with it (:class:`StaleArtifactError` naming
    each one that differs; ``search.category`` only counts with a category cap,
    ``rerank.candidates`` only with a re-ranker)."""
    from batch.config import load_config

    saved = load_config(env={}, base=_saved(run))
    relevant = {"search.category": saved.search.max_per_category > 0, "rerank.candidates": saved.rerank.enabled}
    differ = []
    for name in PINNED:
        section, key = name.split(".")
        mine, theirs = getattr(getattr(cfg, section), key), getattr(getattr(saved, section), key)
        if relevant.get(name, True) and mine != theirs:
            differ.append(f"{name} {mine!r} (the run's: {theirs!r})")
    if differ:
        raise StaleArtifactError(f"{'; '.join(differ)}: a refresh keeps the settings run {run.path.name}'s lists were "
                                 f"made with, so that refreshed and carried-over lists agree; leave them as the run "
                                 f"had them, or run topx run to publish lists with new settings")


def reranker(cfg: JobConfig, run: RunDir, source):
    """The run's re-ranker when its settings re-rank (``[rerank] model``), else None; the run's
    lists must have been re-ranked by that very model, or not at all when it does not
    (:class:`StaleArtifactError`), like the carried-over rows."""
    if run.file("lists.npz").exists():
        lineage.check_reranker(run, cfg.rerank.enabled, f"a refresh re-ranks as run {run.path.name} did: keep its "
                                                        f"[rerank] settings")
    if not cfg.rerank.enabled:
        return None
    from batch.rerank.stage import reranker_for

    return reranker_for(cfg, run, source)


def _searcher(cfg: JobConfig):
    """The run's search engine; a few users' lists are searched locally even when the run used
    SageMaker's k-NN (which returns exactly the local engine's lists), saying so."""
    import dataclasses

    from batch.serve.search import make_searcher

    if cfg.search.backend != "local":
        log.warning("topx refresh searches locally (exact): search.backend %s is not used for a refresh",
                    cfg.search.backend)
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, backend="local", method="exact"))
    return make_searcher(cfg)


def _counted(report: dict[str, Any]) -> dict[str, Any]:
    """What ``runs.counts`` records of a refresh: where its users' lists came from."""
    keys = ("source_run", "model_run", "users_sha256", "users", "known_to_run", "unknown_to_run", "vectors",
            "users_with_new_activity", "new_interactions", "unknown_item_interactions", "not_in_data", "item_item")
    return {key: report[key] for key in keys if key in report}


def _saved(run: RunDir) -> dict[str, Any]:
    """The run's saved settings, less where it published (stored with credentials redacted)."""
    return {k: v for k, v in run.read_json("config.json").items() if k != "publish"}
