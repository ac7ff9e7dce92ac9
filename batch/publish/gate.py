"""The publish gate: what a run must pass before it replaces the lists dashboards and email
campaigns read without looking.

A run is refused when

* it holds no lists at all (never overridable);
* its ``metric`` (offline, on the held-out split: ``metrics.json`` → ``evaluate.model``, or
  ``evaluate.reranked`` for a run whose lists a re-ranker made) is below the popularity list's
  on the same split;
* its ``metric`` is below the current run's by more than ``tolerance`` (a share of the current
  run's value);
* it has no finite value of ``metric`` (not evaluated, evaluated without held-out data: split
  ``none``), unless ``require_metric`` is false.

The checks on the metric give way to ``allow_regression`` (``--allow-regression``). A missing
value of the popularity list or of the current run (a current run from before the metric was
stored) skips that comparison, saying so; a value that is not finite (NaN) counts as missing.
Users the model knows but the run has no list for are counted, not refused: an allow list or a
user who has seen every candidate leaves a user without one.

The verdict is stored with the run (``runs.gate``) whether it passed or not; a refused run is
kept as ``rejected`` and the previous run stays current (:class:`GateRefusedError`, exit 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from batch.config import GateConfig
from batch.errors import REFUSED, PublishError
from batch.log import log


class GateRefusedError(PublishError):
    """The publish gate refused the run: it is kept as ``rejected``, the previous run stays
    current. Retrying the same run cannot help, so AWS Batch does not retry this exit status."""

    exit_code = REFUSED


@dataclass(frozen=True)
class Candidate:
    """What the gate looks at: the run's id and stored metrics (``RunInfo.metrics``), its row
    and user counts, and how many users its model knows (None: unknown)."""

    run_id: str
    metrics: dict[str, Any]
    rows: int
    users: int
    known_users: int | None


def judge(gate: GateConfig, run: Candidate, current: dict[str, Any] | None) -> dict[str, Any]:
    """The verdict on ``run`` against the ``current`` run's ``runs`` row (None: nothing is
    published): a JSON-able record with ``passed`` and every figure it compared; ``refused``
    lists why it did not pass, ``overridden`` what ``allow_regression`` let through."""
    value = _metric(run.metrics, _lists(run.metrics), gate.metric)
    baseline = _metric(run.metrics, "popularity", gate.metric)
    other = current if current is not None and current.get("id") != run.run_id else None
    current_value = _metric((other or {}).get("metrics") or {}, _lists((other or {}).get("metrics") or {}),
                            gate.metric)
    record: dict[str, Any] = {
        "metric": gate.metric, "value": value, "popularity": baseline,
        "current_run": other and other["id"], "current_value": current_value, "tolerance": gate.tolerance,
        "allow_regression": gate.allow_regression, "rows": run.rows, "users": run.users,
        "users_without_list": None if run.known_users is None else max(run.known_users - run.users, 0),
        "skipped": [], "refused": [], "overridden": []}
    if run.rows == 0:
        record["refused"].append("the run holds no lists (0 rows)")
    _compare(record, gate, value, baseline, current_value)
    record["passed"] = not record["refused"]
    if record["users_without_list"]:
        log.warning("run %s has no list for %d of the %d users its model knows", run.run_id,
                    record["users_without_list"], run.known_users)
    for reason in record["overridden"]:
        log.warning("run %s: %s; published anyway (allow_regression)", run.run_id, reason)
    return record


def _compare(record: dict[str, Any], gate: GateConfig, value, baseline, current_value) -> None:
    """The metric checks, added to ``record``'s ``refused``, ``overridden`` or ``skipped``."""
    name = gate.metric
    failures = []
    if value is None:
        missing = (f"the run has no {name} (not evaluated, or evaluated without held-out data; a run with "
                   f"split none needs publish.gate.require_metric = false or --allow-regression)")
        if gate.require_metric and not gate.allow_regression:
            record["refused"].append(missing)
        else:
            record["overridden" if gate.require_metric else "skipped"].append(f"{missing}: not compared")
        return
    if baseline is None:
        record["skipped"].append(f"no {name} of the popularity list: not compared with it")
    elif value < baseline:
        failures.append(f"{name} {value:.4f} is below the popularity list's {baseline:.4f}")
    if record["current_run"] is not None and current_value is None:
        record["skipped"].append(f"the current run {record['current_run']} has no {name}: not compared with it")
    elif current_value is not None and value < current_value * (1 - gate.tolerance):
        failures.append(f"{name} {value:.4f} is below the current run {record['current_run']}'s "
                        f"{current_value:.4f} by more than the tolerance {gate.tolerance:g} "
                        f"(at least {current_value * (1 - gate.tolerance):.4f})")
    record["overridden" if gate.allow_regression else "refused"].extend(failures)


def _lists(metrics: dict[str, Any]) -> str:
    """Which evaluated lists a run published: ``reranked`` for a run with a re-ranker, else ``model``."""
    return "reranked" if (metrics.get("evaluate") or {}).get("reranked") else "model"


def _metric(metrics: dict[str, Any], who: str, name: str) -> float | None:
    """The value stored for ``who`` (``model``, ``popularity``), None when missing or not finite."""
    value = ((metrics.get("evaluate") or {}).get(who) or {}).get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def refusal(run_id: str, record: dict[str, Any], *, rejected: bool = True) -> GateRefusedError:
    """The error for a refused run (``rejected``: recorded so; False for a published run that was
    to be made current again), saying why and how to publish it anyway."""
    metric_only = all("below" in reason or "the run has no" in reason for reason in record["refused"])
    hint = " (to publish it anyway: --allow-regression, or publish.gate.allow_regression)" if metric_only else ""
    kept = "which is kept as rejected" if rejected else "which keeps its status"
    return GateRefusedError(f"the publish gate refused run {run_id}, {kept}; the previous run stays current: "
                            f"{'; '.join(record['refused'])}{hint}")


def reason(record: dict[str, Any]) -> str:
    """The one-line reason stored in ``runs.error`` of a rejected run."""
    return "refused by the publish gate: " + "; ".join(record["refused"])
