"""Which model a derived file came from, so that nothing made from another model is used.

A run directory can be reused (``topx train --out R`` over an earlier run): the new model then
sits next to vectors, lists and metrics of the old one. Every file derived from the model
therefore records the model's digest, the SHA-256 of ``model.tar.gz``: ``vectors.npz`` and
``lists.npz`` as an array ``model_sha256``, the ``train`` and ``evaluate`` sections of
``metrics.json`` as a key ``model_sha256``. Publishing refuses a file whose digest is not that
of the model beside it (:class:`StaleArtifactError`, exit status 2).

The similar items and audiences published with a run (``similar.npz``, ``audiences.npz``) also
depend on the candidate rules (allow and deny lists, attribute rules, suppression file): they,
and ``lists.npz``, record a digest of those rules (:func:`rules_digest`) as ``rules_sha256``, and
publishing refuses similar items or audiences made with other rules than the users' lists.
Rules that depend on time (availability, a suppression file's ``until``) are applied at the run's
reference time (:func:`batch.data.availability.reference_time`), which the three files record
beside the digest as ``reference_time`` (ISO 8601, when such a rule is set): files made at
another reference time are refused too (:func:`check_reference`). It is a key of its own, not
part of the digest, because the digest is a function of the settings alone (``topx refresh``
compares it with the settings it is given).

Lists re-ranked by the second stage (:mod:`batch.rerank`) record the re-ranker's digest, the
SHA-256 of ``rerank/model.tar.gz``, as ``rerank_sha256`` (and the ``evaluate`` section of
``metrics.json`` as ``rerank_sha256``); publishing refuses re-ranked lists whose re-ranker is not
the run's, lists that are not re-ranked when the run re-ranks (:func:`check_reranker`), and lists
whose evaluation, which the publish gate judges, was made with another re-ranker or none
(:func:`check_evaluated`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from batch.errors import StaleArtifactError

KEY = "model_sha256"
RULES_KEY = "rules_sha256"
REFERENCE_KEY = "reference_time"
RERANK_KEY = "rerank_sha256"
RERANK_MODEL = "rerank/model.tar.gz"
# Sections of metrics.json computed from the model or its lists.
MODEL_SECTIONS = ("train", "evaluate")

_cache: dict[tuple, str] = {}


def model_digest(model: str | Path) -> str:
    """Hex SHA-256 of a model file, read in 1 MiB blocks; cached while the file is unchanged."""
    path = Path(model)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        _cache[key] = digest.hexdigest()
    return _cache[key]


def recorded(npz: str | Path, key: str = KEY) -> str | None:
    """The model digest (or another ``key``) an ``.npz`` file records, None when it records none."""
    with np.load(npz, allow_pickle=False) as z:
        return str(z[key]) if key in z.files else None


def rules_digest(search: Any) -> str:
    """Hex SHA-256 of the candidate rules of a ``SearchConfig``: the contents of its allow, deny
    and suppress files, its attribute rules, its availability settings
    and its category cap."""
    from batch import storage

    digest = hashlib.sha256()
    for name in ("allow", "deny", "suppress"):
        location = getattr(search, name)
        content = b"" if location is None else storage.read_bytes(location)
        digest.update(f"{name}:{location is not None}:{len(content)}:".encode())
        digest.update(content)
    for name in ("include_attributes", "exclude_attributes", "availability", "reference_time",
                 "max_per_category"):
        digest.update(f"{name}={getattr(search, name)!r};".encode())
    return digest.hexdigest()


def check_rules(lists_rules: str | None, rules: str | None, what: str, remedy: str) -> None:
    """Raise :class:`StaleArtifactError` unless ``what`` (recording ``rules``) was made with the
    candidate rules ``lists_rules`` the users' lists were made with."""
    if rules is None or rules != lists_rules:
        raise StaleArtifactError(f"{what} was made with other candidate rules (allow/deny lists, attribute rules, "
                                 f"suppression file) than the users' lists, or does not say which: {remedy}")


