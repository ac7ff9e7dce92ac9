"""sql/: schema.sql is the models' DDL and builds the same database; the dashboard and export
queries run on both databases and give the known answers; roles.sql grants what it says."""

from __future__ import annotations

import csv
import re
import uuid
from collections import Counter
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors
from test_publish_support import EVALUATED, id_maps, make_lists, query, run_info, titles_for

from batch.publish import export_current, make_engine, publish_run
from batch.publish.models import create_schema, schema_sql
from batch.publish.postgres import partition_names

SQL = Path(__file__).resolve().parents[1] / "sql"

# Everything PostgreSQL knows about a schema's tables, columns, constraints, indexes, views.
CATALOG = {
    "columns": "SELECT table_name, column_name, data_type, is_nullable, collation_name, column_default "
               "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "partitioning": "SELECT partrelid::regclass::text, pg_get_partkeydef(partrelid) FROM pg_partitioned_table",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'",
    "kinds": "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1",
}


def normalised(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def catalog(url: str) -> dict[str, list]:
    return {name: query(url, sql) for name, sql in CATALOG.items()}


def test_schema_sql_is_the_models_ddl():
    """Regenerate with `topx schema --out sql/schema.sql` when this fails."""
    assert normalised((SQL / "schema.sql").read_text()) == normalised(schema_sql())


def test_schema_sql_builds_the_database_the_models_build(pg_url):
    other = f"{pg_url}_models"
    admin = psycopg2.connect(pg_url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{other.rsplit("/", 1)[1]}"')
    try:
        with psycopg2.connect(pg_url) as conn:
            conn.cursor().execute((SQL / "schema.sql").read_text())
        engine = make_engine(other)
        with engine.begin() as conn:
            create_schema(conn)
        engine.dispose()
        from_file, from_models = catalog(pg_url), catalog(other)
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{other.rsplit("/", 1)[1]}" WITH (FORCE)')
        admin.close()
    assert from_file == from_models
    assert {name for name, _ in from_file["kinds"]} >= {"runs", "items", "recommendations",
                                                        "current_recommendations", "uq_runs_one_current",
                                                        "brin_recommendations_user"}
    assert from_file["partitioning"] == [("recommendations", "LIST (run_id)")]


def published(url: str) -> tuple:
    """Two runs; the current one is r2 (users 7..12, items 100..127, user 9 on the fallback)."""
    users, items = id_maps()
    publish_run(url, run_info("r1"), make_lists(shift=4), users, items, item_titles=titles_for(items))
    lists = make_lists(fallback_users=(2,))
    publish_run(url, run_info("r2", ndcg=0.5, **EVALUATED), lists, users, items, item_titles=titles_for(items))
    return lists, users, items


def run_sql(url: str, name: str, **params) -> list[tuple]:
    return query(url, (SQL / name).read_text(), **params)


def test_dashboard_user_list(db_url):
    published(db_url)
    rows = run_sql(db_url, "dashboard_user_list.sql", user_id="9")
    assert [(r, i, t, s, run) for r, i, t, _, _, s, run in rows] == [
        (1, "106", "Title of 106, \"quoted\"", 1, "r2"), (2, "109", "Title of 109, \"quoted\"", 1, "r2"),
        (3, "112", "Title of 112, \"quoted\"", 1, "r2"), (4, "115", "Title of 115, \"quoted\"", 1, "r2")]
    assert rows[0][3] == pytest.approx(9.02, abs=1e-5)
    assert run_sql(db_url, "dashboard_user_list.sql", user_id="nobody") == []


def test_a_user_lookup_reads_only_the_current_partition_through_its_brin_index(pg_url):
    users, items = id_maps(3000, 500)
    for run_id in ("r1", "r2"):
        publish_run(pg_url, run_info(run_id), make_lists(3000, 10, 500), users, items)
    old, current = partition_names("r1")[1], partition_names("r2")[1]

    plan = "\n".join(line for (line,) in query(
        pg_url, "EXPLAIN (ANALYZE, COSTS OFF) " + (SQL / "dashboard_user_list.sql").read_text(), user_id="1234"))

    assert re.search(rf"Bitmap Index Scan on {current}_user \(actual time=\S+ rows=\d+ loops=1\)", plan), plan
    assert re.search(rf"Bitmap Heap Scan on {old} \S+ \(never executed\)", plan), plan


def test_dashboard_item_frequency(db_url):
    lists, _, items = published(db_url)
    rows = run_sql(db_url, "dashboard_item_frequency.sql")
    counts = Counter(str(items.ids[i]) for i in lists.item)
    assert {item: n for item, _, n, *_ in rows} == counts
    top = rows[0]  # items 3, 4, 5 (ids 109, 112, 115) are in 4 lists each; ties by item id
    assert top[:3] == ("109", "Title of 109, \"quoted\"", 4) and float(top[3]) == pytest.approx(4 / 6)
    assert (top[4], top[5], float(top[6])) == (4, 1, 2.5)


def test_dashboard_runs(db_url):
    published(db_url)
    rows = {r[0]: r for r in run_sql(db_url, "dashboard_runs.sql")}
    run = rows["r2"]
    assert run[1] == "current" and (run[5], run[6], run[7]) == (6, 10, 9)
    assert float(run[8]) == pytest.approx(0.9) and float(run[10]) == pytest.approx(1 / 6)
    assert "0.5" in str(run[12]) and rows["r1"][1] == "superseded"
    assert run[15:] == (None,) * 15  # a run without figures, not a refresh


def test_dashboard_runs_shows_the_figures_of_runs_metrics(db_url):
    users, items = id_maps()
    figures = {"k": 10, "x": 100, "ndcg_at_k": 0.25, "precision_at_k": 0.125, "popularity_ndcg_at_k": 0.125,
               "catalogue_coverage_at_k": 0.5, "gini_at_x": 0.75, "novelty_at_x": 2.5, "ild_at_x": 0.875,
               "top1pct_share_at_x": 0.0625, "jaccard_at_k": 0.5, "rbo": 0.625, "changed_share": 1.0}
    publish_run(db_url, run_info("r1", figures=figures, **EVALUATED), make_lists(), users, items)
    (row,) = run_sql(db_url, "dashboard_runs.sql")
    assert [float(v) for v in row[15:28]] == list(figures.values())
    assert row[28:] == (None, None)  # not a refresh run (tests/test_refresh.py checks one)


def test_export_sql_is_what_topx_export_writes(db_url, tmp_path):
    published(db_url)
    export_current(db_url, tmp_path / "out.csv", top=2)
    with open(tmp_path / "out.csv", newline="") as stream:
        written = list(csv.reader(stream))[1:]
    rows = run_sql(db_url, "export.sql", top=2)
    assert written == [[u, str(r), i, t or "", format(s, ".7g")] for u, r, i, t, s in rows]
    assert len(rows) == 12


def test_roles_writer_publishes_and_dashboard_only_reads(pg_url):
    publish_run(pg_url, run_info("r1"), make_lists(), *id_maps())  # a partition owned by postgres
    with psycopg2.connect(pg_url) as conn:
        conn.cursor().execute((SQL / "roles.sql").read_text())
    suffix = uuid.uuid4().hex[:8]
    writer, dashboard = f"topx_test_writer_{suffix}", f"topx_test_dash_{suffix}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE ROLE {writer} LOGIN IN ROLE topx_writer; "
                           f"CREATE ROLE {dashboard} LOGIN IN ROLE topx_dashboard")
    try:
        as_writer = pg_url.replace("//postgres@", f"//{writer}@")
        summary = publish_run(as_writer, run_info("r2"), make_lists(shift=1), *id_maps(), keep_runs=1,
                              item_titles=titles_for(id_maps()[1]))
        assert summary["pruned"] == ["r1"]  # dropping a partition made before the roles existed
        owners = query(pg_url, "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename LIKE 'recommendations%'")
        assert owners == [("topx_writer",)]  # not the login: a later login of the role can drop them
        _check_dashboard(pg_url.replace("//postgres@", f"//{dashboard}@"))
    finally:
        admin.cursor().execute(f"DROP ROLE IF EXISTS {writer}; DROP ROLE IF EXISTS {dashboard}")
        admin.close()


def _check_dashboard(url: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*), MIN(run_id) FROM current_recommendations")
        assert cur.fetchone() == (24, "r2")
        cur.execute("SELECT COUNT(*) FROM runs")
        assert cur.fetchone() == (2,)
        for statement in ("SELECT COUNT(*) FROM recommendations", "DELETE FROM runs",
                          "INSERT INTO items VALUES ('x', 'y')", "UPDATE runs SET status = 'failed'",
                          "DROP VIEW current_recommendations", "CREATE TABLE sneaky (x int)"):
            with pytest.raises(errors.InsufficientPrivilege):
                cur.execute(statement)
    finally:
        conn.close()


def test_the_dashboard_role_cannot_block_publishing(pg_url):
    """A read-only login can take any advisory lock (they need no rights), and a publisher that
    relied on one was blocked; the publisher lock is a table lock only the writer may take."""
    import hashlib

    publish_run(pg_url, run_info("r1"), make_lists(), *id_maps())
    with psycopg2.connect(pg_url) as conn:
        conn.cursor().execute((SQL / "roles.sql").read_text())
    suffix = uuid.uuid4().hex[:8]
    writer, dashboard = f"topx_test_writer_{suffix}", f"topx_test_dash_{suffix}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE ROLE {writer} LOGIN IN ROLE topx_writer; "
                           f"CREATE ROLE {dashboard} LOGIN IN ROLE topx_dashboard")
    reader = psycopg2.connect(pg_url.replace("//postgres@", f"//{dashboard}@"))
    try:
        cur = reader.cursor()
        for statement in ("LOCK TABLE publish_lock IN EXCLUSIVE MODE", "LOCK TABLE publish_lock IN ACCESS SHARE MODE",
                          "SELECT * FROM publish_lock FOR UPDATE", "LOCK TABLE runs IN EXCLUSIVE MODE"):
            with pytest.raises(errors.InsufficientPrivilege):
                cur.execute(statement)
            reader.rollback()
        old_key = int.from_bytes(hashlib.sha1(b"topx.publish").digest()[:8], "big", signed=True)
        cur.execute("SELECT pg_advisory_lock(%s)", (old_key,))  # what blocked every publisher before
        cur.execute("SELECT COUNT(*) FROM current_recommendations")  # and a transaction left open
        as_writer = pg_url.replace("//postgres@", f"//{writer}@")
        summary = publish_run(as_writer, run_info("r2"), make_lists(shift=1), *id_maps())
        assert summary["superseded"] == "r1"
    finally:
        reader.close()
        admin.cursor().execute(f"DROP ROLE IF EXISTS {writer}; DROP ROLE IF EXISTS {dashboard}")
        admin.close()
