"""Exact inner-product top-k: float32 BLAS to find a few candidates, exact rounding to rank them.

Each of a few threads takes 128 queries at a time and does everything for them with one BLAS
thread (:mod:`.blas`): its scores are still warm when it selects from them, and no BLAS pool
spins idle against the selection (measured on 2 cores: ~10-15% faster than one pooled sgemm).
Memory: 4 (8 in float64) · min(batch_size, 128) · n_candidates bytes of scores per thread (25 MB for
50k items), a float32 copy of the candidate items (and a float64 one), and a few MB of temporaries
per thread. Per 128 queries:

1. ``S = Q · Aᵀ`` with one float32 ``sgemm`` over the candidate items; excluded pairs are set to
   -inf in place, so a user's seen items cost nothing however many there are.
2. The ``kk = k + margin`` largest entries per row, found without a full selection: columns are
   dealt into G strided groups (group g = columns g, g+G, g+2G, …); the kk groups with the largest
   maxima hold the kk largest entries (each of those groups has a member at least as large as
   anything outside them), so only kk·w of the row's entries are partitioned; the kk best groups
   are found the same way among the G maxima, and so on (:mod:`.select`).
3. Their inner products are recomputed rounded exactly (:mod:`.rounding`) and sorted by
   (inner desc, item asc). Recomputing gathers each fetched item's row, which costs some 60 times
   what scoring a column in the ``sgemm`` does; so when lists are long next to the candidates
   (``kk`` over 1/32 of them, e.g. an audience of 1,000 among 20k users) step 1 is one float64
   ``dgemm`` instead, whose scores are accurate enough to round from directly (twice the sgemm's
   cost and the block's memory, none of the gathers: 30 % faster per audience query).
4. Proof that nothing was missed: an item left out has S ≤ θ (the kk-th largest S of its row; for
   long lists, a threshold every fetched S reaches), so its true inner product is
   ≤ θ + γ_d·‖q‖·max‖a‖ (the sgemm error bound, or the dgemm's). A row whose k-th inner
   product exceeds that is final; any other row (near-ties across the margin) is selected again
   with a 4× wider margin, until it is final or holds every candidate.

The lists are thus a function of the vectors alone — not of the batch size, the other queries in a
batch, the BLAS library or the thread count — which lets differently batched engines (the
SageMaker emulator's transform) reproduce them exactly.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from batch.errors import StageError
from batch.log import progress
from batch.serve.search.blas import one_blas_thread
from batch.serve.search.rounding import F32_UNIT, F64_UNIT, gamma, rounded_from, rounded_inner
from batch.serve.search.select import best_k, largest
from batch.serve.search.table import ItemTable, empty_slots

MARGIN = 8  # extra candidates per row beyond k: covers float32 reorderings near the k-th item
WIDEN = 4  # margin growth for rows whose k-th item is not yet proven
CHUNK = 128  # queries a thread scores and selects at a time: its scores stay in cache
WIDE = 32  # float64 scores when the candidates are fewer than WIDE × (k + MARGIN)
F32_SAFE = 1e37  # ‖q‖·‖a‖ below this cannot overflow float32 in any summation order


class NonFiniteVectorError(StageError):
    """User or item vectors hold NaN or infinity, or are too large for float32 inner products."""


def exact_topk(queries: np.ndarray, items: np.ndarray, k: int, *, exclude: sp.csr_matrix | None = None,
               candidates: np.ndarray | None = None, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` items with the largest inner product for each query, best first, ties to the
    smaller item index.

    ``queries``: float32 (n, d); ``items``: float32 (m, d); ``exclude``: CSR (n, m), stored True
    entries of row r are items query r must not get; ``candidates``: bool (m,) items allowed at
    all (default every item). Returns ``item`` int32 (n, k) and ``inner`` float32 (n, k), the
    inner product rounded exactly (:mod:`.rounding`); slots beyond the allowed items hold item -1
    and inner -inf. Memory is bounded by ``batch_size`` × candidate items (see the module).
    """
    queries, items = finite_vectors(queries, "query"), finite_vectors(items, "item")
    if queries.shape[1] != items.shape[1] or k < 1 or batch_size < 1:
        raise ValueError(f"need equal widths, k ≥ 1, batch_size ≥ 1: queries {queries.shape}, items {items.shape}, "
                         f"k={k}, batch_size={batch_size}")
    exclude = _checked_exclude(exclude, len(queries), len(items))
    table = ItemTable.build(items, candidates, k + MARGIN)
    if table.size < WIDE * (k + MARGIN):
        table = table.with_float64()
    _check_range(queries, table)
    search = _Search(queries, table, k, exclude)
    if table.size and len(queries):
        search.run(batch_size)
    return search.item, search.inner


