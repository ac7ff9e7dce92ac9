"""Every sink runs :class:`contracts.SinkContract`: SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from contracts import SinkContract


class TestSqliteSink(SinkContract):
    @pytest.fixture(autouse=True)
    def _database(self, tmp_path):
        self.url = f"sqlite:///{tmp_path / 'topx.db'}"

    def make_url(self) -> str:
        return self.url


class TestPostgresSink(SinkContract):
    @pytest.fixture(autouse=True)
    def _database(self, pg_url):
        self.url = pg_url

    def make_url(self) -> str:
        return self.url
