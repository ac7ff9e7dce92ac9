"""The publish gate on SQLite and PostgreSQL: empty runs and runs worse than the popularity list
or the current run are kept as rejected and never become current; --allow-regression; a
sharded run's finalize; a database from before the gate is told what to ALTER."""

from __future__ import annotations

import json

import pytest
from test_publish_support import expected_rows, id_maps, make_lists, query, run_info, status, titles_for, view_rows

from batch.config import GateConfig, load_config
from batch.errors import ConfigError, SchemaError
from batch.lists import TopLists
from batch.publish import current_run, finalize_run, load_shard, make_engine, open_collection, publish_run
from batch.publish.gate import GateRefusedError
from batch.publish.models import schema_sql
from batch.transient import exit_code


def measured(model: float, popularity: float = 0.05) -> dict:
    """Metrics as the evaluate stage stores them, NDCG@10 only."""
    return {"evaluate": {"model": {"ndcg@10": model}, "popularity": {"ndcg@10": popularity}}}


def publish(url, run_id, lists=None, *, gate=None, **metrics):
    users, items = id_maps()
    return publish_run(url, run_info(run_id, **metrics), make_lists() if lists is None else lists, users, items,
                       item_titles=titles_for(items), gate=gate)


def verdict(url: str, run_id: str) -> dict:
    [(gate,)] = query(url, "SELECT gate FROM runs WHERE id = :r", r=run_id)
    return json.loads(gate) if isinstance(gate, str) else gate


def refused(url, run_id, lists=None, **kwargs) -> str:
    """Publish a run the gate must refuse; the previous lists stay current. Returns the message."""
    current = current_run(url)
    before = view_rows(url) if current else []
    with pytest.raises(GateRefusedError) as caught:
        publish(url, run_id, lists, **kwargs)
    assert exit_code(caught.value) == 3
    assert view_rows(url) == before and (current_run(url) or {}).get("id") == (current or {}).get("id")
    assert status(url, run_id) == "rejected" and verdict(url, run_id)["passed"] is False
    assert query(url, "SELECT COUNT(*) FROM recommendations WHERE run_id = :r", r=run_id)[0][0] == 0
    return str(caught.value)


def test_an_empty_run_is_rejected_and_the_previous_lists_stay(db_url):
    publish(db_url, "r1", **measured(0.2))
    message = refused(db_url, "r2", TopLists.empty(), **measured(0.2))
    assert "holds no lists (0 rows)" in message and "--allow-regression" not in message
    gate = verdict(db_url, "r2")
    assert gate["rows"] == 0 and gate["users_without_list"] == 6
    assert query(db_url, "SELECT error FROM runs WHERE id = 'r2'")[0][0].startswith("refused by the publish gate")
    with pytest.raises(GateRefusedError):  # allow_regression never lets an empty run through
        publish(db_url, "r3", TopLists.empty(), gate=GateConfig(allow_regression=True), **measured(0.2))


def test_a_run_worse_than_the_popularity_list_is_rejected(db_url):
    message = refused(db_url, "r1", **measured(0.04, popularity=0.05))
    assert "ndcg@10 0.0400 is below the popularity list's 0.0500" in message and "--allow-regression" in message
    assert current_run(db_url) is None and view_rows(db_url) == []


def test_a_run_worse_than_the_current_one_beyond_the_tolerance_is_rejected(db_url):
    publish(db_url, "implicit", **measured(0.186, popularity=0.124))
    message = refused(db_url, "binary", **measured(0.070, popularity=0.124))
    assert "below the current run implicit's 0.1860 by more than the tolerance 0.05" in message
    gate = verdict(db_url, "binary")
    assert (gate["value"], gate["current_run"], gate["current_value"]) == (0.07, "implicit", 0.186)

    summary = publish(db_url, "close", **measured(0.180, popularity=0.124))  # within 5 %
    assert summary["gate"]["passed"] is True and current_run(db_url)["id"] == "close"
    refused(db_url, "worse", **measured(0.175), gate=GateConfig(tolerance=0.01))


def test_allow_regression_publishes_it_and_says_so_on_the_run(db_url):
    publish(db_url, "r1", **measured(0.186))
    refused(db_url, "r2", make_lists(shift=1), **measured(0.03))
    summary = publish(db_url, "r2", make_lists(shift=1), gate=GateConfig(allow_regression=True), **measured(0.03))
    assert summary["superseded"] == "r1" and status(db_url, "r2") == "current"
    gate = verdict(db_url, "r2")
    assert gate["passed"] is True and gate["allow_regression"] is True and len(gate["overridden"]) == 2
    assert current_run(db_url)["error"] is None
    assert view_rows(db_url) == expected_rows(make_lists(shift=1), *id_maps(), titles_for(id_maps()[1]))


@pytest.mark.parametrize("metrics", [
    {"train": {}},  # not evaluated
    {"evaluate": {"skipped": "no relevant held-out interactions (split none?)"}},
    {"evaluate": {"model": {"ndcg@20": 0.3}, "popularity": {"ndcg@10": 0.05}}},  # another cutoff
    measured(float("nan")),  # NaN would pass every comparison
], ids=["not-evaluated", "split-none", "other-cutoff", "nan"])
def test_a_run_without_its_metric_is_refused(db_url, metrics):
    publish(db_url, "r1", **measured(0.2))
    message = refused(db_url, "r2", **metrics)
    assert "the run has no ndcg@10" in message and "require_metric = false" in message
    assert "--allow-regression" in message


