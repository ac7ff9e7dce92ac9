"""A publisher killed for real (SIGKILL, as the OOM killer or a spot reclaim would) in the middle
of loading a run, on SQLite and on PostgreSQL.

The previous run must stay current with every row; nothing of the killed run may be visible;
the run is found ``loading`` afterwards and the next publish (or ``topx cleanup``) marks it
failed; publishing it again gives exactly its rows.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_publish_support import (
    expected_rows,
    id_maps,
    make_lists,
    query,
    run_info,
    status,
    stored_rows,
    titles_for,
    view_rows,
)

from batch.publish import cleanup, current_run, publish_run
from batch.publish.postgres import partition_names
from batch.publish.registry import STALE_REASON

ROOT = Path(__file__).resolve().parents[1]

# Publishes run "r2" (60 users × 4 rows, 8 rows per chunk) and SIGKILLs itself when the loader
# asks for the 4th chunk: the run is registered, a COPY or INSERT transaction is open and
# 24 rows are in it.
CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import pytest
    from test_publish_support import hook_chunks, id_maps, make_lists, run_info, titles_for
    from batch.publish import publish_run

    hook_chunks(pytest.MonkeyPatch(), 3, lambda: os.kill(os.getpid(), signal.SIGKILL))
    users, items = id_maps(60, 10)
    publish_run({url!r}, run_info("r2"), make_lists(60, shift=9), users, items,
                item_titles=titles_for(items), chunk_rows=8)
    print("the load finished: the crash never happened")
""")


def publish(url: str, run_id: str, shift: float = 0.0) -> dict:
    users, items = id_maps(60, 10)
    return publish_run(url, run_info(run_id), make_lists(60, shift=shift), users, items,
                       item_titles=titles_for(items))


@pytest.mark.parametrize("noticed_by", ["next publish", "cleanup"])
def test_a_killed_publisher_leaves_the_previous_run_current_and_complete(db_url, noticed_by):
    publish(db_url, "r1")
    before = view_rows(db_url)
    assert len(before) == 240

    child = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(ROOT / "tests"), url=db_url)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert view_rows(db_url) == before and current_run(db_url)["id"] == "r1"
    assert status(db_url, "r2") == "loading"  # registered, then its publisher died
    assert stored_rows(db_url, "r2") == 0  # the open load transaction died with it
    if noticed_by == "cleanup":
        assert cleanup(db_url)["recovered"] == ["r2"]
        assert status(db_url, "r2") == "failed"
        assert query(db_url, "SELECT error FROM runs WHERE id = 'r2'")[0][0] == STALE_REASON

    summary = publish(db_url, "r2", shift=9)

    assert summary["recovered"] == ([] if noticed_by == "cleanup" else ["r2"])
    assert summary["superseded"] == "r1" and summary["rows"] == 240
    assert stored_rows(db_url, "r2") == 240 and stored_rows(db_url, "r1") == 240
    users, items = id_maps(60, 10)
    assert view_rows(db_url) == expected_rows(make_lists(60, shift=9), users, items, titles_for(items))
    assert status(db_url, "r2") == "current"


def test_no_partition_or_table_is_left_behind_on_postgres(pg_url):
    """A killed COPY leaves no half-loaded table: it was created in the same transaction."""
    publish(pg_url, "r1")
    subprocess.run([sys.executable, "-c", CHILD.format(tests=str(ROOT / "tests"), url=pg_url)],
                   cwd=ROOT, capture_output=True, timeout=120)
    tables = query(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    expected = ["alembic_version", "audiences", "item_attributes", "items", "publish_lock", "recommendations",
                partition_names("r1")[1], "runs", "similar_items"]
    assert [name for (name,) in tables] == expected
