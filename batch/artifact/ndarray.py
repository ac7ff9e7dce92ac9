"""MXNet's NDArray-list file format (what ``mx.nd.save`` writes), read and written with numpy.

All integers are little-endian. Verified against apache/mxnet ``src/ndarray/ndarray.cc``
(``NDArray::Save``, ``NDArray::Load``, ``LegacyLoad``, the list ``Save``/``Load``),
``include/mxnet/tuple.h`` (``Tuple::Save``: i32 ndim, then int64 dims), ``include/mxnet/base.h``
(``Context::Save``) and dmlc-core ``serializer.h`` (vectors and strings: u64 length first)::

    list   = u64 0x112, u64 reserved, u64 n, array × n, u64 m, (u64 len, utf-8 bytes) × m
    array  = u32 magic, then by magic:
      V2 0xF993FAC9 / V3 0xF993FACA (numpy shape semantics):
             i32 stype, [shape storage_shape if sparse], shape, context, i32 type_flag,
             (i32 aux_type, shape aux_shape) × naux, values, aux values × naux
      V1 0xF993FAC8: shape, context, i32 type_flag, values
      legacy (no magic; the u32 read as magic is ndim): u32 dims × ndim, context, type_flag, values
    shape   = i32 ndim, i64 dims × ndim
    context = i32 dev_type (1 cpu, 2 gpu, 3 cpu_pinned, 5 cpu_shared), i32 dev_id

Storage types: 0 dense (no aux), 1 row_sparse (aux: row indices), 2 csr (aux: indptr, indices).
Sparse values hold only the stored rows / non-zeros (``storage_shape``). The reader returns every
array dense; corrupt or truncated input raises an :class:`~batch.errors.ArtifactError` subclass.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

import numpy as np

from batch.artifact.errors import (
    ArtifactTooLargeError,
    CorruptArtifactError,
    TruncatedArtifactError,
    UnsupportedArtifactError,
)
from batch.artifact.sparse import CSR, DENSE, ROW_SPARSE, densify

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
CPU = 1

# mshadow TypeFlag → numpy dtype (mshadow/base.h); 12 is bfloat16, which numpy lacks.
_CODES = ["f4", "f8", "f2", "u1", "i4", "i1", "i8", "?", "i2", "u2", "u4", "u8"]
TYPE_FLAGS: dict[int, np.dtype] = {f: np.dtype(c).newbyteorder("<") for f, c in enumerate(_CODES)}
_BFLOAT16 = 12
_NUM_AUX = {DENSE: 0, ROW_SPARSE: 1, CSR: 2}
_DEVICES = {1, 2, 3, 5}
_MAX_NDIM = 32  # numpy's portable limit; a legacy "ndim" above it is an unknown magic
_MAX_ELEMENTS = 2**62


class _Cursor:
    """Reads fixed-size fields from a buffer; a short read raises TruncatedArtifactError."""

    def __init__(self, data: bytes | memoryview, limit: int | None = None):
        self.buf = memoryview(data).cast("B")
        self.pos = 0
        self.limit = limit  # the most bytes one dense array may take

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.buf):
            raise TruncatedArtifactError(
                f"NDArray list is truncated: {what} at byte {self.pos} needs {n} bytes, "
                f"only {len(self.buf) - self.pos} remain"
            )
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def i32(self, what: str) -> int:
        return self.unpack("<i", what)[0]

    def u32(self, what: str) -> int:
        return self.unpack("<I", what)[0]

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)[0]

    def corrupt(self, what: str) -> CorruptArtifactError:
        return CorruptArtifactError(f"NDArray list is corrupt near byte {self.pos}: {what}")


def read_ndarrays(data: bytes | memoryview, limit: int | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Names (empty if the list is unnamed) and dense arrays of an NDArray-list file, in order.
    ``limit``: the most bytes a sparse array may densify to (:class:`ArtifactTooLargeError`)."""
    cur = _Cursor(data, limit)
    magic, _reserved, count = cur.unpack("<QQQ", "list header")
    if magic != LIST_MAGIC:
        raise CorruptArtifactError(f"not an MXNet NDArray list: header is 0x{magic:X}, not 0x112")
    if count > (len(cur.buf) - cur.pos) // 4:  # every array takes at least its 4-byte magic
        raise cur.corrupt(f"declares {count} arrays, more than the remaining bytes can hold")
    arrays = [_read_array(cur, i) for i in range(count)]
    names = _read_names(cur, count)
    if cur.pos != len(cur.buf):
        raise cur.corrupt(f"{len(cur.buf) - cur.pos} unexpected bytes after the last name")
    return names, arrays