def test_runs_without_a_metric_publish_with_require_metric_false_or_allow_regression(db_url):
    summary = publish(db_url, "r1", gate=GateConfig(require_metric=False), train={})  # split none
    assert summary["gate"]["passed"] is True and summary["gate"]["skipped"][0].startswith("the run has no ndcg@10")
    assert publish(db_url, "r2", **measured(0.1))["gate"]["skipped"] == ["the current run r1 has no ndcg@10: "
                                                                         "not compared with it"]
    summary = publish(db_url, "r3", gate=GateConfig(allow_regression=True), **measured(float("nan")))
    assert summary["gate"]["passed"] is True and summary["gate"]["overridden"][0].startswith("the run has no")


def test_every_known_user_without_a_list_is_counted(db_url):
    lists = make_lists()
    summary = publish(db_url, "r1", lists.take(lists.user < 4), **measured(0.2))
    assert summary["gate"]["passed"] is True and summary["gate"]["users_without_list"] == 2


def test_a_sharded_run_the_gate_refuses_is_rejected_and_can_collect_again(db_url):
    users, items = id_maps()
    publish(db_url, "r1", **measured(0.2))
    run = run_info("s1", **measured(0.01))
    for attempt in range(2):
        open_collection(db_url, run, 1)
        load_shard(db_url, "s1", 0, make_lists(shift=2), users, items)
        if attempt == 0:
            with pytest.raises(GateRefusedError, match="below the current run r1"):
                finalize_run(db_url, run, items)
            assert status(db_url, "s1") == "rejected" and current_run(db_url)["id"] == "r1"
    summary = finalize_run(db_url, run, items, gate=GateConfig(allow_regression=True))
    assert summary["status"] == "current" and summary["gate"]["allow_regression"] is True


def test_a_database_from_before_the_gate_is_told_what_to_alter(db_url):
    dialect = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    old = (schema_sql(dialect).replace(", 'rejected')", ")")  # the runs table as it was created before
           .replace("\tgate JSONB,\n", "").replace("\tgate JSON,\n", ""))
    assert "gate" not in old and "'rejected'" not in old
    engine = make_engine(db_url)
    with engine.begin() as conn:
        for statement in old.split(";\n"):
            lines = [line for line in statement.splitlines() if not line.startswith("--")]
            if "".join(lines).strip():
                conn.exec_driver_sql("\n".join(lines))
    with pytest.raises(SchemaError, match="the runs table predates the publish gate: it has no gate column") as caught:
        publish(db_url, "r1", **measured(0.2))
    message = str(caught.value)
    assert f"ALTER TABLE runs ADD COLUMN gate {'JSONB' if dialect == 'postgresql' else 'JSON'}" in message
    if dialect == "postgresql":  # the advice works
        with engine.begin() as conn:
            for statement in message.split("run: ")[1:]:
                conn.exec_driver_sql(statement.split("; then")[0])
        publish(db_url, "r1", **measured(0.2))
        refused(db_url, "r2", TopLists.empty(), **measured(0.2))
    engine.dispose()


@pytest.mark.parametrize("settings, message", [
    ({"tolerance": 1.0}, "tolerance must be at least 0 and below 1"),
    ({"tolerance": -0.1}, "tolerance must be at least 0"),
    ({"metric": "auc"}, "publish.gate.metric must be one of"),
    ({"metric": "ndcg@0"}, "publish.gate.metric must be one of"),
    ({"metric": "ndcg@30"}, "stores metrics only at k = 1, 5, 10, 20, 50, 100"),
])
def test_gate_settings_are_checked(settings, message):
    with pytest.raises(ConfigError, match=message):
        load_config(base={"publish": {"gate": settings}}, env={})


def test_the_gate_cutoff_may_be_evaluate_k_or_the_list_length():
    assert load_config(base={"publish": {"gate": {"metric": "map@30"}}, "evaluate": {"k": 30}}, env={})
    assert load_config(base={"publish": {"gate": {"metric": "map@30"}}, "search": {"top": 30}}, env={})
    with pytest.raises(ConfigError, match="publish.gate.metric 'ndcg@30'"):
        load_config(base={"publish": {"gate": {"metric": "ndcg@30"}}, "evaluate": {"k": 10}}, env={})


def test_gate_settings_come_from_the_environment():
    cfg = load_config(env={"TOPX_PUBLISH_GATE_TOLERANCE": "0.2", "TOPX_PUBLISH_GATE_ALLOW_REGRESSION": "true",
                           "TOPX_PUBLISH_GATE_METRIC": "map@20"})
    assert cfg.publish.gate == GateConfig(metric="map@20", tolerance=0.2, allow_regression=True)


def test_a_superseded_run_made_current_again_is_judged_too_and_keeps_its_status(db_url):
    publish(db_url, "old", **measured(0.10))
    publish(db_url, "new", **measured(0.20))
    with pytest.raises(GateRefusedError, match="refused run old, which keeps its status"):
        publish(db_url, "old", **measured(0.10))  # a rollback to a worse run needs allow_regression
    assert (status(db_url, "old"), status(db_url, "new")) == ("superseded", "current")
    publish(db_url, "old", gate=GateConfig(allow_regression=True), **measured(0.10))
    assert current_run(db_url)["id"] == "old"
