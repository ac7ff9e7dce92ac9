"""The ``aialgs.data.Record`` protobuf message: encoded for many rows at once, decoded per record.

Schema, from sagemaker-python-sdk ``src/sagemaker/amazon/record_pb2.py`` (proto2, every repeated
number packed)::

    Record  { map<string, Value> features = 1; map<string, Value> label = 2; string uid = 3;
              string metadata = 4; string configuration = 5; }
    Value   { oneof value { Float32Tensor float32_tensor = 2; Float64Tensor float64_tensor = 3;
                            Int32Tensor int32_tensor = 7; Bytes bytes = 9; } }
    *Tensor { repeated float|double|int32 values = 1; repeated uint64 keys = 2;
              repeated uint64 shape = 3; }

Both maps use the single key ``"values"``. Decoding stops at the *wire form* of a tensor (its
packed bytes), so that a reader can turn thousands of records into numbers with one numpy call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batch.aws.wire import (
    I32,
    I64,
    LEN,
    VARINT,
    Ragged,
    WireError,
    concat,
    field,
    fields,
    unpack_varints,
    varints,
)
from batch.errors import DataError

FLOAT32, FLOAT64, INT32 = 2, 3, 7  # Value field numbers of the three tensor types
DTYPES = {FLOAT32: np.dtype(np.float32), FLOAT64: np.dtype(np.float64), INT32: np.dtype(np.int32)}
_ELEMENT_WIRE = {FLOAT32: I32, FLOAT64: I64, INT32: VARINT}
_VALUES_KEY = b"\x0a\x06values"  # a map entry's field 1 (key): 6 bytes, "values"


class RecordIOError(DataError):
    """A recordIO-protobuf stream is malformed or an array cannot be written; ``line`` is the
    1-based record number."""


@dataclass(frozen=True)
class Tensor:
    """One tensor of a record. ``values``: float32, float64 or int32 (n,). ``keys``: uint64 (n,),
    the column of each value in a sparse tensor, empty for a dense one. ``shape``: the declared
    shape, ``()`` when the writer gave none (the SDK's dense rows)."""

    values: np.ndarray
    keys: np.ndarray
    shape: tuple[int, ...]

    @property
    def is_sparse(self) -> bool:
        return self.keys.size > 0 or (bool(self.shape) and self.values.size != np.prod(self.shape))


@dataclass(frozen=True)
class Record:
    """``features`` is the tensor under features["values"], ``label`` the one under
    label["values"] or None."""

    features: Tensor
    label: Tensor | None


def kind_of(dtype: np.dtype, what: str) -> int:
    """The tensor type the SDK's ``_resolve_type`` picks, with its exact dtype comparisons:
    numpy's default int (int64) → Int32Tensor, float64 → Float64Tensor, float32 → Float32Tensor."""
    for kind, accepted in ((INT32, np.dtype(int)), (FLOAT64, np.dtype(float)),
                           (FLOAT32, np.dtype(np.float32))):
        if dtype == accepted:
            return kind
    raise RecordIOError(f"{what} dtype {dtype} cannot be written as recordIO-protobuf "
                        "(float32, float64 and int64 can)")


# ---------------------------------------------------------------------------- encoding


def packed_values(kind: int, flat: np.ndarray, indptr: np.ndarray) -> Ragged:
    """Row ``r``'s packed ``values``: ``flat[indptr[r]:indptr[r+1]]`` as little-endian floats
    or, for an Int32Tensor, as varints (``flat`` int64 within the int32 range)."""
    if kind != INT32:
        return Ragged.fixed(flat, indptr)
    if flat.size and (flat.min() < -(2**31) or flat.max() >= 2**31):
        raise RecordIOError("int64 values outside the int32 range cannot go in an Int32Tensor")
    return varints(flat, indptr)


def value(kind: int, values: Ragged, keys: Ragged | None = None, shape: Ragged | None = None
          ) -> Ragged:
    """Each row's ``Value`` message, holding one tensor of type ``kind``."""
    parts = [field(1, values)] + [field(n, p) for n, p in ((2, keys), (3, shape)) if p is not None]
    return field(kind, concat(parts), always=True)


def records(features: Ragged, label: Ragged | None) -> Ragged:
    """Each row's ``Record``: features map {"values": features}, then label map when given."""
    every = np.ones(len(features), bool)
    maps = [(1, features)] + ([(2, label)] if label is not None else [])
    return concat([field(number, concat([Ragged.const(_VALUES_KEY, every),
                                         field(2, tensor, always=True)]), always=True)
                   for number, tensor in maps])


# ---------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class WireTensor:
    """A tensor as it sits on the wire: its Value field number and each repeated field's bytes
    in packed form (an unpacked element is re-packed)."""

    kind: int
    values: bytes
    keys: bytes
    shape: bytes


_EMPTY = WireTensor(FLOAT32, b"", b"", b"")  # a Value with no tensor set


def decode_record(buf: bytes) -> tuple[WireTensor, WireTensor | None]:
    """Features and label (or None) of one serialized Record; raises :class:`WireError`."""
    maps: dict[int, WireTensor] = {}
    for number, wire, raw in fields(buf):
        if number in (1, 2):  # features, label; uid, metadata and configuration are skipped
            key, tensor = _decode_entry(_message(number, wire, raw))
            if key == b"values":
                maps[number] = tensor
    if 1 not in maps:
        raise WireError('record has no features["values"]')
    return maps[1], maps.get(2)


def _decode_entry(buf: bytes) -> tuple[bytes, WireTensor]:
    key, tensor = b"", _EMPTY
    for number, wire, raw in fields(buf):
        if number == 1:
            key = _message(number, wire, raw)
        elif number == 2:
            tensor = _decode_value(_message(number, wire, raw))
    return key, tensor


def _decode_value(buf: bytes) -> WireTensor:
    tensor = _EMPTY
    for number, wire, raw in fields(buf):
        if number in DTYPES:  # a oneof: the last one set wins
            tensor = _decode_tensor(_message(number, wire, raw), number)
        elif number == 9:
            raise WireError("Bytes values are not supported")
    return tensor


def _decode_tensor(buf: bytes, kind: int) -> WireTensor:
    found: dict[int, list[bytes]] = {1: [], 2: [], 3: []}
    for number, wire, raw in fields(buf):
        if number in found:
            element = _ELEMENT_WIRE[kind] if number == 1 else VARINT
            found[number].append(_packed(number, wire, raw, element))
    return WireTensor(kind, *(b"".join(found[n]) for n in (1, 2, 3)))


def _packed(number: int, wire: int, raw: int | bytes, element: int) -> bytes:
    """A repeated field's bytes in packed form, whether it came packed or as one element."""
    if wire == LEN:
        return raw  # type: ignore[return-value]
    if wire != element:
        raise WireError(f"field {number} has wire type {wire}")
    return varints(np.array([raw], np.uint64)).tobytes() if element == VARINT else raw


def _message(number: int, wire: int, raw: int | bytes) -> bytes:
    if wire != LEN:
        raise WireError(f"field {number} has wire type {wire}, expected length-delimited")
    return raw  # type: ignore[return-value]


def unpack(chunks: list[bytes], dtype: np.dtype, *, file: str, first: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Decode one packed field of many records at once: all their elements, of ``dtype``
    (float32, float64, int32 or uint64), and how many each record holds (int64 (n,)).
    ``first`` is the record number of ``chunks[0]``, for errors."""
    sizes = np.fromiter(map(len, chunks), np.int64, len(chunks))
    joined = b"".join(chunks)
    if dtype.kind == "f":
        bad = np.flatnonzero(sizes % dtype.itemsize)
        if bad.size:
            raise RecordIOError(f"packed {dtype} field of {sizes[bad[0]]} bytes",
                                file=file, line=first + int(bad[0]))
        return np.frombuffer(joined, dtype.newbyteorder("<")).astype(dtype), sizes // dtype.itemsize
    raw = np.frombuffer(joined, np.uint8)
    ends = np.cumsum(sizes)
    bad = np.flatnonzero(sizes > 0)[raw[ends[sizes > 0] - 1] >= 0x80]  # a varint cut short
    if bad.size:
        raise RecordIOError("truncated varint in a packed field", file=file,
                            line=first + int(bad[0]))
    try:
        values = unpack_varints(joined)
    except WireError:  # find the record: no varint spans two of them (checked above)
        for i, chunk in enumerate(chunks):
            try:
                unpack_varints(chunk)
            except WireError as exc:
                raise RecordIOError(f"bad packed field: {exc}", file=file, line=first + i) from None
        raise
    if dtype == np.int32:  # protobuf keeps a varint's low 32 bits for an int32
        values = values.view(np.int64).astype(np.int32)
    done = np.concatenate([[0], np.cumsum(raw < 0x80)])  # varints completed before each byte
    return values, done[ends] - done[ends - sizes]


def tensor(wire: WireTensor, *, file: str, number: int) -> Tensor:
    """The numbers of one wire-form tensor."""
    u64 = np.dtype(np.uint64)
    values, keys, shape = (unpack([raw], dtype, file=file, first=number)[0] for raw, dtype in
                           ((wire.values, DTYPES[wire.kind]), (wire.keys, u64), (wire.shape, u64)))
    return Tensor(values, keys, tuple(shape.tolist()))
