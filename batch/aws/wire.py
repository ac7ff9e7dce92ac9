"""The protocol-buffer wire format with numpy: many messages encoded at once, one decoded at a time.

Encoding works on *ragged batches* (:class:`Ragged`): n byte strings, one per row. Wrapping a
field around n messages is a few array operations (a tag, a length varint and the payload for
every row) instead of n Python calls, which is what lets the recordIO writer pack a whole chunk
of rows at once. Decoding walks one message at a time (records are small); packed arrays of
many records are decoded together with numpy (:func:`unpack_varints`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VARINT, I64, LEN, I32 = 0, 1, 2, 5  # wire types; 3 and 4 (groups) are obsolete and unsupported
_MAX_VARINT = 10
_SHORT = 48  # bytes of packed varints below which a Python loop decodes faster


class WireError(ValueError):
    """Bytes that are not a valid protobuf message; callers add the file and record number."""


@dataclass(frozen=True)
class Ragged:
    """n byte strings, kept as the pieces they are built from until :meth:`tobytes`.

    ``lengths``: int64 (n,), the total bytes of each string. ``pieces``: ``(data, lengths)``
    pairs in order, ``data`` uint8 holding row 0's bytes of that piece, then row 1's, …;
    string r is piece 0's bytes of row r, then piece 1's, and so on. Nesting fields only
    appends pieces, so every byte is copied once, when the whole batch is laid out.
    """

    lengths: np.ndarray
    pieces: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def of(cls, data: np.ndarray, lengths: np.ndarray) -> Ragged:
        return cls(lengths, ((data, lengths),))

    @classmethod
    def const(cls, chunk: bytes, present: np.ndarray) -> Ragged:
        """``chunk`` for each row where ``present`` (bool (n,)) is true, empty bytes elsewhere."""
        data = np.tile(np.frombuffer(chunk, np.uint8), int(np.count_nonzero(present)))
        return cls.of(data, np.where(present, len(chunk), 0).astype(np.int64))

    @classmethod
    def fixed(cls, flat: np.ndarray, indptr: np.ndarray) -> Ragged:
        """Row ``r`` is the little-endian bytes of ``flat[indptr[r]:indptr[r+1]]``, a
        fixed-width numeric array (the packed float values of a CSR row, say)."""
        flat = np.ascontiguousarray(flat, flat.dtype.newbyteorder("<"))
        return cls.of(flat.view(np.uint8), np.diff(indptr).astype(np.int64) * flat.itemsize)

    def __len__(self) -> int:
        return len(self.lengths)

    def tobytes(self) -> bytes:
        """All strings back to back."""
        out = np.empty(int(self.lengths.sum()), np.uint8)
        dest = np.cumsum(self.lengths) - self.lengths  # where each row's next piece goes
        for data, lengths in self.pieces:
            if data.size:
                src = np.cumsum(lengths) - lengths
                out[np.repeat(dest - src, lengths) + np.arange(data.size)] = data
            dest = dest + lengths
        return out.tobytes()


def varints(values: np.ndarray, indptr: np.ndarray | None = None) -> Ragged:
    """One base-128 varint per value (uint64 (m,); int64 is taken as two's complement, which is
    how protobuf writes a negative int32: ten bytes). With ``indptr`` (int (n+1,)), row ``r`` is
    the varints of ``values[indptr[r]:indptr[r+1]]`` back to back, a packed repeated field."""
    v = np.ascontiguousarray(values).astype(np.int64, copy=False).view(np.uint64)
    lengths = np.ones(v.size, np.int64)
    for k in range(1, _MAX_VARINT):
        lengths += v >= np.uint64(1 << (7 * k))
    width = int(lengths.max(initial=1))  # columns beyond the longest varint are all dropped
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    groups = ((v[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    groups[np.arange(width) < (lengths - 1)[:, None]] |= 0x80  # continuation bits
    data = groups[np.arange(width) < lengths[:, None]]
    if indptr is None:
        return Ragged.of(data, lengths)
    ends = np.concatenate([[0], np.cumsum(lengths)])
    return Ragged.of(data, ends[indptr[1:]] - ends[indptr[:-1]])


def concat(parts: list[Ragged]) -> Ragged:
    """Row-wise concatenation: string ``r`` of the result is string ``r`` of every part."""
    lengths = np.sum([p.lengths for p in parts], axis=0, dtype=np.int64)
    return Ragged(lengths, tuple(piece for p in parts for piece in p.pieces))


def field(number: int, payload: Ragged, *, always: bool = False) -> Ragged:
    """A length-delimited field around each row's payload. Rows with an empty payload get no
    field unless ``always`` (protobuf omits an empty packed array, but keeps a set message)."""
    present = np.ones(len(payload), bool) if always else payload.lengths > 0
    size = varints(payload.lengths[present])
    lengths = np.zeros(len(payload), np.int64)
    lengths[present] = size.lengths
    tag = Ragged.const(bytes([number << 3 | LEN]), present)
    return concat([tag, Ragged.of(size.pieces[0][0], lengths), payload])


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``buf[pos:]`` as an unsigned 64-bit int, and the position after it."""
    if pos < len(buf) and buf[pos] < 0x80:  # the common one-byte case (tags, small lengths)
        return buf[pos], pos + 1
    result = 0
    for shift in range(0, 7 * _MAX_VARINT, 7):
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, pos
    raise WireError("varint longer than 10 bytes")


def fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` for each field of a message: an int for VARINT,
    the raw bytes for I64, I32 and LEN. (A list, not a generator: records are small and this
    is the reader's innermost loop.)"""
    out: list[tuple[int, int, int | bytes]] = []
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            out.append((number, wire, value))
            continue
        if wire == LEN:
            size, pos = read_varint(buf, pos)
        elif wire == I64 or wire == I32:
            size = 8 if wire == I64 else 4
        else:
            raise WireError(f"unknown wire type {wire} in field {number}")
        if pos + size > end:
            raise WireError(f"field {number} runs past the end of its message")
        out.append((number, wire, buf[pos:pos + size]))
        pos += size
    return out


def unpack_varints(buf: bytes) -> np.ndarray:
    """All varints of a packed repeated field, as uint64 (n,)."""
    if len(buf) <= _SHORT:  # numpy's per-call overhead exceeds a short Python loop
        out, pos = [], 0
        while pos < len(buf):
            value, pos = read_varint(buf, pos)
            out.append(value)
        return np.array(out, np.uint64)
    b = np.frombuffer(buf, np.uint8)
    if b.size and b[-1] & 0x80:
        raise WireError("truncated varint in a packed field")
    ends = np.flatnonzero(b < 0x80)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if np.any(lengths > _MAX_VARINT):
        raise WireError("varint longer than 10 bytes")
    if not ends.size:
        return np.empty(0, np.uint64)
    shift = (np.arange(b.size) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
    # Each byte owns distinct bits of its value, so the sum is the bitwise OR; uint64 wraps
    # the tenth byte's excess bits exactly as protobuf's decoder drops them.
    return np.add.reduceat((b & 0x7F).astype(np.uint64) << shift, starts)
