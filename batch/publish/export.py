"""The email-marketing export: the current run's top N items per user, with titles, as CSV, or
as JSON lines in the shape of an Amazon Personalize batch inference output (one user a line).

Rows are streamed from the database (a server-side cursor on PostgreSQL) and written as they
arrive, so memory stays flat for any number of users. The output is all or nothing, so an email
tool never picks up half an export: a file is written under a temporary name and renamed into
place only when complete; an ``s3://`` object is streamed as a multipart upload that is aborted
when the export fails (:mod:`batch.s3stream`).
This is the query of ``sql/export.sql``; a test keeps the two in agreement.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import Select, select
from sqlalchemy.engine import Engine

from batch import storage
from batch.errors import ConfigError, EmptyRunError, PublishError
from batch.publish import registry
from batch.publish.connect import engine_scope, session, shown
from batch.publish.models import current_recommendations as view
from batch.s3stream import s3_text_writer

COLUMNS = ("user_id", "rank", "item_id", "title", "score")


def export_query(top: int) -> Select:
    """Each user's ranks 1..``top`` of the current run, by user id then rank."""
    return (select(view.c.user_id, view.c.rank, view.c.item_id, view.c.title, view.c.score)
            .where(view.c.rank <= top).order_by(view.c.user_id, view.c.rank))


def export_current(database_url: str | None, out: str | os.PathLike | IO[str], *, top: int,
                   engine: Engine | None = None, batch_rows: int = 10_000, format: str = "csv") -> int:
    """Write the current run's lists, cut to ``top`` per user, as CSV with a header
    (``COLUMNS``) or as JSON lines (``format="jsonl"``) to ``out``: a path, an ``s3://`` URI or
    an open text file. Returns the rows written.
    Raises :class:`PublishError` when no run is published, :class:`EmptyRunError` (before
    writing anything) when the current run has no rows."""
    if top < 1:
        raise ConfigError(f"--top must be ≥ 1; got {top}")
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}; got {format!r}")
    with engine_scope(database_url, engine) as eng, session(eng) as conn:
        current = registry.current(conn)
        if current is None:
            raise PublishError(f"nothing to export: no run is published in {shown(eng.url)}")
        if conn.execute(select(view.c.user_id).limit(1)).first() is None:
            raise EmptyRunError(f"nothing to export: the current run {current['id']} of {shown(eng.url)} has "
                                f"no lists; no file written")
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(export_query(top))
        with _text_out(out) as stream:
            return FORMATS[format](result, stream)


def _write_csv(result, stream: IO[str]) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    written = 0
    for part in result.partitions():  # yield_per rows at a time
        # Scores to 7 significant digits: the float32 precision they were computed in.
        writer.writerows((u, r, i, t, format(s, ".7g")) for u, r, i, t, s in part)
        written += len(part)
    return written


def _write_jsonl(result, stream: IO[str]) -> int:
    """One JSON object a user, in the shape of an Amazon Personalize batch inference output:
    ``{"input": {"userId": …}, "output": {"recommendedItems": [...], "scores": [...]}, "error":
    null}``, items best first. A user's rows may straddle two fetched partitions: its line is
    written when the next user's first row (or the end) arrives. Returns the rows written."""
    user, items, scores, written = None, [], [], 0

    def flush() -> None:
        if user is not None:
            stream.write(json.dumps({"input": {"userId": user}, "output": {"recommendedItems": items,
                                                                           "scores": scores}, "error": None},
                                    ensure_ascii=False) + "\n")

    for part in result.partitions():
        for u, _, i, _, s in part:
            if u != user:
                flush()
                user, items, scores = u, [], []
            items.append(i)
            scores.append(float(format(s, ".7g")))
        written += len(part)
    flush()
    return written


# How each --format writes the streamed rows.
FORMATS = {"csv": _write_csv, "jsonl": _write_jsonl}


@contextmanager
def _text_out(out: str | os.PathLike | IO[str]) -> Iterator[IO[str]]:
    if hasattr(out, "write"):
        yield out
        return
    if storage.is_s3(out):
        bucket, key = storage.split_s3(str(out))
        if not key or key.endswith("/"):
            raise ConfigError(f"--out {out} names no object: give the key too (s3://bucket/path/lists.jsonl)")
        with s3_text_writer(storage.s3_client(), bucket, key) as stream:
            yield stream
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as stream:
            yield stream
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
