"""The FM design matrix: ``[user one-hot | item one-hot | user features | item features]``, and
optionally ``| user history]``: one column per item, set in a user's row for each item the user
interacted with in training, scaled by |history|^-½ (as SVD++ does), so a user's vector can be
built from the items it chose.

A row for the pair (u, i) is the sum of two *entity rows* with disjoint columns: the user's
(its id column plus its side features) and the item's. Both engines use this: the local trainer
gathers entity rows per mini-batch, the SageMaker channels materialise pair rows as CSR, and
repackaging multiplies entity rows with the factors. The layout is saved next to the model as
``layout.json`` so a model trained anywhere can be repackaged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from batch.data.interactions import Dataset, FeatureTable
from batch.errors import ArtifactError

LAYOUT_VERSION = 1
HISTORY_EXPONENT = 0.5  # history weights |S_u|^-½: between a sum (0) and a mean (1); 0.5 ranked best


@dataclass(frozen=True)
class DesignLayout:
    """Column blocks of the design matrix; ``feature_dim`` is SageMaker's ``feature_dim``.
    ``user_history``: whether the ``user_history`` block (n_items columns) ends the layout."""

    n_users: int
    n_items: int
    user_feature_columns: tuple[str, ...] = ()
    item_feature_columns: tuple[str, ...] = ()
    user_history: bool = False

    @property
    def item_offset(self) -> int:
        return self.n_users

    @property
    def user_feature_offset(self) -> int:
        return self.n_users + self.n_items

    @property
    def item_feature_offset(self) -> int:
        return self.user_feature_offset + len(self.user_feature_columns)

    @property
    def user_history_offset(self) -> int:
        return self.item_feature_offset + len(self.item_feature_columns)

    @property
    def feature_dim(self) -> int:
        return self.user_history_offset + (self.n_items if self.user_history else 0)

    def blocks(self) -> list[dict]:
        """``[{"name", "offset", "size"}]`` in column order."""
        sizes = [("user", self.n_users), ("item", self.n_items),
                 ("user_features", len(self.user_feature_columns)),
                 ("item_features", len(self.item_feature_columns))]
        if self.user_history:
            sizes.append(("user_history", self.n_items))
        offsets = np.concatenate([[0], np.cumsum([s for _, s in sizes])[:-1]])
        return [{"name": n, "offset": int(o), "size": s} for (n, s), o in zip(sizes, offsets, strict=True)]

    def column_name(self, j: int) -> str:
        """Human-readable name of design column ``j`` (e.g. ``item#17``, ``genre=Comedy``)."""
        for block in reversed(self.blocks()):
            if j >= block["offset"] and block["size"]:
                k = j - block["offset"]
                if block["name"] in ("user", "item"):
                    return f"{block['name']}#{k}"
                if block["name"] == "user_history":
                    return f"history=item#{k}"
                columns = self.user_feature_columns if block["name"] == "user_features" else self.item_feature_columns
                return columns[k]
        raise IndexError(j)

    def save(self, path: str | Path) -> None:
        payload = {"version": LAYOUT_VERSION, "feature_dim": self.feature_dim, "blocks": self.blocks(),
                   **asdict(self)}
        Path(path).write_text(json.dumps(payload, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> DesignLayout:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            layout = cls(int(raw["n_users"]), int(raw["n_items"]), tuple(raw["user_feature_columns"]),
                         tuple(raw["item_feature_columns"]), bool(raw.get("user_history", False)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: not a valid design layout ({exc})") from None
        if layout.feature_dim != raw.get("feature_dim", layout.feature_dim):
            raise ArtifactError(f"{path}: feature_dim disagrees with its blocks")
        return layout


@dataclass(frozen=True)
class Design:
    """Entity rows of the design matrix.

    ``users``: CSR float32 (n_users, feature_dim), row u = user u's id column and features;
    ``items``: CSR float32 (n_items, feature_dim) likewise. A pair's row is ``users[u] + items[i]``.
    """

    layout: DesignLayout
    users: sp.csr_matrix
    items: sp.csr_matrix

    def pair_rows(self, user: np.ndarray, item: np.ndarray) -> sp.csr_matrix:
        """CSR float32 (n, feature_dim): row r is the design row of (user[r], item[r])."""
        return hstack_rows(take_rows(self.users, user), take_rows(self.items, item))


def build_design(
    dataset: Dataset,
    *,
    use_features: bool = True,
    history: bool = False,
    user_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
) -> Design:
    """Entity rows for every user and item of ``dataset``; ``history``: add the user history
    block, built from ``dataset.train``.

    ``user_ids`` / ``item_ids``: boolean masks of the entities that keep their id column (default
    all); repackaging drops the id column of entities that never appeared in training so their
    vectors come from their features alone. Side-feature blocks are scaled so each entity's
    features sum (in absolute value) to 1, the weight of its id column: a user with many genres
    is not louder than one with few.
    """
    uf = dataset.user_features if use_features else None
    itf = dataset.item_features if use_features else None
    layout = DesignLayout(dataset.n_users, dataset.n_items,
                          uf.columns if uf is not None else (), itf.columns if itf is not None else (), history)
    users = _entity_rows(dataset.n_users, 0, user_ids, uf, layout.user_feature_offset, layout.feature_dim)
    if history:
        users = hstack_rows(users, history_rows(dataset, layout.user_history_offset, layout.feature_dim))
    items = _entity_rows(dataset.n_items, layout.item_offset, item_ids, itf, layout.item_feature_offset,
                         layout.feature_dim)
    return Design(layout, users, items)


def _entity_rows(n: int, id_offset: int, keep_id: np.ndarray | None, table: FeatureTable | None,
                 feature_offset: int, width: int) -> sp.csr_matrix:
    keep = np.ones(n, bool) if keep_id is None else np.asarray(keep_id, bool)
    ids = sp.csr_matrix((keep.astype(np.float32), (np.arange(n), id_offset + np.arange(n))), shape=(n, width))
    ids.eliminate_zeros()
    if table is None or table.matrix.shape[1] == 0:
        return ids.astype(np.float32)
    feats = normalise_rows(table.matrix.tocsr().astype(np.float32))
    feats = sp.csr_matrix((feats.data, feats.indices + feature_offset, feats.indptr), shape=(n, width))
    return hstack_rows(ids, feats)


def history_rows(dataset: Dataset, offset: int, width: int) -> sp.csr_matrix:
    """CSR float32 (n_users, width): user u's training items at columns ``offset + item``, each
    |S_u|^-HISTORY_EXPONENT (repeated interactions count once)."""
    seen = dataset.train.matrix(dataset.n_users, dataset.n_items)
    counts = np.diff(seen.indptr)
    scale = np.repeat(np.maximum(counts, 1).astype(np.float64) ** -HISTORY_EXPONENT, counts).astype(np.float32)
    return sp.csr_matrix((scale, seen.indices + offset, seen.indptr), shape=(dataset.n_users, width))


def normalise_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Scale each row to an L1 norm of 1 (empty rows stay empty). Float32 CSR in and out."""
    norms = np.asarray(abs(m).sum(axis=1)).ravel()
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
    out = sp.csr_matrix(sp.diags(scale) @ m, dtype=np.float32)
    out.eliminate_zeros()
    return out


def take_rows(m: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``m[rows]`` for CSR, vectorised (scipy's fancy indexing is slower for long row lists)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = m.indptr[rows], m.indptr[rows + 1]
    lengths = ends - starts
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    src = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    return sp.csr_matrix((m.data[src], m.indices[src], indptr), shape=(len(rows), m.shape[1]))


def hstack_rows(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    """Row-wise union of two CSR matrices of the same shape whose columns never overlap in a
    row: each row holds a's entries, then b's."""
    la, lb = np.diff(a.indptr), np.diff(b.indptr)
    indptr = np.concatenate([[0], np.cumsum(la + lb)])
    dest_a = np.repeat(indptr[:-1] - a.indptr[:-1], la) + np.arange(a.nnz)
    dest_b = np.repeat(indptr[:-1] + la - b.indptr[:-1], lb) + np.arange(b.nnz)
    data = np.empty(indptr[-1], np.float32)
    indices = np.empty(indptr[-1], np.int32)
    data[dest_a], indices[dest_a] = a.data, a.indices
    data[dest_b], indices[dest_b] = b.data, b.indices
    return sp.csr_matrix((data, indices, indptr), shape=a.shape)
