"""Dense numpy arrays from MXNet's sparse storage types, as an NDArray list stores them.

From apache/mxnet ``include/mxnet/ndarray.h``: storage type 1 is row_sparse (aux data: the
sorted, unique indices of the stored rows), 2 is csr (aux data: ``indptr``, then column
``indices``, i.e. ``csr::kIndPtr``, ``csr::kIdx``). MXNet writes int64 aux data.
"""

from __future__ import annotations

import math

import numpy as np

from batch.artifact.errors import CorruptArtifactError, UnsupportedArtifactError

DENSE, ROW_SPARSE, CSR = 0, 1, 2
# A sparse array's dense shape is not backed by bytes in the file, so a damaged one could ask
# for petabytes; densifying stops here (an FM with 10M features × 64 factors needs 2.5 GiB).
MAX_DENSE_BYTES = 2**32


def _corrupt(message: str) -> CorruptArtifactError:
    return CorruptArtifactError(f"NDArray list is corrupt: {message}")


def densify(stype: int, shape: tuple[int, ...], values: np.ndarray, aux: list[np.ndarray],
            where: str) -> np.ndarray:
    """The dense array of ``shape`` that sparse ``values`` and ``aux`` data describe.

    ``stype`` :data:`ROW_SPARSE`: ``values`` (nnz, *shape[1:]), ``aux`` [row indices (nnz,)];
    :data:`CSR`: ``values`` (nnz,), ``aux`` [indptr (rows+1,), column indices (nnz,)].
    ``where`` names the array in error messages.
    """
    if math.prod(shape) * values.itemsize > MAX_DENSE_BYTES:
        raise UnsupportedArtifactError(
            f"sparse {where} has dense shape {shape}, over the {MAX_DENSE_BYTES >> 30} GiB "
            "topx densifies (or a damaged shape)")
    if stype == ROW_SPARSE:
        return _dense_from_row_sparse(shape, values, aux[0], where)
    return _dense_from_csr(shape, values, aux[0], aux[1], where)


def _dense_from_row_sparse(shape: tuple[int, ...], values: np.ndarray, rows: np.ndarray,
                           where: str) -> np.ndarray:
    """Scatter the stored rows ``values`` (nnz, *shape[1:]) to ``rows`` (nnz,) of a dense array."""
    fits = bool(shape) and rows.ndim == 1 and rows.dtype.kind in "iu"
    if not fits or values.shape != rows.shape + shape[1:]:
        raise _corrupt(f"row_sparse {where}: values {values.shape} and indices "
                       f"{rows.shape} do not fit shape {shape}")
    rows = rows.astype(np.int64)  # signed, so differences of unsigned indices cannot wrap
    # MXNet keeps row indices sorted and unique; anything else means damaged bytes.
    in_range = np.all((rows >= 0) & (rows < shape[0]))  # first, so the differences cannot overflow
    if not in_range or np.any(np.diff(rows) <= 0):
        raise _corrupt(f"row_sparse {where}: row indices are not increasing "
                       f"within 0..{shape[0] - 1}")
    dense = np.zeros(shape, values.dtype)
    dense[rows] = values
    return dense


def _dense_from_csr(shape: tuple[int, ...], values: np.ndarray, indptr: np.ndarray,
                    indices: np.ndarray, where: str) -> np.ndarray:
    """Dense (rows, cols) array from CSR ``values``/``indices`` (nnz,) and ``indptr`` (rows+1,)."""
    indptr, indices = _signed(indptr), _signed(indices)
    if not _csr_fits(shape, values, indptr, indices):
        raise _corrupt(f"csr {where}: indptr/indices do not describe shape {shape}")
    dense = np.zeros(shape, values.dtype)
    dense[np.repeat(np.arange(shape[0]), np.diff(indptr)), indices] = values
    return dense


def _signed(index_array: np.ndarray) -> np.ndarray:
    """int64 copy of integer aux data, so unsigned differences cannot wrap around."""
    return index_array.astype(np.int64) if index_array.dtype.kind in "iu" else index_array


def _csr_fits(shape: tuple[int, ...], values: np.ndarray, indptr: np.ndarray,
              indices: np.ndarray) -> bool:
    if len(shape) != 2 or indptr.shape != (shape[0] + 1,) or values.ndim != 1:
        return False
    if indices.shape != values.shape or {indptr.dtype.kind, indices.dtype.kind} - set("iu"):
        return False
    ordered = indptr[0] == 0 and indptr[-1] == values.size and not np.any(np.diff(indptr) < 0)
    return bool(ordered) and not np.any((indices < 0) | (indices >= shape[1]))
