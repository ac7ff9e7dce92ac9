"""The stages of ``topx run``. Each reads what earlier stages left in the run directory, so a
resumed run can start at any stage, and returns a small summary for ``run.json``. A sharded run
ends with ``collect`` instead of ``search`` and ``publish``."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from batch import lineage
from batch.aws.clients import NO_CLIENTS, AwsClients
from batch.config import JobConfig
from batch.lists import SOURCE_POPULARITY, TopLists
from batch.rundir import RunDir
from batch.runinfo import run_info

log = logging.getLogger("topx.run")


class Stages:
    def __init__(self, cfg: JobConfig, run: RunDir, run_id: str, clients: AwsClients = NO_CLIENTS, *, data_root=None,
                 shards: int | None = None):
        """``data_root``: local directory for generated data (default: the work directory);
        ``shards``: how many shard jobs a sharded run's ``collect`` registers."""
        self.cfg, self.run, self.run_id, self.clients = cfg, run, run_id, clients
        self.data_root = data_root or cfg.workdir
        self.shards = shards

    def ingest(self) -> dict[str, Any]:
        from batch.data import load_dataset
        from batch.data.default import resolve_data

        data = resolve_data(self.cfg.data, self.data_root)
        dataset = load_dataset(data)
        dataset.save(self.run.path)
        return {"source": data.path, "users": dataset.n_users, "items": dataset.n_items,
                "train": len(dataset.train), "test": len(dataset.test),
                "duplicates_resolved": dataset.report.get("duplicates_resolved", 0)}

    def train(self) -> dict[str, Any]:
        from batch.train import make_trainer
        from batch.train.stage import train_run

        trainer = make_trainer(self.cfg, run_id=self.run_id, clients=self.clients)
        return train_run(self.cfg, self.run.load_dataset(against_model=False), self.run, trainer=trainer)

    def rerank(self) -> dict[str, Any]:
        """The re-ranker (``[rerank] model``) trained on the run's training interactions, or
        nothing (a stale one of an earlier attempt with other settings removed)."""
        from batch.rerank.train import MODEL_NAME

        if not self.cfg.rerank.enabled:
            self.run.file(MODEL_NAME).unlink(missing_ok=True)
            return {"model": "none"}
        from batch.rerank.train import summary, train_reranker

        dataset = self.run.load_dataset(against_model=False)
        return summary(train_reranker(self.cfg, self.run, dataset, self.clients), dataset)

    def repackage(self) -> dict[str, Any]:
        from batch.serve.repackage import repackage

        vectors = repackage(self.run.load_model(), self.run.load_dataset(), self.run.load_layout())
        self.run.save_derived("vectors.npz", vectors)
        return {"dim": int(vectors.users.shape[1]), "users_by_status": _counts(vectors.user_status),
                "items_by_status": _counts(vectors.item_status)}

    def search(self) -> dict[str, Any]:
        lists, report = search_lists(self.cfg, self.run, run_id=self.run_id, clients=self.clients)
        return {"users": lists.n_users, "rows": len(lists), "top": self.cfg.search.top,
                "popularity_users": int(np.unique(lists.user[lists.source == SOURCE_POPULARITY]).size),
                "short_lists": _short_lists(lists, self.cfg.search.top), **report, **self.keyed_lists()}

    def keyed_lists(self) -> dict[str, Any]:
        """Similar items (``[similar] top`` > 0) and audiences (``[audience] items`` set), saved
        as ``similar.npz`` / ``audiences.npz`` for the publish stage."""
        from batch.serve.search import make_keyed_searcher
        from batch.serve.similar import audiences_for_run, similar_for_run

        summary: dict[str, Any] = {}
        for name, what, wanted, make in (("similar", "similar", self.cfg.similar.top > 0, similar_for_run),
                                         ("audiences", "audience", self.cfg.audience.items is not None,
                                          audiences_for_run)):
            path = self.run.file(f"{name}.npz")
            path.unlink(missing_ok=True)  # a resumed run with other settings keeps no stale file
            if wanted:
                searcher = make_keyed_searcher(self.cfg, what, run_id=self.run_id, clients=self.clients)
                found = make(self.cfg, self.run, searcher=searcher)
                self.run.save_derived(path.name, found, **rules(self.cfg, self.run))
                summary[f"{name}_rows"] = len(found)
        return summary

    def evaluate(self) -> dict[str, Any]:
        from batch.serve.evaluate import evaluate_run

        result = evaluate_run(self.cfg, self.run)
        return {"headline": result["headline"]}

    def publish(self) -> dict[str, Any]:
        from batch.metrics.since import record_churn
        from batch.publish import publish_run

        remedy = f"rerun the search stage (topx recommend --run {self.run.path})"
        dataset, url = self.run.load_dataset(), self.database_url()
        lists = self.run.load_derived("lists.npz", TopLists, remedy)
        lineage.check_reranker(self.run, self.cfg.rerank.enabled, remedy)
        self.run.model_metrics(f"rerun topx evaluate --run {self.run.path}")  # before touching the database
        lineage.check_evaluated(self.run, f"rerun topx evaluate --run {self.run.path}")
        record_churn(url, self.run, self.run_id, lists, dataset, self.cfg.evaluate.k)
        return publish_run(url, run_info(self.cfg, self.run, self.run_id, dataset), lists,
                           dataset.users, dataset.items, item_titles=dataset.item_titles,
                           item_attributes=dataset.item_attributes,
                           keep_runs=self.cfg.publish.keep_runs, gate=self.cfg.publish.gate,
                           **keyed_lists(self.run, lineage.recorded_rules(self.run.file("lists.npz"))))

    def report(self) -> dict[str, Any]:
        """The run's HTML report, with the trend of the last published runs from the database."""
        from batch.report import REPORT_NAME, write_report

        path = write_report(self.run, self.run.file(REPORT_NAME), database_url=self.database_url())
        return {"file": path.name, "bytes": path.stat().st_size}

    def collect(self) -> dict[str, Any]:
        """A sharded run: registered as collecting ``shards`` shards, storage made ready."""
        from batch.publish.collect import open_collection

        info = run_info(self.cfg, self.run, self.run_id, self.run.load_dataset())
        return open_collection(self.database_url(), info, self.shards)

    def database_url(self) -> str:
        from batch.publish import database_url

        return database_url(self.cfg, secrets_client=self.clients.secrets)


