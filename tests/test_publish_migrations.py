"""Schema migrations: a database from before migrations is refused by publish until
`topx db upgrade` adopts it, after which old and new runs read alike; a new database is
stamped with the current revision. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import inspect, text
from test_publish_support import expected_rows, id_maps, make_lists, query, run_info, titles_for, view_rows

from batch.errors import NewerSchemaError, SchemaError
from batch.lists import TopLists
from batch.publish import list_runs, make_engine, migrate, publish_run
from batch.publish.gate import GateRefusedError
from batch.publish.models import SCHEMA_REVISION, create_schema, schema_sql
from batch.publish.postgres import partition_names
from batch.transient import exit_code

FIXTURES = Path(__file__).parent / "fixtures"


def publish(url: str, run_id: str, shift: int = 0, lists: TopLists | None = None) -> dict:
    users, items = id_maps()
    return publish_run(url, run_info(run_id), make_lists(shift=shift) if lists is None else lists, users, items,
                       item_titles=titles_for(items))


def revision_of(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return migrate.revision(conn)
    finally:
        engine.dispose()


def old_database(url: str) -> None:
    """The database topx made before it used migrations (the frozen DDL of commit 01c4f24), with
    one run published as that topx published it: current, its rows and item titles."""
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    ddl = (FIXTURES / f"schema_01c4f24.{dialect}.sql").read_text()
    users, items = id_maps()
    lists, titles = make_lists(shift=50), titles_for(items)
    engine = make_engine(url)
    with engine.begin() as conn:
        for statement in ddl.split(";\n"):
            lines = [line for line in statement.splitlines() if not line.startswith("--")]
            if "".join(lines).strip():
                conn.exec_driver_sql("\n".join(lines))
        if dialect == "postgresql":
            conn.exec_driver_sql(f'CREATE TABLE "{partition_names("old")[1]}" PARTITION OF recommendations '
                                 "FOR VALUES IN ('old')")
        conn.execute(text("INSERT INTO runs (id, status, created_at, n_rows) VALUES ('old', 'current', :t, :n)"),
                     {"t": datetime(2024, 4, 1, tzinfo=UTC), "n": len(lists.user)})
        conn.execute(text("INSERT INTO items (item_id, title) VALUES (:i, :t)"),
                     [{"i": str(i), "t": t} for i, t in zip(items.ids, titles, strict=True)])
        conn.execute(text("INSERT INTO recommendations VALUES ('old', :u, :r, :i, :s, :p, :src)"),
                     [{"u": str(users.ids[u]), "r": int(r), "i": str(items.ids[i]), "s": float(s), "p": float(p),
                       "src": int(src)}
                      for u, r, i, s, p, src in zip(lists.user, lists.rank, lists.item, lists.score,
                                                    lists.probability, lists.source, strict=True)])
    engine.dispose()


def shape(url: str) -> dict:
    """Tables (columns, keys, indexes, checks) and views of a database, as the dialect reports them."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            tables = {}
            for name in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
                if name.startswith("recommendations_"):
                    continue  # PostgreSQL's partition per run
                tables[name] = (
                    [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
                    inspector.get_pk_constraint(name)["constrained_columns"],
                    sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                           for i in inspector.get_indexes(name)),
                    sorted((c["name"], c["sqltext"]) for c in inspector.get_check_constraints(name)),
                )
            views = {name: " ".join(inspector.get_view_definition(name).split())
                     for name in sorted(inspector.get_view_names())}
            return {"tables": tables, "views": views}
    finally:
        engine.dispose()


