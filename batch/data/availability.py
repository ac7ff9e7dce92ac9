"""Availability of items at a run's reference time, from the item attributes (the item file's
columns, :attr:`~batch.data.interactions.Dataset.item_attributes`):

* ``available_from``: an ISO 8601 date or time; the item is not available before it;
* ``available_until``: an ISO 8601 date or time; the item is not available after it (a date
  alone means the end of that day, UTC);
* ``in_stock``: ``false``/``no``/``0`` (any case) mark an item out of stock; ``true``/``yes``/``1``
  in stock; an empty value says nothing.

A time without a zone is UTC. An item the file does not list, or whose columns are empty, is
available. The reference time is fixed with the run: ``search.reference_time`` when set, else
the time the run ingested its data (recorded in the data set's report as ``ingested_at``), so a
resumed or re-published run decides the same way whenever its search runs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np

from batch.config import SearchConfig
from batch.data.interactions import Dataset
from batch.errors import ConfigError, DataError

COLUMNS = ("available_from", "available_until", "in_stock")
_NO = {"false", "no", "0", "0.0", "n", "f"}  # 0.0, 1.0: a Parquet boolean column, read as numbers
_YES = {"true", "yes", "1", "1.0", "y", "t"}


def parse_time(value: str, *, end_of_day: bool = False) -> datetime:
    """An aware UTC datetime from ISO 8601 text (a date alone: its start, or with ``end_of_day``
    the last instant of it). Raises ValueError."""
    text = value.strip()
    if len(text) == 10:
        day = date.fromisoformat(text)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1, microseconds=-1) if end_of_day else start
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def reference_time(search: SearchConfig, report: dict, need: str = "search.availability") -> datetime:
    """The run's reference time: ``search.reference_time``, else when its data was ingested
    (``report``: the data set's report, :attr:`Dataset.report`, ``report.json`` in the run
    directory). Raises :class:`ConfigError` saying that ``need`` needs it when neither is known."""
    if search.reference_time is not None:
        return parse_time(search.reference_time)
    ingested = report.get("ingested_at")
    if ingested is None:
        raise ConfigError(f"{need} needs the run's reference time: this run's data set does not record when it was "
                          f"ingested (made by an older topx); set search.reference_time (ISO 8601)")
    return parse_time(str(ingested))


def rules_reference_time(search: SearchConfig, report: dict) -> datetime | None:
    """The reference time the candidate rules are applied at, when one applies them (availability,
    or a suppression file, whose ``until`` times are compared with it); None when none does or
    the run does not know its time (an ``until`` then stops the suppression file's reading)."""
    if not (search.availability or search.suppress):
        return None
    try:
        return reference_time(search, report)
    except ConfigError:
        return None


def available(search: SearchConfig, dataset: Dataset) -> tuple[np.ndarray | None, dict]:
    """Boolean per item (None when ``search.availability`` is off): is it available at the run's
    reference time; and a report (the time, and how many items each column removed). Raises
    :class:`DataError` naming the item and column for a value that is not a time or a stock
    flag, and :class:`ConfigError` when availability is on but the data has none of the columns."""
    if not search.availability:
        return None, {}
    attributes = dataset.item_attributes or {}
    if not any(name in attributes for name in COLUMNS):
        raise ConfigError(f"search.availability: the item file has none of the columns {', '.join(COLUMNS)} "
                          f"(its columns: {', '.join(sorted(attributes)) or 'none'})")
    at = reference_time(search, dataset.report)
    mask = np.ones(dataset.n_items, bool)
    report: dict = {"reference_time": at.isoformat()}
    for name in COLUMNS:
        if name not in attributes:
            continue
        off = np.zeros(dataset.n_items, bool)
        for index, value in enumerate(attributes[name].tolist()):
            if value is None or str(value).strip() == "" or value != value:
                continue
            off[index] = _unavailable(name, str(value), at, dataset.items.ids[index])
        mask &= ~off
        report[f"not_available_{name}"] = int(off.sum())
    return mask, report


def check_columns(attributes: dict[str, np.ndarray], lines: np.ndarray, location: str) -> None:
    """Raise :class:`DataError` (file, line, column) at the first value of an availability
    column of an item file that is not a time (``available_from``/``available_until``) or a
    stock flag (``in_stock``); checked at ingest, before anything is trained."""
    for name in COLUMNS:
        if name not in attributes:
            continue
        for value, line in zip(attributes[name].tolist(), lines.tolist(), strict=True):
            if value is None or value != value or str(value).strip() == "":
                continue
            try:
                _unavailable(name, str(value), datetime.now(UTC), None)
            except DataError as exc:
                raise DataError(exc.reason.removeprefix("item None: "), file=location, line=int(line),
                                column=name) from None


def _unavailable(name: str, value: str, at: datetime, item) -> bool:
    if name == "in_stock":
        flag = value.strip().lower()
        if flag not in _NO | _YES:
            raise DataError(f"item {item}: in_stock {value!r} is not true/false, yes/no or 1/0", column=name)
        return flag in _NO
    try:
        moment = parse_time(value, end_of_day=name == "available_until")
    except ValueError:
        raise DataError(f"item {item}: {name} {value!r} is not an ISO 8601 date or time", column=name) from None
    return moment > at if name == "available_from" else moment < at
