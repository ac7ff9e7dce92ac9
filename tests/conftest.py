"""Shared fixtures: a fresh PostgreSQL database per test, tiny data sets, a moto AWS."""

from __future__ import annotations

import os
import uuid

import pytest

PG_ADMIN_URL = os.environ.get("TOPX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_collection_modifyitems(items):
    """Every test that needs PostgreSQL carries the ``postgres`` marker, whichever way it gets
    the server: the ``pg_url`` fixture, or the postgres variant of ``db_url``."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pg_url" in getattr(item, "fixturenames", ()) or params.get("db_url") == "postgres":
            item.add_marker(pytest.mark.postgres)


def _pg_admin():
    import psycopg2

    try:
        conn = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        # Never skip quietly: a missing server would hide every Postgres failure.
        pytest.fail(f"PostgreSQL is unreachable at {PG_ADMIN_URL}: {exc}".strip())
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_url():
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"topx_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'topx.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """Each test using this runs once on SQLite and once on real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'topx.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def topx(capsys):
    """Run the CLI in-process; returns (exit code, summary dict or None, stderr)."""
    import json

    import batch.cli

    def run(*argv: str):
        capsys.readouterr()
        code = batch.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, (json.loads(out.strip().splitlines()[-1]) if out.strip() else None), err

    return run
