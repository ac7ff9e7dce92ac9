"""Chunked, vectorised reading of delimited text files (MovieLens files, CSV, TSV).

A file is read in blocks of a few MiB cut at a line end, and each block is parsed at C speed by
``np.loadtxt`` into numpy columns. Only when that fails, or a vectorised check flags a value, is
the block parsed again line by line (:mod:`batch.data.lineparse`): that slow pass finds the exact
line and column for the error message, or accepts a block the fast parser is merely too strict
for (whitespace-only lines, odd quoting).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np

from batch import storage
from batch.data import lineparse
from batch.errors import EmptyDataError, InvalidValueError
from batch.log import log

NUMERIC_CHUNK_BYTES = 16 << 20
# Text columns become fixed-width unicode arrays (4 bytes a character): read less at a time.
TEXT_CHUNK_BYTES = 8 << 20
BOM = b"\xef\xbb\xbf"
LINE = "__line__"
_CONTENT = re.compile(rb"\S")


@dataclass(frozen=True)
class Field:
    """One column of a file: ``name`` (the result key, and the column named in errors) and
    ``kind``: ``int`` (int64), ``float`` (float64), ``str`` (unicode) or ``skip`` (ignored)."""

    name: str
    kind: str


@dataclass(frozen=True)
class Check:
    """A vectorised validity rule: ``bad(column)`` is a boolean mask of invalid values;
    ``message`` may use ``{value!r}``."""

    field: str
    bad: Callable[[np.ndarray], np.ndarray]
    message: str


Columns = dict[str, np.ndarray]


class TextTable:
    """A delimited text file (local or ``s3://``, optionally ``.gz``) read chunk by chunk.

    ``encoding``: ``utf-8`` (invalid bytes are an error) or ``latin-1`` (MovieLens).
    ``quotechar``: CSV quoting, or None where quotes are ordinary characters. After
    :meth:`read`, ``rows`` is the number of data rows and ``slow_chunks`` how many chunks
    needed the line-by-line parser.
    """

    def __init__(self, location: str, *, delimiter: str, encoding: str = "utf-8",
                 header: bool = False, quotechar: str | None = None):
        self.location, self.delimiter, self.encoding = str(location), delimiter, encoding
        self.has_header, self.quotechar = header, quotechar
        self.rows = self.bytes_read = self.slow_chunks = 0
        self.chunk_bytes = TEXT_CHUNK_BYTES
        self._blocks: Iterator[tuple[bytes, int]] | None = None
        self._pending: tuple[bytes, int] | None = None
        self._names: list[str] | None = None
        self._prefer_2d = True

    @property
    def size(self) -> int | None:
        """Bytes in an uncompressed local file, else None (used to pre-size buffers)."""
        if storage.is_s3(self.location) or self.location.endswith(".gz"):
            return None
        return os.path.getsize(self.location)

    def header(self) -> list[str]:
        """Column names from the first line (read once)."""
        if self._names is None:
            first = self._next_block()
            if first is None:
                raise EmptyDataError("the file is empty", file=self.location)
            data, line = first
            cut = data.find(b"\n") + 1 or len(data)
            lineparse.check_binary(data[:cut], line, self.location, self.delimiter)
            text = lineparse.decode(data[:cut], line, self.encoding, self.location, self.delimiter)
            names = lineparse.split(text.rstrip("\r\n"), self.delimiter, self.quotechar,
                                    self.location, line)
            self._names = [name.strip() for name in names]
            self._pending = (data[cut:], line + 1) if cut < len(data) else None
        return self._names

    def read(self, fields: Sequence[Field], checks: Sequence[Check] = (), *,
             with_lines: bool = False) -> Iterator[Columns]:
        """Parse the data rows chunk by chunk into ``{field.name: 1-D array}``; with
        ``with_lines`` each chunk also holds ``LINE``: the 1-based line number of every row.
        Raises a :class:`DataError` naming file, line and column for the first bad value, and
        :class:`EmptyDataError` when the file holds no data rows."""
        if all(f.kind != "str" for f in fields):
            self.chunk_bytes = NUMERIC_CHUNK_BYTES
        if self.has_header:
            self.header()
        while (block := self._next_block()) is not None:
            columns = self._parse(*block, fields, checks, with_lines)
            if columns is not None:
                yield columns
        if self.slow_chunks:
            log.info("%s: %d chunk(s) needed the line-by-line parser", self.location,
                     self.slow_chunks)
        if self.rows == 0:
            what = "no data rows after the header" if self.has_header else "no data rows"
            raise EmptyDataError(what, file=self.location)

    def _parse(self, data: bytes, first_line: int, fields, checks, with_lines) -> Columns | None:
        lineparse.check_binary(data, first_line, self.location, self.delimiter)
        if not _CONTENT.search(data):
            return None
        columns, lines = self._fast(data, fields), None
        if columns is not None and with_lines:
            lines = lineparse.line_numbers(data, first_line, _length(columns), self.quotechar)
        if columns is None or (with_lines and lines is None):
            columns, lines = self._careful(data, first_line, fields)
        bad = first_bad(columns, checks)
        if bad is not None:
            if lines is None:  # the fast pass does not know line numbers: find them
                columns, lines = self._careful(data, first_line, fields)
            check, row = bad
            value = columns[check.field][row]
            raise InvalidValueError(check.message.format(value=_plain(value)), file=self.location,
                                    line=int(lines[row]), column=check.field)
        if with_lines:
            columns[LINE] = lines
        self.rows += _length(columns)
        return columns

    def _fast(self, data: bytes, fields: Sequence[Field]) -> Columns | None:
        args = (data, fields, self.delimiter, self.quotechar, self.encoding)
        numeric = all(f.kind in ("int", "float") for f in fields)
        if numeric and self._prefer_2d:
            columns = lineparse.loadtxt_2d(*args)
            if columns is not None:
                return columns
        columns = lineparse.loadtxt_records(*args)
        if columns is not None and numeric:
            self._prefer_2d = False  # e.g. half-star ratings: go straight to records next time
        return columns

    def _careful(self, data: bytes, first_line: int, fields) -> tuple[Columns, np.ndarray]:
        self.slow_chunks += 1
        text = lineparse.decode(data, first_line, self.encoding, self.location, self.delimiter)
        return lineparse.parse_lines(text, first_line, fields, self.delimiter, self.quotechar,
                                     self.location)

    def _next_block(self) -> tuple[bytes, int] | None:
        if self._pending is not None:
            block, self._pending = self._pending, None
            return block
        if self._blocks is None:
            self._blocks = self._read_blocks()
        block = next(self._blocks, None)
        if block is not None:
            self.bytes_read += len(block[0])
        return block

    def _read_blocks(self) -> Iterator[tuple[bytes, int]]:
        """Blocks of whole records (a quoted field may hold line breaks), each with the 1-based
        number of its first line."""
        line, rest = 1, b""
        with open_stream(self.location) as stream:
            block = self._read(stream).removeprefix(BOM)  # spreadsheets write a BOM
            while block:
                block = rest + block
                cut = self._last_record_end(block) + 1
                if cut == 0:  # one line longer than a block: keep reading
                    rest = block
                else:
                    data, rest = block[:cut], block[cut:]
                    yield data, line
                    line += data.count(b"\n")
                block = self._read(stream)
        if rest:
            yield rest, line

    def _last_record_end(self, block: bytes) -> int:
        """Position of the line feed ending the block's last whole record, or -1."""
        if self.quotechar is None or self.quotechar.encode() not in block:
            return block.rfind(b"\n")
        ends = lineparse.record_ends(np.frombuffer(block, np.uint8), self.quotechar)
        return int(ends[-1]) if len(ends) else -1

    def _read(self, stream: IO[bytes]) -> bytes:
        try:
            return stream.read(self.chunk_bytes)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise InvalidValueError(f"corrupt or truncated gzip data ({exc})",
                                    file=self.location) from None


@contextlib.contextmanager
def open_stream(location: str) -> Iterator[IO[bytes]]:
    """A binary stream of a file, decompressed when its name ends in ``.gz``."""
    with storage.open_read(location) as raw:
        if not location.endswith(".gz"):
            yield raw
            return
        with gzip.GzipFile(fileobj=raw) as unzipped:
            yield unzipped


def _length(columns: Columns) -> int:
    return len(next(iter(columns.values())))


def first_bad(columns: Columns, checks: Sequence[Check]) -> tuple[Check, int] | None:
    """The check failing on the earliest row, and that row."""
    found = None
    for check in checks:
        mask = check.bad(columns[check.field])
        if mask.any():
            row = int(np.argmax(mask))
            if found is None or row < found[1]:
                found = (check, row)
    return found


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def read_all(table: TextTable, fields: Sequence[Field], checks: Sequence[Check] = (), *,
             with_lines: bool = False) -> Columns:
    """Every chunk of a (small) table concatenated: for catalogue files, not interactions."""
    parts = list(table.read(fields, checks, with_lines=with_lines))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