def search_lists(cfg: JobConfig, run: RunDir, *, run_id: str | None = None,
                 clients: AwsClients = NO_CLIENTS) -> tuple[TopLists, dict[str, Any]]:
    """The users' lists of the search stage (and ``topx recommend --run``), saved as the run's
    ``lists.npz``: the FM's top x; with a re-ranker (``[rerank] model``) the FM's top
    ``rerank.candidates`` re-ranked by the run's re-ranker and cut to x, recording its digest.
    Returns them and the search's report. ``run_id`` and ``clients``: for a SageMaker search."""
    from batch.serve.recommend import search_run
    from batch.serve.search import make_searcher

    wide = cfg
    if cfg.rerank.enabled:  # the FM's search yields the candidates the re-ranker cuts to x
        wide = replace(cfg, search=replace(cfg.search, top=max(cfg.rerank.candidates, cfg.search.top)))
    found = search_run(wide, run, make_searcher(wide, run_id=run_id, clients=clients))
    lists, report, extra = found.lists, found.report, rules(cfg, run)
    if cfg.rerank.enabled:
        from batch.rerank.stage import rerank_run

        lists, reranked = rerank_run(cfg, run, lists)
        report, extra = {**report, **reranked}, {**extra, **lineage.reranker(run)}
    run.save_derived("lists.npz", lists, **extra)
    return lists, report


def rules(cfg: JobConfig, run: RunDir) -> dict[str, str]:
    """The lineage argument recording the candidate rules' digest (:func:`batch.lineage.rules_digest`)
    and, when a rule depends on time, the run's reference time it was applied at."""
    from batch.data.availability import rules_reference_time

    at = rules_reference_time(cfg.search, run.read_json("report.json"))
    return {lineage.RULES_KEY: lineage.rules_digest(cfg.search),
            **({lineage.REFERENCE_KEY: at.isoformat()} if at is not None else {})}


def keyed_lists(run: RunDir, lists_rules: dict[str, str | None]) -> dict[str, Any]:
    """``similar`` / ``audiences`` arguments of ``publish_run`` from the run directory's files,
    refused (:class:`~batch.errors.StaleArtifactError`) when made from another model than the
    run's, or with other candidate rules or at another reference time (``lists_rules``:
    :func:`rules` of the users' lists) than the users' lists."""
    from batch.lists import KeyedLists

    found = {}
    for name, command in (("similar", "similar"), ("audiences", "audience")):
        path = run.file(f"{name}.npz")
        if path.exists():
            remedy = f"rerun topx {command} --run {run.path}, or delete {path}"
            found[name] = run.load_derived(path.name, KeyedLists, remedy)
            made = lineage.recorded_rules(path)
            lineage.check_rules(lists_rules.get(lineage.RULES_KEY), made[lineage.RULES_KEY], str(path), remedy)
            lineage.check_reference(lists_rules.get(lineage.REFERENCE_KEY), made[lineage.REFERENCE_KEY], str(path),
                                    remedy)
    return found


def _counts(status: np.ndarray) -> dict[str, int]:
    names = ("trained", "features_only", "cold")
    return {names[k]: int(n) for k, n in enumerate(np.bincount(status, minlength=3))}


def _short_lists(lists: TopLists, top: int) -> int:
    """Users whose list is shorter than x (fewer candidates than x after exclusions)."""
    if not len(lists):
        return 0
    _, counts = np.unique(lists.user, return_counts=True)
    return int((counts < top).sum())

