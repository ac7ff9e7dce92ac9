"""Which columns of a generic table play which role (user, item, rating, timestamp)."""

from __future__ import annotations

from collections.abc import Sequence

from batch.config import ColumnMap
from batch.errors import MalformedLineError
from batch.log import log


class MissingColumnError(MalformedLineError):
    """A required column is not in a table's header or schema; ``column`` names it."""


def roles(names: Sequence[str], columns: ColumnMap, location: str) -> dict[str, str]:
    """Role → column name for a table with columns ``names``.

    The user and item columns are required; a rating or timestamp column the mapping names but
    the table lacks is logged and left out (ratings then read as NaN: implicit data).
    """
    _require_distinct(names, location)
    found = {}
    for role in ("user", "item", "rating", "timestamp"):
        name = getattr(columns, role)
        if name is None or name == "":
            continue
        if name in names:
            found[role] = name
        elif role in ("user", "item"):
            raise MissingColumnError(
                f"no {role} column {name!r}; the columns are {', '.join(names)}",
                file=location, line=1, column=name)
        else:
            fallback = "ratings as NaN (implicit data)" if role == "rating" else "timestamps as 0"
            log.warning("%s: no %s column %r; reading %s", location, role, name, fallback)
    return found


def require(names: Sequence[str], name: str, location: str, what: str) -> None:
    """Raise :class:`MissingColumnError` unless ``name`` is one of ``names``."""
    _require_distinct(names, location)
    if name not in names:
        raise MissingColumnError(f"no {what} column {name!r}; the columns are {', '.join(names)}",
                                 file=location, line=1, column=name)


def positional(columns: ColumnMap) -> list[str]:
    """Column names of a headerless file: user, item, then rating and timestamp when mapped."""
    return [n for n in (columns.user, columns.item, columns.rating, columns.timestamp) if n]


def _require_distinct(names: Sequence[str], location: str) -> None:
    seen = set()
    for number, name in enumerate(names, 1):
        if name in seen:
            raise MalformedLineError(f"column name {name!r} appears twice in the header",
                                     file=location, line=1, column=number)
        seen.add(name)
