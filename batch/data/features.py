"""Side features: encoders from catalogue columns to sparse blocks, and :class:`SideTable`, the
features of one catalogue file before they are aligned with the final id map.

Encodings are raw (one-hot 1.0, multi-hot 1.0, numeric standardised); the design-matrix stage
decides how blocks are weighted. An empty value gives no feature, not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.data.interactions import FeatureTable, IdMap
from batch.errors import InvalidValueError

Block = tuple[sp.csr_matrix, tuple[str, ...]]


@dataclass(frozen=True)
class SideTable:
    """Features of the entities listed in one catalogue file, row k describing ``ids[k]``.

    ``ids``: (n,) int64 or unicode, unique; ``matrix``: CSR float32 (n, len(columns));
    ``titles``: (n,) object array of str, or None; ``attributes``: the file's other columns as
    read (name → (n,) values), published as the run's item attributes.
    """

    location: str
    ids: np.ndarray
    matrix: sp.csr_matrix
    columns: tuple[str, ...]
    titles: np.ndarray | None = None
    attributes: dict[str, np.ndarray] | None = None

    def features(self, idmap: IdMap) -> FeatureTable | None:
        """The features with one row per entity of ``idmap`` (which covers ``ids``); None
        when the table has no feature columns."""
        if not self.columns:
            return None
        coo = self.matrix.tocoo()
        rows = idmap.index(self.ids)[coo.row]
        matrix = sp.csr_matrix((coo.data, (rows, coo.col)), shape=(len(idmap), len(self.columns)),
                               dtype=np.float32)
        return FeatureTable(matrix, self.columns)

    def attributes_for(self, idmap: IdMap) -> dict[str, np.ndarray] | None:
        """The raw columns aligned with ``idmap`` (object arrays, None where an entity is not in
        the file); None when the table kept none."""
        if not self.attributes:
            return None
        rows = idmap.index(self.ids)
        out = {}
        for name, values in self.attributes.items():
            column = np.full(len(idmap), None, dtype=object)
            column[rows] = np.asarray(values, dtype=object)
            out[name] = column
        return out

    def titles_for(self, idmap: IdMap) -> np.ndarray | None:
        """Titles aligned with ``idmap`` (object array, None where an entity has no title)."""
        if self.titles is None:
            return None
        out = np.full(len(idmap), None, dtype=object)
        out[idmap.index(self.ids)] = self.titles
        return out


def side_table(location: str, ids: np.ndarray, lines: np.ndarray, blocks: Sequence[Block], *,
               id_column: str, titles: np.ndarray | None = None,
               attributes: dict[str, np.ndarray] | None = None) -> SideTable:
    """Assemble a :class:`SideTable`; an id listed twice raises :class:`InvalidValueError` at
    the second listing (``lines``: the 1-based line or row of every id)."""
    _require_unique(ids, lines, location, id_column)
    n = len(ids)
    matrices = [m for m, _ in blocks] or [sp.csr_matrix((n, 0), dtype=np.float32)]
    matrix = sp.hstack(matrices, format="csr", dtype=np.float32)
    columns = tuple(name for _, names in blocks for name in names)
    if titles is not None:  # an empty title is no title
        titles = np.array([str(t) if str(t).strip() else None for t in titles], dtype=object)
    return SideTable(location, ids, matrix, columns, titles, attributes)


def _require_unique(ids: np.ndarray, lines: np.ndarray, location: str, column: str) -> None:
    by_id = np.lexsort((lines, ids))
    repeat = np.flatnonzero(ids[by_id][1:] == ids[by_id][:-1])
    if len(repeat):
        second = repeat[np.argmin(lines[by_id][repeat + 1])]
        first_line, line = lines[by_id][second], lines[by_id][second + 1]
        raise InvalidValueError(
            f"id {ids[by_id][second]!s} is listed twice (first on line {first_line})",
            file=location, line=int(line), column=column)


def one_hot(prefix: str, values: np.ndarray, order: Sequence[str] = ()) -> Block:
    """``prefix=value`` columns, one per distinct non-empty value: values listed in ``order``
    first, in that order (age buckets read best youngest first), then the rest sorted."""
    values = np.char.strip(np.asarray(values, dtype=str))
    present = np.flatnonzero(np.char.str_len(values) > 0)
    names, col = np.unique(values[present], return_inverse=True)
    rank = {name: k for k, name in enumerate(order)}
    new_order = sorted(range(len(names)), key=lambda k: (rank.get(names[k], len(rank)), names[k]))
    position = np.empty(len(names), np.int64)
    position[new_order] = np.arange(len(names))
    columns = [f"{prefix}={names[k]}" for k in new_order]
    return _block(len(values), present, position[col.reshape(-1)], columns)


def multi_hot_text(prefix: str, values: np.ndarray, sep: str = "|") -> Block:
    """``prefix=token`` columns from ``sep``-separated lists ("Action|Comedy")."""
    tokens = [[t.strip() for t in str(v).split(sep)] for v in np.asarray(values).tolist()]
    rows = np.repeat(np.arange(len(tokens)), [len(t) for t in tokens])
    flat = np.array([t for row in tokens for t in row], dtype=str)
    keep = np.char.str_len(flat) > 0
    names, col = np.unique(flat[keep], return_inverse=True)
    columns = [f"{prefix}={v}" for v in names.tolist()]
    return _block(len(tokens), rows[keep], col.reshape(-1), columns)


def multi_hot_flags(prefix: str, names: Sequence[str], flags: np.ndarray) -> Block:
    """``prefix=name`` columns from an (n, len(names)) 0/1 matrix (u.item's genre flags)."""
    rows, col = np.nonzero(np.asarray(flags))
    return _block(len(flags), rows, col, [f"{prefix}={name}" for name in names])


def standardised(name: str, values: np.ndarray) -> Block:
    """One numeric column, standardised to mean 0 and standard deviation 1 over the entities
    that have a value; NaN (missing) gives no feature."""
    values = np.asarray(values, dtype=np.float64)
    known = np.isfinite(values)
    mean = values[known].mean() if known.any() else 0.0
    std = values[known].std() if known.any() else 0.0
    scaled = np.where(known, (values - mean) / (std if std > 0 else 1.0), 0.0)
    rows = np.flatnonzero(scaled != 0)
    matrix = sp.csr_matrix((scaled[rows].astype(np.float32), (rows, np.zeros(len(rows), np.int64))),
                           shape=(len(values), 1))
    return matrix, (name,)


def _block(n: int, rows: np.ndarray, cols: np.ndarray, names: list[str]) -> Block:
    data = np.ones(len(rows), np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(n, len(names)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # a token listed twice is still one genre
    return matrix, tuple(names)