def _workers() -> int:
    """Search threads: one per usable core (numpy releases the GIL in sgemm and the selection)."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, min(8, len(usable)))


class _Search:
    """One :func:`exact_topk` call: inputs, the item table and the output arrays it fills."""

    def __init__(self, queries: np.ndarray, table: ItemTable, k: int, exclude: sp.csr_matrix | None):
        self.queries, self.table, self.k, self.exclude = queries, table, k, exclude
        self.item, self.inner = empty_slots(len(queries), k)
        self.buffers: dict[int, np.ndarray] = {}  # per thread, reused: page faults only once

    def run(self, batch_size: int) -> None:
        n = len(self.queries)
        rows = max(1, min(CHUNK, batch_size))
        firsts = range(0, n, rows)
        with ThreadPoolExecutor(_workers(), initializer=one_blas_thread) as pool:
            # every chunk queued at once: no thread waits for another at a batch boundary
            done = pool.map(self._chunk, firsts, [min(first + rows, n) for first in firsts])
            for _ in progress(done, total=len(firsts), desc="exact search", unit="chunk"):
                pass

    def _chunk(self, first: int, stop: int) -> None:
        """Score and select queries ``first : stop`` (at most CHUNK) in the calling thread."""
        rows = slice(first, stop)
        block, queries64 = self._buffer(stop - first), self.queries[rows].astype(np.float64)
        if self.table.block64 is None:
            np.matmul(self.queries[rows], self.table.block.T, out=block)
        else:
            np.matmul(queries64, self.table.block64.T, out=block)
        _ban(block, self.table, self.exclude, rows)
        position, self.inner[rows] = _best(block, queries64, self.table, self.k)
        self.item[rows] = np.where(position >= 0, self.table.index[np.maximum(position, 0)], -1)

    def _buffer(self, rows: int) -> np.ndarray:
        buffer = self.buffers.get(threading.get_ident())
        if buffer is None:
            dtype = np.float32 if self.table.block64 is None else np.float64
            buffer = np.empty((min(CHUNK, len(self.queries)), len(self.table.block)), dtype)
            self.buffers[threading.get_ident()] = buffer
        return buffer[:rows]


def finite_vectors(matrix: np.ndarray, name: str) -> np.ndarray:
    """``matrix`` as a C-contiguous float32 (n, d) array; refuses NaN and infinity."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array, not shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise NonFiniteVectorError(f"the {name} vectors hold NaN or infinity: the model is broken")
    return matrix


def _checked_exclude(exclude: sp.csr_matrix | None, n: int, m: int) -> sp.csr_matrix | None:
    if exclude is None:
        return None
    if exclude.shape != (n, m):
        raise ValueError(f"exclude must be ({n}, {m}) (queries × items), not {exclude.shape}")
    exclude = sp.csr_matrix(exclude, dtype=bool)
    exclude.eliminate_zeros()  # a stored False excludes nothing
    return exclude


