"""Schema migrations: a database from before migrations is refused by publish until
`topx db upgrade` adopts it, after which old and new runs read alike; a new database is
stamped with the current revision. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from test_publish_support import id_maps, make_lists, run_info, titles_for

from batch.errors import SchemaError
from batch.publish import list_runs, make_engine, migrate, publish_run
from batch.publish.models import SCHEMA_REVISION, create_schema, schema_sql


def publish(url: str, run_id: str, shift: int = 0) -> dict:
    users, items = id_maps()
    return publish_run(url, run_info(run_id), make_lists(shift=shift), users, items, item_titles=titles_for(items))


def revision_of(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return migrate.revision(conn)
    finally:
        engine.dispose()


def test_a_database_from_before_migrations_is_upgraded_then_published_to(db_url, monkeypatch, topx):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        create_schema(conn)  # what every topx before migrations made: the tables, no alembic_version
    engine.dispose()
    with monkeypatch.context() as before_migrations:
        before_migrations.setattr(migrate, "head", lambda: None)  # that topx checked no revision
        publish(db_url, "old", shift=50)
    assert revision_of(db_url) is None

    with pytest.raises(SchemaError, match=r"revision none .* run `topx db upgrade`"):
        publish(db_url, "new")
    assert [r["id"] for r in list_runs(db_url)] == ["old"]  # nothing written

    code, summary, err = topx("db", "upgrade", "--database-url", db_url)
    assert code == 0, err
    assert summary["from"] is None and summary["to"] == migrate.head() == revision_of(db_url)

    assert publish(db_url, "new")["run_id"] == "new"
    runs = {r["id"]: r for r in list_runs(db_url)}
    assert (runs["new"]["status"], runs["old"]["status"]) == ("current", "superseded")
    assert runs["old"]["n_rows"] == runs["new"]["n_rows"] > 0


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
