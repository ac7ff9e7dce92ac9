"""PostgreSQL binary COPY encoding, vectorised with numpy.

Binary COPY (not text) because formatting millions of floats as text costs seconds in numpy,
while the server takes binary floats as they are. A block of rows is laid out as an
``(n, width)`` byte matrix, one column range per field, starting from a template row that holds
the field count and fixed length prefixes. Text fields are padded to their longest value; when
lengths differ, a boolean mask marks the real bytes and ``matrix[mask]`` squeezes the padding
out in one pass. Every field is an int32 byte length (-1 for NULL) and the value, big-endian.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header-extension length
TRAILER = b"\xff\xff"


def _be(value: int, dtype: str) -> np.ndarray:
    return np.frombuffer(np.array(value, dtype).tobytes(), np.uint8)


def _utf8(text: np.ndarray) -> np.ndarray:
    """UTF-8 bytes ('S' array) of a unicode array; ids are nearly always ASCII, which is
    converted without numpy's per-element encoder."""
    codepoints = text.view(np.uint32).reshape(len(text), text.dtype.itemsize // 4)
    if codepoints.size and codepoints.max() >= 128:
        return np.char.encode(text, "utf-8")
    width = max(codepoints.shape[1], 1)
    ascii_ = np.zeros((len(text), width), np.uint8)
    ascii_[:, :codepoints.shape[1]] = codepoints
    return ascii_.view(f"S{width}").reshape(len(text))


@dataclass(frozen=True)
class TextFields:
    """A text column's distinct values, encoded: ``bytes[k]`` is value k's length prefix and
    UTF-8 bytes, zero-padded; ``size[k]`` how many bytes are real. Rows refer to values by
    index. uint8 (n, 4 + longest value), int64 (n,)."""

    bytes: np.ndarray
    size: np.ndarray

    @classmethod
    def from_text(cls, text: np.ndarray) -> TextFields:
        """From a unicode array (values must not hold NUL characters)."""
        utf8 = _utf8(np.asarray(text, dtype=str))
        length = np.char.str_len(utf8).astype(np.int64)
        out = np.zeros((len(utf8), 4 + utf8.dtype.itemsize), np.uint8)
        out[:, :4] = length.astype(">i4").view(np.uint8).reshape(-1, 4)
        out[:, 4:] = utf8.view(np.uint8).reshape(len(utf8), utf8.dtype.itemsize)
        return cls(out, length + 4)

    @property
    def width(self) -> int:
        return self.bytes.shape[1]

    def prefix(self) -> np.ndarray:
        return np.zeros(4, np.uint8)  # each value carries its own length

    def put(self, out: np.ndarray, keep: np.ndarray | None, at: int, index: np.ndarray):
        out[:, at:at + self.width] = self.bytes[index]
        size = self.size[index]
        if len(size) and size.min() == self.width:
            return keep
        keep = np.ones(out.shape, bool) if keep is None else keep
        keep[:, at:at + self.width] = np.arange(self.width) < size[:, None]
        return keep


@dataclass(frozen=True)
class Number:
    """A fixed-size numeric column (``dtype`` big-endian, e.g. ``">f4"``); with ``nullable``,
    NaN is sent as NULL."""

    dtype: str
    nullable: bool = False

    @property
    def width(self) -> int:
        return 4 + np.dtype(self.dtype).itemsize

    def prefix(self) -> np.ndarray:
        return _be(self.width - 4, ">i4")

    def put(self, out: np.ndarray, keep: np.ndarray | None, at: int, values: np.ndarray):
        out[:, at + 4:at + self.width].view(self.dtype)[:, 0] = values
        null = np.isnan(values) if self.nullable else None
        if null is None or not null.any():
            return keep
        keep = np.ones(out.shape, bool) if keep is None else keep
        out[null, at:at + 4] = _be(-1, ">i4")
        keep[null, at + 4:at + self.width] = False
        return keep


Field = TextFields | Number


def encode_rows(fields: Sequence[Field], columns: Sequence[np.ndarray]) -> bytes:
    """Binary COPY tuples of the rows in ``columns`` (indices for text fields, values for
    numbers), without the stream's header or trailer."""
    at = np.cumsum([2] + [f.width for f in fields])
    template = np.concatenate([_be(len(fields), ">i2")] + [
        np.pad(f.prefix(), (0, f.width - 4)) for f in fields])
    out = np.empty((len(columns[0]), len(template)), np.uint8)
    out[:] = template
    keep = None
    for field, start, column in zip(fields, at[:-1], columns, strict=True):
        keep = field.put(out, keep, int(start), column)
    return (out if keep is None else out[keep]).tobytes()


def copy_stream(fields: Sequence[Field], blocks: Iterator[Sequence[np.ndarray]],
                block_rows: int = 65_536) -> Iterator[bytes]:
    """The whole COPY payload: header, every block's rows (encoded ``block_rows`` at a time,
    small enough to stay in cache), trailer."""
    yield HEADER
    for columns in blocks:
        for start in range(0, len(columns[0]), block_rows):
            yield encode_rows(fields, [c[start:start + block_rows] for c in columns])
    yield TRAILER


class PrefetchReader:
    """A file-like ``read()`` over byte blocks produced by a background thread.

    psycopg2's ``copy_expert`` reads from a file; producing the next block while the server
    parses the previous one overlaps numpy encoding with the server's work (numpy releases the
    GIL). An exception in the producer is raised from ``read()``, which aborts the COPY.
    """

    _END = object()

    def __init__(self, blocks: Iterator[bytes], depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pending = memoryview(b"")
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(blocks,), daemon=True,
                                        name="topx-copy-encoder")
        self._thread.start()

    def _produce(self, blocks: Iterator[bytes]) -> None:
        try:
            for block in blocks:
                if not self._put(block):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(self, size: int = -1) -> bytes:
        while not self._pending and not self._finished:
            item = self._queue.get()
            if item is self._END:
                self._finished = True
            elif isinstance(item, BaseException):
                self._finished = True
                raise item
            else:
                self._pending = memoryview(item)
        size = len(self._pending) if size is None or size < 0 else size
        block, self._pending = self._pending[:size], self._pending[size:]
        return block.tobytes()

    def close(self) -> None:
        """Stop the producer (if the COPY ended early) and wait for it."""
        self._stop.set()
        self._thread.join()
