"""Interactions of one file, read chunk by chunk into compact columns with provisional id codes.

Every interactions reader (MovieLens rating files, CSV/TSV, Parquet) produces a :class:`Part`;
the loader remaps the codes once all files are read (:mod:`batch.data.ids`), resolves
duplicate (user, item) pairs across parts and splits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from batch.data.delimited import Check, Columns, Field, TextTable
from batch.data.ids import Vocabulary
from batch.log import log

DTYPES = {"user": np.int32, "item": np.int32, "rating": np.float32, "timestamp": np.int64}


@dataclass
class Part:
    """One file's interactions: ``user``/``item`` provisional codes (int32), ``rating``
    float32 (NaN when the file has none), ``timestamp`` int64 seconds (0 when none)."""

    location: str
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


class ColumnBuffer:
    """Growable typed columns: chunks are appended in place, so reading n rows holds the n-row
    columns plus one chunk (and, without a size hint, the spare room of geometric growth)."""

    def __init__(self, dtypes: dict[str, type]):
        self._arrays = {name: np.empty(0, dtype) for name, dtype in dtypes.items()}
        self.rows = 0

    def reserve(self, capacity: int) -> None:
        """Make room for ``capacity`` rows in all (no-op when already that big)."""
        for name, array in self._arrays.items():
            if len(array) < capacity:
                grown = np.empty(capacity, array.dtype)
                grown[: self.rows] = array[: self.rows]
                self._arrays[name] = grown

    def append(self, chunk: dict[str, np.ndarray]) -> None:
        n = len(next(iter(chunk.values())))
        capacity = len(next(iter(self._arrays.values())))
        if self.rows + n > capacity:
            self.reserve(max(self.rows + n, capacity * 3 // 2))
        for name, array in self._arrays.items():
            array[self.rows: self.rows + n] = chunk[name]
        self.rows += n

    def finish(self) -> dict[str, np.ndarray]:
        """The filled columns; spare room is released in place (no copy)."""
        for array in self._arrays.values():
            array.resize(self.rows, refcheck=False)
        return self._arrays


def interaction_checks(roles: dict[str, str], fields: Sequence[Field], rating_min: float,
                       rating_max: float) -> list[Check]:
    """Vectorised rules for an interactions file: ids not blank, rating within range,
    timestamp not negative. ``roles`` maps role → field name."""
    kinds = {f.name: f.kind for f in fields}
    checks = [Check(roles[r], blank, f"empty {r} id") for r in ("user", "item")
              if kinds[roles[r]] == "str"]
    if "rating" in roles:
        checks.append(Check(roles["rating"], lambda r: ~((r >= rating_min) & (r <= rating_max)),
                            f"rating {{value!r}} is outside {rating_min:g}..{rating_max:g}"))
    if "timestamp" in roles:
        checks.append(Check(roles["timestamp"], lambda t: t < 0, "negative timestamp {value!r}"))
    return checks


def blank(values: np.ndarray) -> np.ndarray:
    """Mask of empty or whitespace-only text. Only values that are empty or start with
    whitespace can be blank, so the costly strip runs on those few."""
    first = values.astype("U1")
    maybe = np.flatnonzero((first == "") | np.char.isspace(first))
    mask = np.zeros(len(values), bool)
    mask[maybe] = np.char.str_len(np.char.strip(values[maybe])) == 0
    return mask


def encode_chunk(columns: Columns, roles: dict[str, str], users: Vocabulary,
                 items: Vocabulary) -> dict[str, np.ndarray]:
    """A parsed chunk as Part columns: ids coded, missing rating NaN, missing timestamp 0."""
    n = len(columns[roles["user"]])
    rating = columns[roles["rating"]] if "rating" in roles else np.full(n, np.nan)
    timestamp = columns[roles["timestamp"]] if "timestamp" in roles else np.zeros(n, np.int64)
    return {"user": users.encode(columns[roles["user"]]),
            "item": items.encode(columns[roles["item"]]),
            "rating": rating.astype(np.float32),
            "timestamp": timestamp.astype(np.int64, copy=False)}


def collect(location: str, chunks: Iterable[dict[str, np.ndarray]],
            expected_rows: Callable[[], int | None] | None = None) -> Part:
    """Append encoded chunks into one :class:`Part`. ``expected_rows()``, asked after the
    first chunk, sizes the buffer once instead of growing it."""
    buffer = ColumnBuffer(DTYPES)
    for k, chunk in enumerate(chunks):
        buffer.append(chunk)
        if k == 0 and expected_rows is not None:
            buffer.reserve(expected_rows() or 0)
    return Part(location, **buffer.finish())


def read_text_part(table: TextTable, fields: Sequence[Field], roles: dict[str, str],
                   checks: Sequence[Check], users: Vocabulary, items: Vocabulary) -> Part:
    """Read a whole delimited interactions file into a :class:`Part`."""
    chunks = (encode_chunk(c, roles, users, items) for c in table.read(fields, checks))
    part = collect(table.location, chunks, lambda: _estimated_rows(table))
    log.info("read %d interactions from %s", len(part), table.location)
    return part


def _estimated_rows(table: TextTable) -> int | None:
    """Rows in the whole file, extrapolated from the bytes per row of the first chunk."""
    size = table.size
    if not size or not table.bytes_read:
        return None
    return int(size / table.bytes_read * table.rows * 1.02) + 1


def resolve_duplicates(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray,
                       n_items: int) -> np.ndarray | None:
    """Rows to keep (sorted int64 indices) so each (user, item) pair occurs once: the latest
    by timestamp, ties going to the later row. None when there are no duplicates."""
    key = user.astype(np.int64) * n_items + item
    ordered = np.sort(key)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    if not len(repeated):  # the common case costs one sort
        return None
    repeated = np.unique(repeated)
    pos = np.minimum(np.searchsorted(repeated, key), len(repeated) - 1)
    involved = np.flatnonzero(repeated[pos] == key)
    # Only rows of repeated pairs need ordering: by pair, then timestamp, then row.
    order = involved[np.lexsort((timestamp[involved], key[involved]))]
    latest = np.ones(len(order), bool)
    latest[:-1] = key[order[1:]] != key[order[:-1]]
    drop = np.zeros(len(key), bool)
    drop[order[~latest]] = True
    return np.flatnonzero(~drop)