def _check_range(queries: np.ndarray, table: ItemTable) -> None:
    largest = float(np.sqrt(np.einsum("nd,nd->n", queries, queries, dtype=np.float64)).max(initial=0))
    if largest * float(table.norms.max(initial=0)) > F32_SAFE:
        raise NonFiniteVectorError("user and item vectors are so large that their inner products overflow float32")


def _ban(block: np.ndarray, table: ItemTable, exclude: sp.csr_matrix | None, rows: slice) -> None:
    """-inf for the padding columns and for each row's excluded candidates (in place)."""
    block[:, table.size:] = -np.inf
    if exclude is None:
        return
    part = exclude[rows]
    position = table.position[part.indices]
    row = np.repeat(np.arange(part.shape[0], dtype=np.int64), np.diff(part.indptr))
    keep = position >= 0  # excluded non-candidates are not in the block anyway
    block.ravel()[row[keep] * block.shape[1] + position[keep]] = -np.inf


def _best(block: np.ndarray, queries64: np.ndarray, table: ItemTable, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``table`` (int64 (b, k), -1 when empty) and their exact inner products (float32
    (b, k), -inf when empty) of the best ``k`` per row of the score ``block`` (float32, or
    float64 when ``table.block64`` is set; (b, c_pad))."""
    norms = np.sqrt(np.einsum("bd,bd->b", queries64, queries64))
    position = np.full((len(block), k), -1, np.int64)
    inner = np.full((len(block), k), -np.inf, np.float32)
    pending, fetch = np.arange(len(block)), min(k + MARGIN, len(table.block))
    while len(pending):
        rows = block if len(pending) == len(block) else block[pending]  # no copy on the first pass
        cols, scores, bound = largest(rows, fetch, table.widths)
        found, value, proven = _rank(cols, scores, bound, queries64[pending], norms[pending], table, k)
        done = proven | (fetch >= len(table.block))
        position[pending[done]], inner[pending[done]] = found[done], value[done]
        pending, fetch = pending[~done], min(fetch * WIDEN, len(table.block))
    return position, inner


def _rank(cols: np.ndarray, scores: np.ndarray, bound: np.ndarray, queries64: np.ndarray, norms: np.ndarray,
          table: ItemTable, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort fetched columns by exact inner product; return the best ``k`` (table rows int64 (b, k)
    with -1 for banned slots, inner float32 (b, k)) and whether each row is proven final (bool (b,)).
    ``scores``: the block's float32 or float64 scores of the fetched columns (-inf: banned or an
    empty slot); ``bound``: float64 (b,), no score left out exceeds it (:func:`.select.largest`)."""
    allowed = scores > -np.inf
    if scores.dtype == np.float64:  # a float64 sum already: round it, no gathering
        exact = rounded_from(scores, queries64, norms, table.block, table.norms, cols)
    else:
        exact = rounded_inner(queries64, norms, table.block, table.norms, cols)
    cols, inner = best_k(cols, np.where(allowed, exact, -np.inf).astype(np.float32), k)
    short = allowed.shape[1] < k  # the table holds fewer than k candidates: all were fetched
    return cols, inner, short | _proven(inner[:, k - 1], bound, scores.dtype, norms, table)


def _proven(kth: np.ndarray, bound: np.ndarray, dtype: np.dtype, norms: np.ndarray, table: ItemTable) -> np.ndarray:
    """Whether no unfetched item can reach the k-th inner product ``kth`` (float32 (b,)): true when
    the ``bound`` on unfetched scores θ is -inf (every allowed item was fetched), or when the k-th
    exceeds θ + the score's error bound (sgemm's, or dgemm's for a float64 score ``dtype``)."""
    unit = F64_UNIT if dtype == np.float64 else F32_UNIT
    error = 2.0 * gamma(table.block.shape[1], unit) * norms * float(table.norms.max(initial=0))
    ceiling = (bound + error + 1e-30).astype(np.float32)  # 1e-30: room for flushed subnormals
    return np.isneginf(bound) | (kth > ceiling)
