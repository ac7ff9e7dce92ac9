"""Parquet interactions and side tables, read record batch by record batch with pyarrow (the
optional ``parquet`` extra, imported only here and only when needed).

Errors name the column and give the 1-based row number as the line. Text ids are dictionary
encoded per batch, so no Python object is made per row.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from batch import storage
from batch.config import DataConfig
from batch.data import columns as cols
from batch.data.delimited import Field, first_bad
from batch.data.ids import Vocabulary
from batch.data.parts import Part, blank, collect, interaction_checks
from batch.errors import DataError, EmptyDataError, InvalidValueError, MissingDependencyError
from batch.log import log

BATCH_ROWS = 1 << 20


def _pyarrow() -> tuple[Any, Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("pyarrow", "parquet", "Reading Parquet") from None
    return pa, pc, pq


@contextlib.contextmanager
def _parquet_file(location: str) -> Iterator[Any]:
    """An open ``pq.ParquetFile``; an S3 object is downloaded to a temporary file first,
    because Parquet needs random access (the footer is at the end)."""
    _, _, pq = _pyarrow()
    with contextlib.ExitStack() as stack:
        path = location
        if storage.is_s3(location):
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="topx-"))
            path = str(Path(folder) / PurePosixPath(location).name)
            storage.download_file(location, path)
        elif not Path(path).is_file():
            raise DataError("no such file", file=location)
        try:
            pf = pq.ParquetFile(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise InvalidValueError(f"not a readable Parquet file ({exc})", file=location) from None
        with pf:
            yield pf


def read_parquet_part(location: str, cfg: DataConfig, users: Vocabulary, items: Vocabulary) -> Part:
    """A Parquet interactions file with the configured column mapping."""
    with _parquet_file(location) as pf:
        roles = cols.roles(pf.schema_arrow.names, cfg.columns, location)
        if pf.metadata.num_rows == 0:
            raise EmptyDataError("no data rows", file=location)
        fields = [Field(roles[r], "int" if r in ("user", "item") else "float") for r in roles]
        checks = interaction_checks(roles, fields, cfg.rating_min, cfg.rating_max)
        batches = pf.iter_batches(batch_size=BATCH_ROWS, columns=list(roles.values()))
        chunks = _encoded(batches, roles, checks, users, items, location)
        part = collect(location, chunks, lambda: pf.metadata.num_rows)
    log.info("read %d interactions from %s", len(part), location)
    return part


def _encoded(batches, roles, checks, users, items, location) -> Iterator[dict[str, np.ndarray]]:
    offset = 0
    for batch in batches:
        n = batch.num_rows
        values = {role: batch.column(name) for role, name in roles.items()}
        for role, array in values.items():
            _no_nulls(array, roles[role], offset, location)
        numbers = {roles[r]: _numeric(values[r], roles[r], r, location)
                   for r in ("rating", "timestamp") if r in roles}
        bad = first_bad(numbers, checks)
        if bad is not None:
            check, row = bad
            raise InvalidValueError(check.message.format(value=numbers[check.field][row].item()),
                                    file=location, line=offset + row + 1, column=check.field)
        yield {"user": _ids(values["user"], users, roles["user"], offset, location),
               "item": _ids(values["item"], items, roles["item"], offset, location),
               "rating": numbers.get(roles.get("rating"), np.full(n, np.nan)).astype(np.float32),
               "timestamp": numbers.get(roles.get("timestamp"), np.zeros(n, np.int64))}
        offset += n


def _no_nulls(array, name: str, offset: int, location: str) -> None:
    if array.null_count:
        _, pc, _ = _pyarrow()
        row = pc.index(pc.is_null(array), True).as_py()
        raise InvalidValueError("missing value (null)", file=location, line=offset + row + 1,
                                column=name)


def _ids(array, vocab: Vocabulary, name: str, offset: int, location: str) -> np.ndarray:
    """Provisional codes of an integer or text id column; a blank text id is an error."""
    pa, _, _ = _pyarrow()
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if pa.types.is_integer(array.type):
        return vocab.encode(array.to_numpy().astype(np.int64, copy=False))
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise InvalidValueError(f"ids must be integers or text, not {array.type}", file=location,
                                column=name)
    _, pc, _ = _pyarrow()
    encoded = array.dictionary_encode()
    words = encoded.dictionary.to_numpy(zero_copy_only=False).astype(str)
    indices = encoded.indices.to_numpy()
    # numpy's unicode arrays drop trailing NUL characters: "a\0" would silently become "a".
    cut = np.flatnonzero(pc.utf8_length(encoded.dictionary).to_numpy() != np.char.str_len(words))
    for bad, reason in ((np.flatnonzero(blank(words)), "empty id"),
                        (cut, "id ends in a NUL character, which cannot be told from the id without it")):
        if len(bad):
            row = int(np.flatnonzero(np.isin(indices, bad))[0])
            raise InvalidValueError(reason, file=location, line=offset + row + 1, column=name)
    return vocab.encode(words)[indices]


def _numeric(array, name: str, role: str, location: str) -> np.ndarray:
    """Ratings as float64; timestamps as int64 seconds (integer or timestamp/date columns)."""
    pa, _, _ = _pyarrow()
    kind = array.type
    if role == "timestamp" and (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        return array.to_numpy(zero_copy_only=False).astype("datetime64[s]").astype(np.int64)
    if role == "timestamp" and pa.types.is_integer(kind):
        return array.to_numpy().astype(np.int64, copy=False)
    if role == "rating" and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return array.to_numpy().astype(np.float64, copy=False)
    raise InvalidValueError(f"a {role} column cannot have type {kind}", file=location, column=name)


def read_side_columns(location: str, id_column: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ids, row numbers, {column: values}) of a Parquet side table: numeric columns as
    float64 (NaN for null), the rest as text ("" for null). Side tables are catalogue-sized, so
    the table is read whole."""
    pa, pc, _ = _pyarrow()
    with _parquet_file(location) as pf:
        cols.require(pf.schema_arrow.names, id_column, location, "id")
        table = pf.read()
    if table.num_rows == 0:
        raise EmptyDataError("no data rows", file=location)
    _no_nulls(table.column(id_column), id_column, 0, location)
    ids = table.column(id_column).to_numpy()
    if ids.dtype.kind not in "iu":
        ids = ids.astype(str)
        empty = np.flatnonzero(blank(ids))
        if len(empty):
            raise InvalidValueError("empty id", file=location, line=int(empty[0]) + 1,
                                    column=id_column)
    values = {}
    for name in table.column_names:
        if name == id_column:
            continue
        values[name] = _side_values(table.column(name))
    return ids, np.arange(1, table.num_rows + 1), values


def _side_values(column) -> np.ndarray:
    """float64 (NaN for null) for numeric and boolean columns; otherwise text ("" for null),
    list columns joined with "|" so that they become multi-hot features."""
    pa, pc, _ = _pyarrow()
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        column = pc.binary_join(pc.cast(column, pa.list_(pa.string())), "|")
    text = pc.fill_null(pc.cast(column, pa.string()), "")
    return text.to_numpy(zero_copy_only=False).astype(str)
