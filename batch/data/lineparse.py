"""The two parsers behind :mod:`batch.data.delimited`: numpy's C parser for whole chunks, and a
careful line-by-line parser that knows every line number and explains the first bad field.

Both return ``{field.name: 1-D array}`` with the same dtypes (int → int64, float → float64,
str → unicode; skipped fields are absent) and both skip blank lines, so either may serve a
chunk. Where they differ, the fast parser is the stricter (whitespace-only lines, some quoting),
so the careful pass both explains real errors and rescues chunks numpy merely refuses; the one
known leniency of numpy's is CSV text after a closing quote (``"a"b`` reads as ``ab``).
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from batch.errors import InvalidValueError, MalformedLineError

# Bytes that never occur in text files: their presence means binary data (or a compressed file).
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_BYTES = bytes([*range(0, 9), 11, 12, *range(14, 32), 127])
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)",
                    re.IGNORECASE)
# numpy's parser takes a one-character delimiter; "::" (MovieLens 1M) becomes this one.
_UNIT_SEP = "\x1f"
_FIRST_WIDTH = 32
_INT64 = (-(2**63), 2**63 - 1)
_NUMPY_TYPE = {"int": np.int64, "float": np.float64, "str": str}


def check_binary(data: bytes, first_line: int, location: str, delimiter: str) -> None:
    """Raise :class:`InvalidValueError` at the first control byte (binary data, or a compressed
    file read as text). ``bytes.translate`` scans at C speed; the regex runs only on a hit."""
    if len(data.translate(None, _CONTROL_BYTES)) == len(data):
        return
    offset = _CONTROL.search(data).start()
    line, column = _position(data, offset, first_line, delimiter)
    raise InvalidValueError(f"binary data (byte 0x{data[offset]:02x}); is this a text file?",
                            file=location, line=line, column=column)


def decode(data: bytes, first_line: int, encoding: str, location: str, delimiter: str) -> str:
    """Text of a block; invalid UTF-8 raises :class:`InvalidValueError` at the line and field
    (counted by delimiters) where it occurs."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line, column = _position(data, exc.start, first_line, delimiter)
        raise InvalidValueError(f"not valid {encoding} text (byte 0x{data[exc.start]:02x})",
                                file=location, line=line, column=column) from None


def _position(data: bytes, offset: int, first_line: int, delimiter: str) -> tuple[int, int]:
    """(1-based line, 1-based field number) of a byte offset in a block."""
    start = data.rfind(b"\n", 0, offset) + 1
    field = data.count(delimiter.encode("latin-1"), start, offset) + 1
    return first_line + data.count(b"\n", 0, offset), field


def split(line: str, delimiter: str, quotechar: str | None, location: str,
          number: int) -> list[str]:
    """Fields of one line; with a quote character, CSV quoting rules apply."""
    if quotechar is None:
        return line.split(delimiter)
    try:
        return next(csv.reader([line], delimiter=delimiter, quotechar=quotechar, strict=True))
    except csv.Error as exc:
        raise MalformedLineError(f"bad quoting: {exc}", file=location, line=number) from None


def _dtype(field, width: int) -> str:
    return {"int": "i8", "float": "f8", "str": f"U{width}", "skip": "U1"}[field.kind]


def _loadtxt(data: bytes, dtype, delimiter: str, quotechar: str | None, ndmin: int,
             encoding: str):
    if len(delimiter) > 1:
        data, delimiter = data.replace(delimiter.encode(encoding), _UNIT_SEP.encode()), _UNIT_SEP
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input contained no data" for a blank block
        # A binary stream is the fastest input numpy accepts; it decodes line by line in C.
        return np.loadtxt(io.BytesIO(data), dtype=dtype, delimiter=delimiter, comments=None,
                          quotechar=quotechar, ndmin=ndmin, encoding=encoding)


def loadtxt_2d(data: bytes, fields: Sequence, delimiter: str, quotechar: str | None,
               encoding: str):
    """All-integer fast path (the MovieLens rating files): one int64 matrix, split into
    columns. None when the block does not parse this way."""
    try:
        matrix = _loadtxt(data, np.int64, delimiter, quotechar, 2, encoding)
    except ValueError:  # includes UnicodeDecodeError
        return None
    if matrix.shape[1] != len(fields):
        return None
    return {f.name: matrix[:, k].astype(np.float64 if f.kind == "float" else np.int64)
            for k, f in enumerate(fields) if f.kind != "skip"}