@pytest.fixture
def other_url(db_url, tmp_path):
    """A second new, empty database on the same server as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    admin = psycopg2.connect(db_url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    name = db_url.rsplit("/", 1)[1] + "_other"
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield db_url + "_other"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_upgrading_an_empty_database_builds_the_schema_publish_creates(db_url, other_url):
    engine = make_engine(db_url)
    assert migrate.upgrade(engine) == {"from": None, "to": migrate.head()}  # every migration from nothing
    engine.dispose()
    publish(other_url, "r1")
    assert shape(db_url) == shape(other_url)
    assert publish(db_url, "r1")["run_id"] == "r1"


def test_a_database_from_before_migrations_is_upgraded_then_published_to(db_url, other_url, topx):
    old_database(db_url)
    assert revision_of(db_url) is None

    with pytest.raises(SchemaError, match=r"revision none .* run `topx db upgrade`"):
        publish(db_url, "refused")
    assert query(db_url, "SELECT id FROM runs") == [("old",)]  # nothing written
    with pytest.raises(SchemaError, match=r"before topx used migrations .* run `topx db upgrade`"):
        list_runs(db_url)

    code, summary, err = topx("db", "upgrade", "--database-url", db_url)
    assert code == 0, err
    assert summary["from"] is None and summary["to"] == migrate.head() == revision_of(db_url)

    users, items = id_maps()
    assert view_rows(db_url) == expected_rows(make_lists(shift=50), users, items, titles_for(items))  # the old run
    publish(other_url, "r1")
    assert shape(db_url) == shape(other_url)  # the adopted database has exactly a new one's schema
    if not db_url.startswith("sqlite"):  # roles.sql grants on every table and view it names
        with psycopg2.connect(db_url) as conn:
            conn.cursor().execute((Path(__file__).parents[1] / "sql" / "roles.sql").read_text())
        conn.close()

    assert publish(db_url, "new")["run_id"] == "new"
    with pytest.raises(GateRefusedError) as caught:  # the gate's verdict is stored: 'rejected' is allowed now
        publish(db_url, "empty", lists=TopLists.empty())
    assert exit_code(caught.value) == 3

    runs = {r["id"]: r for r in list_runs(db_url)}
    assert {run_id: r["status"] for run_id, r in runs.items()} == {
        "old": "superseded", "new": "current", "empty": "rejected"}
    assert runs["old"]["n_rows"] == runs["new"]["n_rows"] == 24
    assert query(db_url, "SELECT COUNT(*) FROM recommendations WHERE run_id = 'old'") == [(24,)]
    assert query(db_url, "SELECT COUNT(DISTINCT run_id), COUNT(*) FROM current_recommendations") == [(1, 24)]
    assert query(db_url, "SELECT COUNT(*) FROM current_similar_items") == \
        query(db_url, "SELECT COUNT(*) FROM similar_items WHERE run_id = 'new'")


def test_a_database_at_a_newer_revision_says_to_upgrade_topx(db_url, topx):
    publish(db_url, "r1")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(NewerSchemaError, match=r"revision 9999, which this topx does not know .* Upgrade topx") \
            as caught:
        publish(db_url, "r2")
    assert exit_code(caught.value) == 2
    code, _, err = topx("db", "upgrade", "--database-url", db_url)
    assert code == 2 and "Upgrade topx" in err and "run `topx db upgrade`" not in err
    assert revision_of(db_url) == "9999" and [r["id"] for r in list_runs(db_url)] == ["r1"]


def test_schema_sql_records_the_newest_migrations_revision():
    assert migrate.head() == SCHEMA_REVISION
    assert f"INSERT INTO alembic_version (version_num) VALUES ('{SCHEMA_REVISION}');" in schema_sql()


def test_a_new_database_is_stamped_and_upgrade_is_then_a_no_op(db_url, topx):
    publish(db_url, "r1")
    assert revision_of(db_url) == migrate.head()
    code, summary, _ = topx("db", "upgrade", "--database-url", db_url)
    assert code == 0 and summary["from"] == summary["to"] == migrate.head()
    assert publish(db_url, "r2")["run_id"] == "r2"


def test_upgrade_adds_the_columns_a_database_from_before_the_publish_gate_lacks(db_url, topx):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        create_schema(conn)
        conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN gate")
    engine.dispose()
    assert topx("db", "upgrade", "--database-url", db_url)[0] == 0
    assert publish(db_url, "r1")["run_id"] == "r1"
