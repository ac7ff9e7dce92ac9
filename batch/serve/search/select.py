"""Top entries of score rows without sorting them: strided group maxima, level by level."""

from __future__ import annotations

import numpy as np


def largest(block: np.ndarray, fetch: int, widths: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns (int64 (b, j), j ≥ ``fetch``) holding the ``fetch`` largest entries of each row of
    ``block`` (float32 or float64 (b, n), n a multiple of the product of ``widths``), in no order,
    those entries (b, j), and a bound (float64 (b,)) that no entry left out exceeds (-inf: every
    entry above -inf is among the columns). Slots beyond a row's own hold column 0 and -inf (only
    :func:`_above_threshold` leaves any). Each level deals columns into n/w strided groups (group
    g = columns g, g + n/w, …, a vectorised max over w slabs), finds the best groups by the same
    method one level down, and partitions only their members."""
    b, n = block.shape
    if not widths or fetch >= n // widths[0]:
        return _fetched(block, np.broadcast_to(np.arange(n, dtype=np.int64), block.shape), fetch)
    width, groups = widths[0], n // widths[0]
    if len(widths) == 1:
        return _above_threshold(block, fetch, width)
    chosen, maxima, _ = largest(_slab_max(block.reshape(b, width, groups)), fetch, widths[1:])
    members = (chosen[:, None, :] + (np.arange(width, dtype=np.int64) * groups)[:, None]).reshape(b, -1)
    values = np.take(block, members + (np.arange(b, dtype=np.int64) * n)[:, None])
    # an empty slot's members (group 0's again) may not be fetched twice: -inf, below the ≥ fetch real ones
    return _fetched(np.where(np.tile(maxima == -np.inf, width), -np.inf, values), members, fetch)


def _fetched(values: np.ndarray, cols: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`largest`'s answer from candidate ``values`` (b, w) at block columns ``cols`` (int64
    (b, w)) that hold each row's ``fetch`` largest entries: those, and the smallest of them as the
    bound (every other entry is at most that)."""
    best = argtop(values, fetch)
    values = np.take_along_axis(values, best, axis=1)
    return np.take_along_axis(cols, best, axis=1), values, values.min(axis=1).astype(np.float64)


def _above_threshold(block: np.ndarray, fetch: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`largest` over one level of groups, for a ``fetch`` that is a large share of the
    groups (long lists: audiences): θ, the ``fetch``-th largest group maximum, is a value at least
    ``fetch`` entries reach, so the ``fetch`` largest entries are among those ≥ θ (on random data
    some 9 % more than ``fetch``); one pass gathers all of them, and θ bounds the rest (each is
    below it). Cheaper there than partitioning the group maxima by index and then the best groups'
    members, and than picking exactly ``fetch`` of the gathered ones: the caller ranks them all."""
    b, n = block.shape
    groups = n // width
    maxima = _slab_max(block.reshape(b, width, groups))
    if maxima.dtype == np.float32:
        theta = np.partition(maxima, groups - fetch, axis=1)[:, groups - fetch]
    else:  # partitioned as float32, 1.5× faster; one float32 step down stays ≤ the float64 θ
        theta = np.partition(maxima.astype(np.float32), groups - fetch, axis=1)[:, groups - fetch]
        theta = np.nextafter(theta, np.float32(-np.inf)).astype(block.dtype)
    if np.isneginf(theta).any():  # a row with fewer than fetch allowed groups: every entry is ≥ θ
        return largest(block, fetch, ())
    flat = np.flatnonzero(block >= theta[:, None])  # row by row, columns ascending
    row = flat // n
    counts = np.bincount(row, minlength=b)
    wide = int(counts.max())
    # the t-th of row r's entries goes to slot r·wide + t of the padded (b, wide) result
    slot = np.arange(len(flat), dtype=np.int64) + np.repeat(np.arange(b, dtype=np.int64) * wide
                                                            - (np.cumsum(counts) - counts), counts)
    cols = np.zeros(b * wide, np.int64)
    values = np.full(b * wide, -np.inf, block.dtype)
    cols[slot], values[slot] = flat - row * n, block.ravel()[flat]
    return cols.reshape(b, wide), values.reshape(b, wide), theta.astype(np.float64)


def _slab_max(slabs: np.ndarray) -> np.ndarray:
    """Elementwise max over axis 1 of float32 (b, w, g): a chain of in-place maxima, a little
    faster than numpy's reduction over a middle axis."""
    out = np.maximum(slabs[:, 0], slabs[:, 1])
    for j in range(2, slabs.shape[1]):
        np.maximum(out, slabs[:, j], out=out)
    return out


def argtop(values: np.ndarray, fetch: int) -> np.ndarray:
    """Column indices (int64 (b, fetch)) of the ``fetch`` largest entries per row, in no order."""
    width = values.shape[1]
    if fetch >= width:
        return np.broadcast_to(np.arange(width, dtype=np.int64), values.shape).copy()
    return np.argpartition(values, width - fetch, axis=1)[:, width - fetch:].astype(np.int64)


def best_k(cols: np.ndarray, inner: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` columns (int64 (b, j), ascending column = ascending item index; -1 or any
    column where inner is -inf) with the largest ``inner`` (float32 (b, j), -inf = not allowed), by
    (inner desc, column asc); padded to k slots, empty ones holding column -1 and inner -inf."""
    # One sort of packed uint64 keys, (order-preserving bits of -inner) << 32 | column: about
    # twice as fast as a two-key lexsort.
    bits = inner.view(np.int32).astype(np.int64)
    ordered = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # same order as the floats
    packed = ((0x7FFFFFFF - ordered).astype(np.uint64) << np.uint64(32)) | np.maximum(cols, 0).astype(np.uint64)
    packed = np.sort(packed, axis=1)[:, :k]
    cols = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    ordered = 0x7FFFFFFF - (packed >> np.uint64(32)).astype(np.int64)
    inner = np.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).astype(np.int32).view(np.float32)
    if inner.shape[1] < k:
        pad = ((0, 0), (0, k - inner.shape[1]))
        cols, inner = np.pad(cols, pad, constant_values=-1), np.pad(inner, pad, constant_values=-np.inf)
    cols[inner == -np.inf] = -1
    return cols, inner