def recorded_rules(npz: str | Path) -> dict[str, str | None]:
    """The candidate rules' lineage an ``.npz`` file records: its rules digest and reference time
    (None for what it does not record)."""
    return {key: recorded(npz, key) for key in (RULES_KEY, REFERENCE_KEY)}


def check_reference(lists_time: str | None, time: str | None, what: str, remedy: str) -> None:
    """Raise :class:`StaleArtifactError` unless ``what`` (recording reference time ``time``) had
    its time-dependent rules applied at the users' lists' reference time ``lists_time``."""
    if time != lists_time:
        raise StaleArtifactError(f"{what} applied availability and suppression at another reference time "
                                 f"({time or 'none recorded'}) than the users' lists ({lists_time or 'none recorded'})"
                                 f": {remedy}")


def check(model: str | Path, digest: str | None, what: str, remedy: str) -> None:
    """Raise :class:`StaleArtifactError` unless ``digest`` is the digest of ``model``."""
    if digest is None:
        raise StaleArtifactError(f"{what} does not say which model it was made from (made by an older topx, or "
                                 f"not by topx): {remedy}")
    current = model_digest(model)
    if digest != current:
        raise StaleArtifactError(f"{what} was made from another model (sha256 {digest[:12]}…) than {model} "
                                 f"(sha256 {current[:12]}…): {remedy}")


def stamped(model: str | Path, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the model's digest added."""
    return {**values, KEY: model_digest(model)}


def check_metrics(model: str | Path, metrics: dict[str, Any], where: str, remedy: str) -> None:
    """Every model section of a metrics document must come from ``model``."""
    for section in MODEL_SECTIONS:
        if section in metrics:
            check(model, (metrics[section] or {}).get(KEY), f"section {section!r} of {where}", remedy)


def reranker(run: Any) -> dict[str, str]:
    """The lineage argument recording the digest of the run's re-ranker (``run``: a RunDir)."""
    return {RERANK_KEY: model_digest(run.file(RERANK_MODEL))}


def check_reranker(run: Any, enabled: bool, remedy: str) -> None:
    """Raise :class:`StaleArtifactError` unless the run's ``lists.npz`` is re-ranked by the run's
    re-ranker when ``enabled``, and not re-ranked when not."""
    lists = run.file("lists.npz")
    digest = recorded(lists, RERANK_KEY)
    if not enabled:
        if digest is not None:
            raise StaleArtifactError(f"{lists} was re-ranked but the run's settings re-rank nothing: {remedy}")
        return
    if digest is None:
        raise StaleArtifactError(f"{lists} is not re-ranked but the run's settings re-rank (rerank.model): {remedy}")
    check(run.file(RERANK_MODEL), digest, str(lists), remedy)


def check_evaluated(run: Any, remedy: str) -> None:
    """Raise :class:`StaleArtifactError` unless the evaluation in the run's ``metrics.json`` (the
    figures the publish gate judges: ``reranked`` when present, else ``model``) was made with
    the re-ranker that re-ranked ``lists.npz``, or without one when the lists are not re-ranked."""
    lists = run.file("lists.npz")
    made = recorded(lists, RERANK_KEY)
    evaluated = run.read_json("metrics.json").get("evaluate")
    if not evaluated:
        return
    judged = evaluated.get(RERANK_KEY) if evaluated.get("reranked") else None
    if judged == made:
        return
    if made is None:
        raise StaleArtifactError(f"{lists} is not re-ranked but the evaluation in {run.file('metrics.json')} judges "
                                 f"re-ranked lists (evaluate.reranked): {remedy}")
    if judged is None:
        raise StaleArtifactError(f"{lists} is re-ranked but the evaluation in {run.file('metrics.json')} judges the "
                                 f"FM's lists (no re-ranker): {remedy}")
    raise StaleArtifactError(f"{lists} was re-ranked by another re-ranker (sha256 {made[:12]}…) than the evaluation in "
                             f"{run.file('metrics.json')} (sha256 {judged[:12]}…): {remedy}")
