"""The closed-form item-item member of implicit mode's FM: EASE (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019), written as a block of factors next to iALS's.

EASE's item-item weights B minimise ‖X − XB‖² + λ‖B‖² with diag B = 0:

    P = (XᵀX + λI)⁻¹,   B_ji = −P_ji / P_ii (j ≠ i),   B_ii = 0,

and a user's score of item i is Σ_j w_uj B_ji over the user's items j. Here w_uj is the user's
*profile*: 1 per item, plus ``recency`` × ½^(age / half_life) where age is how many of the user's
items came after j (0 for the latest), so recent taste counts more at scoring time while B itself
is fitted on the plain 0/1 matrix X.

The member is exact, not an approximation: with r = min(n_users, n_items) factors,

- more items than users: by Woodbury, P = (I − XᵀAX) / λ with A = (λI + XXᵀ)⁻¹ (n_users²), so
  for i not among the user's items the score is (W XᵀA)_u · X_:i / (λ P_ii). With A^½ from the
  eigendecomposition of λI + XXᵀ, user rows are W Xᵀ A^½ and item rows (Xᵀ A^½)_i / (λ P_ii)
  (r = n_users): items' inner products are then EASE's item-item affinities XᵀAX (scaled), a
  fair space for similar items. On a user's own items this omits B's zero-diagonal correction,
  which ranks nothing (they are excluded from the lists);
- otherwise: user rows W, item rows Bᵀ (r = n_items), every score exact.

So the cost is min(n_users, n_items)³ plus a dense n_users × n_items product: the engine leaves
the member out (and trains iALS alone) beyond ``max_rank`` or ``max_cells``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.artifact import FMModel
from batch.features.design import DesignLayout


@dataclass(frozen=True)
class ItemItemSettings:
    """``weight``: β, the member's scores are added times β (0: no member); ``l2``: EASE's λ;
    ``recency`` and ``half_life``: the profile's extra weight of recent items; ``max_rank`` and
    ``max_cells``: the member is fitted only when min(n_users, n_items) ≤ max_rank and
    n_users × n_items ≤ max_cells."""

    weight: float = 0.5
    l2: float = 300.0
    recency: float = 1.0
    half_life: float = 5.0
    max_rank: int = 1024
    max_cells: int = 20_000_000

    def applies(self, n_users: int, n_items: int) -> bool:
        """Whether the member is fitted for data of this size."""
        return self.weight > 0 and min(n_users, n_items) <= self.max_rank and n_users * n_items <= self.max_cells


def profiles(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, n_users: int, n_items: int,
             recency: float, half_life: float) -> sp.csr_matrix:
    """CSR float64 (n_users, n_items): w_uj = 1 + recency × ½^(age / half_life) at each pair the
    user has, age = the number of the user's other items whose latest interaction came after
    this one's (by timestamp, then input order); 0 elsewhere."""
    user, item = np.asarray(user, np.int64), np.asarray(item, np.int64)
    order = np.lexsort((np.arange(len(user)), np.asarray(timestamp), user))  # user, then time, then input
    u, i = user[order], item[order]
    key = u * n_items + i
    _, last_reversed = np.unique(key[::-1], return_index=True)
    latest = np.sort(len(key) - 1 - last_reversed)  # each pair's latest interaction, still in (user, time) order
    u, i = u[latest], i[latest]
    ends = np.cumsum(np.bincount(u, minlength=n_users))
    age = ends[u] - 1 - np.arange(len(u))
    weight = 1.0 + recency * 0.5 ** (age / half_life) if recency else np.ones(len(u))
    W = sp.csr_matrix((weight, (u, i)), shape=(n_users, n_items))
    W.sort_indices()
    return W


