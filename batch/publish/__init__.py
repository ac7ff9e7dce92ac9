"""Publish: top-x lists into the database that dashboards and email exports read.

One atomic switch per run (see :mod:`batch.publish.publisher`; a sharded run's rows arrive from
several jobs first, see :mod:`batch.publish.collect`), to the embedded SQLite file or
to PostgreSQL (binary COPY into one partition per run). The schema lives in
:mod:`batch.publish.models`; ``sql/`` holds the generated DDL and the dashboard queries.
"""

from batch.publish.collect import finalize_run, load_shard, open_collection
from batch.publish.connect import database_url, make_engine
from batch.publish.export import export_current
from batch.publish.publisher import cleanup, current_run, list_runs, mark_failed, publish_run
from batch.publish.registry import RunInfo

__all__ = ["RunInfo", "cleanup", "current_run", "database_url", "export_current", "finalize_run", "list_runs",
           "load_shard", "make_engine", "mark_failed", "open_collection", "publish_run"]
