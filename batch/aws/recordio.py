"""SageMaker's ``application/x-recordio-protobuf``: one ``aialgs.data.Record`` per matrix row.

Framing, from dmlc-core ``src/recordio.cc``: u32 magic 0xCED7230A, u32 ``cflag << 29 | length``,
the payload, zero padding to a multiple of 4 bytes, all little-endian. cflag 0 is a whole record;
1, 2, 3 are the first, middle and last parts of a record that MXNet split where its payload held
the magic (which the split dropped). The SageMaker SDK never splits, so neither do we, but we
read split records. The message itself is described in :mod:`batch.aws.record_pb`.

The writers reproduce byte for byte the SDK v2 functions ``write_spmatrix_to_sparse_tensor`` and
``write_numpy_to_dense_tensor`` (2.257.7, ``sagemaker/serializer_utils.py``): a sparse row is
values + keys + shape ``[n_cols]``, a dense row values only, a label a one-value tensor; the
dtype picks the tensor type. They encode thousands of rows per numpy pass and append to the
stream, so a shard of any size is written chunk by chunk in bounded memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

from batch.aws import record_pb as pb
from batch.aws.record_pb import Record, RecordIOError, Tensor, WireTensor
from batch.aws.wire import Ragged, WireError, concat, varints

__all__ = ["Record", "RecordIOError", "Tensor", "read_dense", "read_records", "read_sparse",
           "write_dense", "write_sparse"]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_MAX_LENGTH = (1 << 29) - 1  # the length bits of a recordIO header
_CHUNK_VALUES = 1 << 18  # matrix entries encoded per numpy pass: bounds memory
_CHUNK_ROWS = 1 << 16
_BATCH = 1 << 13  # records whose numbers are decoded together when reading


# ---------------------------------------------------------------------------- writing


def write_sparse(stream: BinaryIO, X: sp.spmatrix | sp.sparray, labels: np.ndarray | None = None
                 ) -> None:
    """Append one record per row of ``X`` (a scipy sparse matrix, float32, float64 or int64)
    with ``labels[row]`` (float32, float64 or int64 (n_rows,)) when given. Call it once per chunk
    of rows to stream a large shard: records are independent, so chunks simply concatenate."""
    if not sp.issparse(X):
        raise RecordIOError("write_sparse needs a scipy sparse matrix")
    kind, label_kind = pb.kind_of(X.dtype, "matrix"), _label_kind(labels, X.shape)
    X = sp.csr_matrix(X)  # as the SDK's tocsr(): each row's entries stay in stored order
    shape = varints(np.array([X.shape[1]], np.uint64)).tobytes()
    for start, stop in _sparse_chunks(X.indptr):
        lo, hi = X.indptr[start], X.indptr[stop]
        indptr = X.indptr[start:stop + 1] - lo
        features = pb.value(kind, pb.packed_values(kind, X.data[lo:hi], indptr),
                            keys=varints(X.indices[lo:hi].astype(np.uint64), indptr),
                            shape=Ragged.const(shape, np.ones(stop - start, bool)))
        _write(stream, features, _label(label_kind, labels, start, stop))


def write_dense(stream: BinaryIO, array: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Append one record per row of ``array`` ((n_rows, n_cols) float32, float64 or int64) with
    ``labels[row]`` when given; chunks of rows concatenate as with :func:`write_sparse`."""
    if np.ndim(array) != 2:
        raise RecordIOError(f"write_dense needs a 2-D array, got shape {np.shape(array)}")
    kind, label_kind = pb.kind_of(array.dtype, "array"), _label_kind(labels, array.shape)
    n_rows, n_cols = array.shape
    step = max(1, min(_CHUNK_ROWS, _CHUNK_VALUES // max(n_cols, 1)))
    for start in range(0, n_rows, step):
        block = array[start:start + step]
        indptr = np.arange(len(block) + 1, dtype=np.int64) * n_cols
        features = pb.value(kind, pb.packed_values(kind, block.ravel(), indptr))
        _write(stream, features, _label(label_kind, labels, start, start + len(block)))


def _label_kind(labels: np.ndarray | None, shape: tuple[int, ...]) -> int | None:
    if labels is None:
        return None
    if np.ndim(labels) != 1 or len(labels) != shape[0]:
        raise RecordIOError(f"labels of shape {np.shape(labels)} do not fit {shape[0]} rows")
    return pb.kind_of(labels.dtype, "labels")


def _label(kind: int | None, labels: np.ndarray | None, start: int, stop: int) -> Ragged | None:
    if labels is None or kind is None:
        return None
    one_each = np.arange(stop - start + 1)
    return pb.value(kind, pb.packed_values(kind, labels[start:stop], one_each))


def _sparse_chunks(indptr: np.ndarray) -> Iterator[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of about ``_CHUNK_VALUES`` entries, at least one row each."""
    n, start = len(indptr) - 1, 0
    while start < n:
        stop = int(np.searchsorted(indptr, indptr[start] + _CHUNK_VALUES, side="right")) - 1
        stop = min(n, start + _CHUNK_ROWS, max(stop, start + 1))
        yield start, stop
        start = stop


def _write(stream: BinaryIO, features: Ragged, label: Ragged | None) -> None:
    """Frame each row's Record and write the whole batch with one call."""
    record = pb.records(features, label)
    if np.any(record.lengths > _MAX_LENGTH):
        raise RecordIOError("a row is too large for one recordIO record (2^29 bytes)")
    header = np.empty((len(record), 2), "<u4")
    header[:, 0], header[:, 1] = MAGIC, record.lengths
    pad = -record.lengths % 4
    framed = concat([Ragged.fixed(header.ravel(), np.arange(len(record) + 1) * 2), record,
                     Ragged.of(np.zeros(int(pad.sum()), np.uint8), pad)])
    stream.write(framed.tobytes())


# ---------------------------------------------------------------------------- reading


def read_records(stream: BinaryIO, *, file: str | None = None) -> Iterator[Record]:
    """Each record of ``stream`` in order. Errors (:class:`RecordIOError`) name ``file``
    (default: the stream's name) and the 1-based record number as the line."""
    name = _name(stream, file)
    for number, features, label in _wire_records(stream, name):
        yield Record(pb.tensor(features, file=name, number=number),
                     None if label is None else pb.tensor(label, file=name, number=number))


def read_sparse(stream: BinaryIO, *, file: str | None = None
                ) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """All records as a CSR matrix (n_records, n_cols) of the features' dtype, and the labels
    (n_records,) or None. A dense record becomes a row with every entry stored."""
    name, state, parts = _name(stream, file), _FileState(), []
    records = _wire_records(stream, name)
    while batch := list(islice(records, _BATCH)):
        parts.append(_sparse_batch(batch, name, state))
    if not parts:
        return sp.csr_matrix((0, 0), dtype=np.float32), None
    values, columns, counts, labels = zip(*parts, strict=True)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    matrix = sp.csr_matrix((np.concatenate(values), np.concatenate(columns), indptr),
                           shape=(len(indptr) - 1, state.width))
    return matrix, (np.concatenate(labels) if state.has_label else None)


def read_dense(stream: BinaryIO, *, file: str | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """All records as an array (n_records, n_cols) of the features' dtype, and the labels
    (n_records,) or None. Sparse records are scattered into zeros."""
    matrix, labels = read_sparse(stream, file=file)
    return matrix.toarray(), labels


@dataclass
class _FileState:
    """What every record of a file must share with its first: tensor types, label, width."""

    kind: int | None = None
    label_kind: int | None = None
    has_label: bool | None = None
    width: int | None = None

    def check(self, features: WireTensor, label: WireTensor | None, name: str, number: int):
        if self.kind is None:
            self.kind, self.has_label = features.kind, label is not None
            self.label_kind = None if label is None else label.kind
        if features.kind != self.kind or (label is not None) != self.has_label or (
                label is not None and label.kind != self.label_kind):
            raise RecordIOError("record differs from the first in its tensor types or in "
                                "having a label", file=name, line=number)


def _sparse_batch(batch: list[tuple[int, WireTensor, WireTensor | None]], name: str,
                  state: _FileState) -> tuple[np.ndarray, ...]:
    """Values, column indices (int64), entries per row (int64) and labels (or None) of a batch
    of records, checked against ``state``."""
    first = batch[0][0]
    for number, features, label in batch:
        state.check(features, label, name, number)
    values, counts = pb.unpack([b[1].values for b in batch], pb.DTYPES[state.kind],
                               file=name, first=first)
    keys, key_counts = pb.unpack([b[1].keys for b in batch], np.dtype(np.uint64),
                                 file=name, first=first)
    dense = _row_layouts([b[1] for b in batch], counts, key_counts, name, state, first)
    columns = np.empty(values.size, np.int64)
    element_dense = np.repeat(dense, counts)  # a dense row stores every column, keys implicit
    position = np.arange(values.size) - np.repeat(np.cumsum(counts) - counts, counts)
    columns[element_dense] = position[element_dense]
    columns[~element_dense] = keys  # a sparse row has one key per value, in order
    if columns.size and columns.max() >= state.width:
        bad = np.repeat(np.arange(len(batch)), counts)[np.argmax(columns >= state.width)]
        raise RecordIOError(f"key outside the {state.width} columns", file=name,
                            line=first + int(bad))
    return values, columns, counts, _batch_labels(batch, name, state)


def _row_layouts(features: list[WireTensor], counts: np.ndarray, key_counts: np.ndarray,
                 name: str, state: _FileState, first: int) -> np.ndarray:
    """Which rows are dense (bool (n,)); checks each row's declared shape and width."""
    shapes: dict[bytes, tuple[int, ...]] = {}  # a file holds one or two distinct shape fields
    dense = np.empty(len(features), bool)
    rows = zip(features, counts.tolist(), key_counts.tolist(), strict=True)
    for i, (wire, n_values, n_keys) in enumerate(rows):
        if wire.shape not in shapes:
            shapes[wire.shape] = pb.tensor(wire, file=name, number=first + i).shape
        shape = shapes[wire.shape]
        dense[i] = n_keys == 0 and shape in ((), (n_values,))
        if not dense[i] and (len(shape) != 1 or n_keys != n_values):
            raise RecordIOError(f"tensor with {n_values} values, {n_keys} keys and shape {shape}"
                                " is not a matrix row", file=name, line=first + i)
        width = n_values if dense[i] else shape[0]
        if state.width not in (None, width):
            raise RecordIOError(f"row has {width} columns, earlier rows {state.width}",
                                file=name, line=first + i)
        state.width = width
    return dense


def _batch_labels(batch, name: str, state: _FileState) -> np.ndarray | None:
    if not state.has_label:
        return None
    labels = [b[2] for b in batch]
    values, counts = pb.unpack([w.values for w in labels], pb.DTYPES[state.label_kind],
                               file=name, first=batch[0][0])
    bad = np.flatnonzero((counts != 1) | np.array([bool(w.keys) for w in labels]))
    if bad.size:
        raise RecordIOError("label is not a single value", file=name,
                            line=batch[0][0] + int(bad[0]))
    return values


def _wire_records(stream: BinaryIO, name: str
                  ) -> Iterator[tuple[int, WireTensor, WireTensor | None]]:
    for number, payload in enumerate(_payloads(stream, name), 1):
        try:
            features, label = pb.decode_record(payload)
        except WireError as exc:
            raise RecordIOError(f"bad protobuf record: {exc}", file=name, line=number) from None
        yield number, features, label


def _payloads(stream: BinaryIO, name: str) -> Iterator[bytes]:
    """Each record's payload; a split record is joined back with the magic it lost."""
    parts: list[bytes] = []
    number, offset = 1, 0
    while header := _read_exact(stream, 8):
        fail = _failer(name, number, offset)
        if len(header) < 8:
            raise fail(f"truncated header ({len(header)} of 8 bytes)")
        magic, lrec = struct.unpack("<II", header)
        if magic != MAGIC:
            raise fail(f"bad magic 0x{magic:08X} (expected 0x{MAGIC:08X})")
        cflag, length = lrec >> 29, lrec & _MAX_LENGTH
        padded = (length + 3) & ~3
        body = _read_exact(stream, padded)
        if len(body) < padded:
            raise fail(f"truncated record: {len(body)} of {padded} bytes")
        if cflag > 3 or (cflag in (0, 1)) == bool(parts):
            raise fail(f"continuation flag {cflag} out of sequence")
        parts.append(body[:length])
        offset += 8 + padded
        if cflag in (0, 3):
            yield _MAGIC_BYTES.join(parts)
            parts, number = [], number + 1
    if parts:
        raise _failer(name, number, offset)("stream ends inside a split record")


def _failer(name: str, number: int, offset: int):
    """Makes the error for record ``number``, whose header starts at byte ``offset``."""
    return lambda reason: RecordIOError(f"{reason} at byte {offset}", file=name, line=number)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, fewer only at the end of the stream (network bodies return short reads)."""
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _name(stream: BinaryIO, file: str | None) -> str:
    return file or str(getattr(stream, "name", "<stream>"))