def loadtxt_records(data: bytes, fields: Sequence, delimiter: str, quotechar: str | None,
                    encoding: str):
    """Typed-record fast path. Text fields are read at a fixed width, widened and re-read when
    a value fills it (it may have been cut), then narrowed to the longest value (sorting and
    memory scale with the width). None when the block does not parse."""
    width = _FIRST_WIDTH
    while True:
        dtype = [(f"f{k}", _dtype(f, width)) for k, f in enumerate(fields)]
        try:
            records = _loadtxt(data, dtype, delimiter, quotechar, 1, encoding)
        except ValueError:
            return None
        longest = {k: int(np.char.str_len(records[f"f{k}"]).max(initial=0))
                   for k, f in enumerate(fields) if f.kind == "str"}
        if all(n < width for n in longest.values()):
            break
        width *= 4
    return {f.name: records[f"f{k}"].astype(f"U{max(longest[k], 1)}") if f.kind == "str"
            else np.ascontiguousarray(records[f"f{k}"])
            for k, f in enumerate(fields) if f.kind != "skip"}


def parse_lines(text: str, first_line: int, fields: Sequence, delimiter: str,
                quotechar: str | None, location: str) -> tuple[dict, np.ndarray]:
    """The careful pass: returns the columns and the 1-based line of every row (int64), or
    raises :class:`MalformedLineError` / :class:`InvalidValueError` at the first bad field."""
    values: list[list] = [[] for _ in fields]
    numbers: list[int] = []
    for offset, line in records(text, quotechar):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        number = first_line + offset
        parts = split(line, delimiter, quotechar, location, number)
        if len(parts) != len(fields):
            raise MalformedLineError(f"expected {len(fields)} fields, found {len(parts)}",
                                     file=location, line=number)
        for field, column, raw in zip(fields, values, parts, strict=True):
            column.append(convert(field, raw, location, number))
        numbers.append(number)
    columns = {f.name: np.array(col, dtype=_NUMPY_TYPE[f.kind])
               for f, col in zip(fields, values, strict=True) if f.kind != "skip"}
    return columns, np.array(numbers, dtype=np.int64)


def records(text: str, quotechar: str | None) -> Iterator[tuple[int, str]]:
    """``(offset of its first line, text)`` of each record: a line, or with CSV quoting several
    lines joined where a quoted field holds a line break (an odd count of quotes so far)."""
    pending, start = None, 0
    for offset, line in enumerate(text.split("\n")):
        if pending is None:
            pending, start = line, offset
        else:
            pending += "\n" + line
        if quotechar is None or pending.count(quotechar) % 2 == 0:
            yield start, pending
            pending = None
    if pending is not None:  # an unterminated quote: split() reports it at its first line
        yield start, pending


def record_ends(raw: np.ndarray, quotechar: str | None) -> np.ndarray:
    """Positions of the line feeds of a block (uint8 array) that end a record: all of them, or
    with CSV quoting those outside quoted fields (an even count of quotes before them)."""
    ends = np.flatnonzero(raw == 10)
    if quotechar is None or not len(ends):
        return ends
    quotes = np.flatnonzero(raw == ord(quotechar))
    if not len(quotes):
        return ends
    return ends[np.searchsorted(quotes, ends) % 2 == 0]


def convert(field, raw: str, location: str, line: int):
    """One field's value, with the reason when it is not of the field's kind."""
    if field.kind in ("str", "skip"):
        return raw
    text = raw.strip()
    where = {"file": location, "line": line, "column": field.name}
    if not text:
        raise InvalidValueError(f"empty {field.name}", **where)
    if field.kind == "int":
        if not _INT.fullmatch(text) or not _INT64[0] <= int(text) <= _INT64[1]:
            raise InvalidValueError(f"{field.name} is not a 64-bit integer: {raw!r}", **where)
        return int(text)
    if not _FLOAT.fullmatch(text):
        raise InvalidValueError(f"{field.name} is not a number: {raw!r}", **where)
    return float(text)


def line_numbers(data: bytes, first_line: int, rows: int, quotechar: str | None = None) -> np.ndarray | None:
    """1-based numbers (int64) of the first lines of the non-blank records of ``data``, or None
    when they do not number ``rows`` (then the line-by-line pass decides)."""
    raw = np.frombuffer(data, np.uint8)
    ends = record_ends(raw, quotechar)
    if len(raw) and (not len(ends) or ends[-1] != len(raw) - 1):
        ends = np.append(ends, len(raw))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (raw[np.minimum(starts, len(raw) - 1)] == 13))
    feeds = np.flatnonzero(raw == 10)
    numbers = first_line + np.searchsorted(feeds, starts[~blank])
    return numbers if len(numbers) == rows else None
