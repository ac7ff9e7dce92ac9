"""The candidate items of one search, laid out once for the exact and approximate kernels."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class ItemTable:
    """The candidate items, laid out for :func:`~batch.serve.search.exact.exact_topk`.

    ``index``: int64 (c,) original item indices, ascending. ``position``: int64 (m,) an item's
    row in the table, or -1 if not a candidate. ``block``: float32 (c_pad, d), C-contiguous, the
    candidates padded with zero rows to a multiple of the product of ``widths``. ``norms``: float64
    (c_pad,) their Euclidean norms. ``widths``: the group width of each selection level
    (:func:`group_widths`). ``block64``: ``block`` as float64, for searches that score in float64
    (:func:`~batch.serve.search.exact.exact_topk` with long lists), else None.
    """

    index: np.ndarray
    position: np.ndarray
    block: np.ndarray
    norms: np.ndarray
    widths: tuple[int, ...]
    block64: np.ndarray | None = None

    @classmethod
    def build(cls, items: np.ndarray, candidates: np.ndarray | None, fetch: int) -> ItemTable:
        """The table of ``items`` (float32 (m, d)) allowed by ``candidates`` (bool (m,), None = all),
        grouped for fetching about ``fetch`` columns per row."""
        if candidates is not None and (candidates.dtype != bool or candidates.shape != (len(items),)):
            raise ValueError(f"candidates must be a bool mask of {len(items)} items, not {candidates.dtype} "
                             f"{candidates.shape}")
        index = np.arange(len(items), dtype=np.int64) if candidates is None else np.flatnonzero(candidates)
        position = np.full(len(items), -1, np.int64)
        position[index] = np.arange(len(index))
        widths = group_widths(len(index), fetch)
        multiple = int(np.prod(widths))
        block = np.zeros((-(-len(index) // multiple) * multiple, items.shape[1]), np.float32)
        block[:len(index)] = items[index]
        norms = np.sqrt(np.einsum("cd,cd->c", block, block, dtype=np.float64))
        return cls(index, position, block, norms, widths)

    def with_float64(self) -> ItemTable:
        """This table with ``block64`` filled in."""
        return replace(self, block64=self.block.astype(np.float64))

    @property
    def size(self) -> int:
        return len(self.index)


def group_widths(n_candidates: int, fetch: int) -> tuple[int, ...]:
    """Group widths per selection level, for rows of ``n_candidates`` scores of which ``fetch``
    are wanted: none when a row is under 16 × fetch (one partition is cheapest); else 4 at the
    first level (its members are gathered from the big score block, so few per group) and the
    power of two nearest √(n / fetch), at most 32, at the next ones, which work on group maxima."""
    widths: list[int] = []
    n = n_candidates
    while n >= 16 * max(fetch, 1):
        width = 4 if not widths else int(min(32, 2 ** round(np.log2(np.sqrt(n / fetch)))))
        widths.append(width)
        n //= width
    return tuple(widths)


def empty_slots(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Result arrays with every slot empty: item int32 (n, k) of -1, inner float32 (n, k) of -inf."""
    return np.full((n, k), -1, np.int32), np.full((n, k), -np.inf, np.float32)