def fit_item_item(X: sp.csr_matrix, W: sp.csr_matrix, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """EASE on the 0/1 matrix ``X`` (CSR (n_users, n_items)) scored with the profiles ``W`` (same
    shape, nonzero where X is): float32 user rows (n_users, r) and item rows (n_items, r) whose
    inner product is Σ_j W_uj B_ji for every item i outside user u's items (module docstring)."""
    if l2 <= 0:
        raise ValueError(f"the item-item member's l2 must be positive, got {l2}")
    X = sp.csr_matrix(X, dtype=np.float64)
    W = sp.csr_matrix(W, dtype=np.float64)
    n_users, n_items = X.shape
    if n_items > n_users:
        # A = Q Λ⁻¹ Qᵀ split evenly, A^½ = Q Λ^-½ (up to a rotation): items' inner products are
        # then XᵀAX, EASE's own item-item affinities, which similar items (cosine) can use
        eigenvalues, Q = np.linalg.eigh((X @ X.T).toarray() + l2 * np.eye(n_users))
        half = Q / np.sqrt(eigenvalues)[None, :]  # (n_users, n_users)
        XtA = np.asarray(X.T @ half)  # (n_items, n_users): rows Xᵀ A^½
        scaled_diag = 1.0 - np.einsum("ir,ir->i", XtA, XtA)  # λ P_ii
        users = np.asarray(W @ XtA)
        items = XtA / scaled_diag[:, None]
    else:
        P = np.linalg.inv((X.T @ X).toarray() + l2 * np.eye(n_items))
        B = -P / np.diag(P)[None, :]
        np.fill_diagonal(B, 0.0)
        users, items = W.toarray(), B.T
    return np.ascontiguousarray(users, np.float32), np.ascontiguousarray(items, np.float32)


def member_user_rows(items: np.ndarray, W: sp.csr_matrix, n_users: int, n_items: int) -> np.ndarray:
    """The member's user rows (float32 (len(W), r)) for the profiles ``W`` (CSR (n, n_items)) from
    its item rows ``items`` (n_items, r) as :func:`fit_item_item` made them on data of
    ``n_users`` × ``n_items``: what it would give a user of that profile, without the training
    matrix. With more items than users the item rows are z_i / (λP_ii), z_i = (XᵀA^½)_i and
    λP_ii = 1 − ‖z_i‖², so s = ‖z_i‖ solves ‖m_i‖ s² + s − ‖m_i‖ = 0 and the user row is
    Σ_j W_uj z_j; otherwise the user row is the profile itself."""
    W = sp.csr_matrix(W, dtype=np.float64)
    if n_items > n_users:
        m = np.asarray(items, np.float64)
        norm = np.linalg.norm(m, axis=1)
        s = 2 * norm / (1 + np.sqrt(1 + 4 * norm**2))
        rows = np.asarray(W @ (m * (1 - s**2)[:, None]))
    else:
        rows = W.toarray()
    return np.ascontiguousarray(rows, np.float32)


def fm_with_item_item(model: FMModel, layout: DesignLayout, users: np.ndarray, items: np.ndarray,
                      weight: float) -> FMModel:
    """``model`` with the member appended as a block of factors of its own: the user id columns
    get ``weight`` × users[u], the item id columns items[i], every other column zeros. The block
    is orthogonal to the FM's own factors, so on the design row of (u, i) the FM's score is
    ``model``'s plus ``weight`` × users[u]·items[i] exactly (for a design without the history
    block: the user's member row sits on the user's id column), and the result is still one FM
    (k = model's k + the member's rank)."""
    if layout.user_history:
        raise ValueError("the item-item member joins an FM trained on sampled negatives only without the user "
                         "history block (train.ials.history applies to the iALS engine)")
    if users.shape != (layout.n_users, items.shape[1]) or items.shape[0] != layout.n_items:
        raise ValueError(f"the item-item member's rows {users.shape} and {items.shape} do not fit the design's "
                         f"{layout.n_users} users and {layout.n_items} items")
    block = np.zeros((model.feature_dim, items.shape[1]), np.float32)
    block[:layout.n_users] = weight * users
    block[layout.item_offset:layout.item_offset + layout.n_items] = items
    return FMModel(V=np.hstack([model.V, block]), w=model.w, b=model.b, predictor_type=model.predictor_type)
