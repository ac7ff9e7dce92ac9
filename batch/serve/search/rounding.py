"""Inner products rounded correctly to float32: the value every search engine ranks by.

A BLAS ``sgemm`` adds a pair's d products in an order that depends on where the pair sits in the
blocks and threads of the call (measured: one query gets different float32 results in batches of
different sizes, or just at another row), so its results cannot make lists that match bit for bit
across batchings. The value defined here can: ``inner(q, x)`` is the float32 nearest to the exact
real number q·x (ties to even), a function of the two vectors alone.

It is computed in float64, where each product of two float32 is exact and the sum of d of them is
off by at most γ_d·‖q‖‖x‖ (γ_d = d·2⁻⁵³/(1 − d·2⁻⁵³)) in any order. When that whole error interval
rounds to one float32, that float32 is the answer; otherwise (about one pair in 10⁵, near a rounding
midpoint) :func:`round_exactly` settles it with an exact sum.
"""

from __future__ import annotations

import math

import numpy as np

F32_UNIT = 2.0**-24  # unit roundoff of float32
F64_UNIT = 2.0**-53


def gamma(d: int, unit: float) -> float:
    """Higham's γ_d: the relative error bound of a d-term dot product summed in any order."""
    return d * unit / (1.0 - d * unit)


def rounded_inner(queries64: np.ndarray, query_norms: np.ndarray, items: np.ndarray, item_norms: np.ndarray,
                  columns: np.ndarray) -> np.ndarray:
    """Correctly rounded inner products of each query with some items.

    ``queries64``: float64 (b, d) holding float32 values; ``query_norms``: float64 (b,) their
    Euclidean norms; ``items``: float32 (c, d); ``item_norms``: float64 (c,); ``columns``: int
    (b, j) rows of ``items`` per query. Returns float32 (b, j): ``inner(queries64[r],
    items[columns[r, t]])``.
    """
    # einsum upcasts the float32 rows as it goes: half the gathered bytes of a float64 copy
    approx = np.einsum("bjd,bd->bj", items[columns], queries64)
    return rounded_from(approx, queries64, query_norms, items, item_norms, columns)


def rounded_from(approx: np.ndarray, queries64: np.ndarray, query_norms: np.ndarray, items: np.ndarray,
                 item_norms: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """:func:`rounded_inner` from ``approx``, float64 (b, j): the same inner products summed in
    float64 in any order (by einsum, or by a float64 ``dgemm``); the other arguments as there."""
    # Twice the bound: the norms themselves carry a rounding error, and a margin costs nothing.
    error = 2.0 * gamma(queries64.shape[1], F64_UNIT) * query_norms[:, None] * item_norms[columns]
    result = approx.astype(np.float32)
    unsure = (approx - error).astype(np.float32) != (approx + error).astype(np.float32)
    for row, col in zip(*np.nonzero(unsure), strict=True):  # rare: ~1e-5 of the pairs on random data
        result[row, col] = round_exactly(queries64[row], items[columns[row, col]].astype(np.float64))
    return result + np.float32(0.0)  # -0.0 becomes +0.0, so equal values are equal bit for bit


def round_exactly(query: np.ndarray, item: np.ndarray) -> np.float32:
    """The float32 nearest to the exact dot product of two float64 (d,) vectors holding float32
    values, ties to even. ``math.fsum`` rounds the exact sum once to float64; that second rounding
    only matters when it lands exactly on a float32 midpoint, and then the sign of the exact
    remainder says which way the true value lies."""
    products = (query * item).tolist()  # exact: each is a product of two float32
    total = math.fsum(products)
    nearest = np.float32(total)
    if float(nearest) == total or not math.isfinite(total):
        return nearest
    other = np.nextafter(nearest, np.float32(math.copysign(np.inf, total - float(nearest))))
    if total != (float(nearest) + float(other)) / 2:
        return nearest
    remainder = math.fsum(products + [-total])
    if remainder == 0:
        return nearest  # a true tie: numpy already rounded it to even
    return max(nearest, other) if remainder > 0 else min(nearest, other)
