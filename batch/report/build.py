"""Writing the report: gather the facts, draw the sections, write one HTML file atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from batch.errors import MissingDependencyError
from batch.report import page, sections
from batch.report.facts import RunFacts
from batch.rundir import RunDir

log = logging.getLogger("topx.report")

REPORT_NAME = "report.html"
TREND_RUNS = 10  # published runs in every report's trend section


def require_plotting() -> None:
    """Raise :class:`MissingDependencyError` now if matplotlib is missing (``topx run`` checks
    before its first stage rather than after publishing)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError("matplotlib", "report", "The run report (topx run writes one)") from None


def write_report(run: RunDir, out: str | Path | None = None, *, database_url: str | None = None,
                 trend_runs: int = TREND_RUNS) -> Path:
    """Write the report of ``run`` to ``out`` (default ``RUNDIR/report.html``); its trend section
    shows the last ``trend_runs`` published runs of ``database_url`` (none when None)."""
    require_plotting()
    facts = RunFacts.load(run)
    body = [sections.overview(facts), sections.training(facts), sections.accuracy(facts), sections.beyond(facts),
            sections.long_tail(facts), sections.scores(facts), sections.churn(facts), sections.samples(facts),
            _trend(database_url, trend_runs), sections.settings(facts)]
    path = Path(out) if out is not None else run.file(REPORT_NAME)
    _write(path, page.document(f"topx run {facts.run_id}", body))
    log.info("report of run %s written to %s", facts.run_id, path)
    return path


def write_trend_report(database_url: str | None, out: str | Path, runs: int) -> Path:
    """Write a page with the trend of the last ``runs`` published runs of ``database_url``."""
    require_plotting()
    body = ["<h1>topx: the last published runs</h1>", _trend(database_url, runs)]
    path = Path(out)
    _write(path, page.document("topx runs", body))
    log.info("trend of the last %d runs written to %s", runs, path)
    return path


def _trend(database_url: str | None, n: int) -> str:
    from batch.publish import list_runs
    from batch.publish.models import CURRENT, PRUNED, SUPERSEDED

    if database_url is None:
        return sections.trend([], "No database given: no trend across runs.")
    if _missing_sqlite(database_url):
        return sections.trend([], f"No database at {make_url(database_url).database}: no trend across runs.")
    runs: list[dict[str, Any]] = list_runs(database_url, limit=n, statuses=(CURRENT, SUPERSEDED, PRUNED))
    return sections.trend(runs)


def _missing_sqlite(url: str) -> bool:
    """A SQLite URL whose file does not exist (opening it would create an empty database)."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and bool(parsed.database) and not Path(parsed.database).exists()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