def read_ndarray_list(data: bytes | memoryview, limit: int | None = None) -> dict[str, np.ndarray]:
    """``{name: dense array}`` of an NDArray-list file, like ``mx.nd.load`` then ``.asnumpy()``.

    Arrays keep their stored dtype (float32 for model parameters) and shape; row_sparse and csr
    arrays come back dense. An unnamed list is keyed ``"0"``, ``"1"``, … in order.
    """
    names, arrays = read_ndarrays(data, limit)
    keys = names or [str(i) for i in range(len(arrays))]
    if len(set(keys)) != len(keys):
        raise CorruptArtifactError(f"NDArray list repeats a name: {sorted(keys)}")
    return dict(zip(keys, arrays, strict=True))


def _read_names(cur: _Cursor, count: int) -> list[str]:
    n_names = cur.u64("name count")
    if n_names not in (0, count):
        raise cur.corrupt(f"{n_names} names for {count} arrays")
    names = []
    for i in range(n_names):
        raw = cur.take(cur.u64(f"length of name {i}"), f"name {i}")
        try:
            names.append(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError:
            raise cur.corrupt(f"name {i} is not UTF-8") from None
    return names


def _read_array(cur: _Cursor, index: int) -> np.ndarray:
    magic = cur.u32(f"magic of array {index}")
    if magic in (V2_MAGIC, V3_MAGIC):
        return _read_v2(cur, index, numpy_shape=magic == V3_MAGIC)
    if magic == V1_MAGIC:
        shape = _read_shape(cur, f"shape of array {index}")
    elif magic <= _MAX_NDIM:  # legacy files start with ndim and store u32 dims
        shape = _checked_dims(cur, cur.unpack(f"<{magic}I", f"shape of array {index}"), "shape")
    else:
        raise cur.corrupt(f"array {index} has unknown magic 0x{magic:08X}")
    _check_known(shape, index, numpy_shape=False)
    _read_context(cur, index)
    return _read_values(cur, _read_dtype(cur, index), shape, f"values of array {index}")


def _read_v2(cur: _Cursor, index: int, *, numpy_shape: bool) -> np.ndarray:
    stype = cur.i32(f"storage type of array {index}")
    if stype not in _NUM_AUX:
        raise cur.corrupt(f"array {index} has unknown storage type {stype}")
    naux = _NUM_AUX[stype]
    storage_shape = _read_shape(cur, f"storage shape of array {index}") if naux else None
    shape = _read_shape(cur, f"shape of array {index}", allow_unknown=numpy_shape)
    _check_known(shape, index, numpy_shape=numpy_shape)
    _read_context(cur, index)
    dtype = _read_dtype(cur, index)
    aux_specs = [
        (_read_dtype(cur, index), _read_shape(cur, f"aux shape {i} of array {index}"))
        for i in range(naux)
    ]
    if naux:
        storage_shape = _storage_shape(cur, stype, storage_shape, shape, [s for _, s in aux_specs])
    values = _read_values(cur, dtype, storage_shape if naux else shape, f"values of array {index}")
    aux = [_read_values(cur, t, s, f"aux data {i} of array {index}")
           for i, (t, s) in enumerate(aux_specs)]
    if naux and cur.limit is not None and math.prod(shape) * dtype.itemsize > cur.limit:
        raise ArtifactTooLargeError(f"sparse array {index} has dense shape {shape}, more than the {cur.limit:,} "
                                    f"bytes a model of the expected shape holds")
    return densify(stype, shape, values, aux, f"array {index}") if naux else values


def _storage_shape(cur: _Cursor, stype: int, saved: tuple[int, ...], shape: tuple[int, ...],
                   aux_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Shape of the stored values. MXNet derives it from the aux shapes when the saved one holds
    no elements (csr arrays are saved with (0,)): NDArray's sparse constructor in ndarray.cc."""
    if math.prod(saved) != 0:
        return saved
    if any(len(s) != 1 for s in aux_shapes) or not shape:
        raise cur.corrupt(f"sparse array with shape {shape} has aux shapes {aux_shapes}")
    return (aux_shapes[0][0], *shape[1:]) if stype == ROW_SPARSE else aux_shapes[1]


def _read_shape(cur: _Cursor, what: str, *, allow_unknown: bool = False) -> tuple[int, ...] | None:
    """A TShape; None for the unknown shape (ndim -1), which only numpy semantics may hold."""
    ndim = cur.i32(f"ndim of {what}")
    if ndim == -1 and allow_unknown:
        return None
    if not 0 <= ndim <= _MAX_NDIM:
        raise cur.corrupt(f"{what} has ndim {ndim}")
    return _checked_dims(cur, cur.unpack(f"<{ndim}q", what), what)


def _checked_dims(cur: _Cursor, dims: tuple[int, ...], what: str) -> tuple[int, ...]:
    if any(d < 0 for d in dims):
        raise cur.corrupt(f"{what} has a negative dimension: {dims}")
    # Zero-size arrays read no bytes, so only this keeps numpy from meeting an absurd shape.
    if math.prod(d for d in dims if d) >= _MAX_ELEMENTS:
        raise cur.corrupt(f"{what} is impossibly large: {dims}")
    return dims


def _check_known(shape: tuple[int, ...] | None, index: int, *, numpy_shape: bool) -> None:
    """MXNet saves an uninitialised ("none") array as an empty shape: ndim 0 in the classic
    semantics, ndim -1 in numpy semantics (where ndim 0 is a scalar). Such an array has no data."""
    if shape is None or (len(shape) == 0 and not numpy_shape):
        raise UnsupportedArtifactError(f"array {index} is an uninitialised (none) NDArray")


def _read_context(cur: _Cursor, index: int) -> None:
    # Where the array lived when saved; the data is the same, so it is checked, then ignored.
    dev_type, dev_id = cur.unpack("<ii", f"context of array {index}")
    if dev_type not in _DEVICES or dev_id < 0:
        raise cur.corrupt(f"array {index} has an impossible context ({dev_type}, {dev_id})")


def _read_dtype(cur: _Cursor, index: int) -> np.dtype:
    flag = cur.i32(f"type flag of array {index}")
    if flag == _BFLOAT16:
        raise UnsupportedArtifactError(f"array {index} is bfloat16, which topx does not read")
    if flag not in TYPE_FLAGS:
        raise cur.corrupt(f"array {index} has unknown type flag {flag}")
    return TYPE_FLAGS[flag]


def _read_values(cur: _Cursor, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
    count = math.prod(shape)
    raw = cur.take(count * dtype.itemsize, what)
    array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native-order copy that owns its memory


def write_ndarray_list(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Bytes of a named NDArray list of dense arrays, as ``mx.nd.save(fname, arrays)`` writes it
    with MXNet 1.9.1 (V2 arrays on cpu(0), keys in mapping order).

    Arrays must be at least 1-D, non-empty and of a dtype MXNet knows (float32 for parameters);
    the classic (non-numpy) semantics V2 uses cannot express scalars or zero-size dimensions.
    """
    names = [name.encode("utf-8") for name in arrays]
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    parts += [_dense_array_bytes(name, np.asarray(a)) for name, a in arrays.items()]
    parts.append(struct.pack("<Q", len(names)))
    for name in names:
        parts += [struct.pack("<Q", len(name)), name]
    return b"".join(parts)


def _dense_array_bytes(name: str, array: np.ndarray) -> bytes:
    flag = _type_flag(name, array.dtype)
    if array.ndim == 0 or array.size == 0:
        raise ValueError(f"array {name!r} has shape {array.shape}; "
                         "MXNet V2 arrays need ndim ≥ 1 and size ≥ 1")
    shape = struct.pack(f"<i{array.ndim}q", array.ndim, *array.shape)
    header = struct.pack("<Ii", V2_MAGIC, DENSE) + shape + struct.pack("<iii", CPU, 0, flag)
    return header + np.ascontiguousarray(array, dtype=TYPE_FLAGS[flag]).tobytes()


def _type_flag(name: str, dtype: np.dtype) -> int:
    for flag, known in TYPE_FLAGS.items():
        if known == dtype.newbyteorder("<"):
            return flag
    raise ValueError(f"array {name!r} has dtype {dtype}, which MXNet cannot store")
