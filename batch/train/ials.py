"""Implicit alternating least squares (iALS) for the FM's one-hot user × item interaction.

Every (user, item) pair is a sample: an observed pair has target 1 and weight ``c_ui`` (1 by
default), and *every* pair, observed or not, is a weak negative with target 0 and weight α0
(``unobserved_weight``). With score ŷ_ui = ⟨x_u, x_i⟩ + b_u + b_i the objective is

    L = Σ_{(u,i)∈S} c_ui (ŷ_ui − 1)² + α0 Σ_u Σ_i ŷ_ui² + Σ_u λ_u ‖[x_u, b_u]‖² + Σ_i λ_i ‖[x_i, b_i]‖²

with frequency-scaled regularisation λ_u = λ (|S_u| + α0 n_items)^ν (Rendle et al., "Revisiting
the Performance of iALS on Item Recommendation Benchmarks", RecSys 2022). Fixing one side, each
row of the other is a ridge regression on the augmented vector [x, b]; the all-pairs term enters
through the (k+1)×(k+1) Gramian of the fixed side (the "Gramian trick"), so an epoch costs
O(|S|·k + n·k²) and no negative is ever sampled. Rows are solved together by conjugate gradient,
warm-started from the previous epoch's values.

This is exactly an FM on ``[user one-hot | item one-hot]``: V's user rows are x_u, its item rows
x_i, w holds b_u and b_i, so the artifact is SageMaker's FM model.tar.gz unchanged.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

log = logging.getLogger("topx.train")

# entries a conjugate-gradient product gathers at once: bounds the (entries, k+1) temporaries
CHUNK_ENTRIES = 1 << 20


@dataclass(frozen=True)
class IALSFactors:
    """``user``: float32 (n_users, k); ``item``: float32 (n_items, k); ``user_bias``: float32
    (n_users,); ``item_bias``: float32 (n_items,). Score of (u, i) = user[u]·item[i] + user_bias[u]
    + item_bias[i]. ``history``: float32 (n_history_columns, k), Y when users are their history
    (then ``user`` is H Y + ``user_id`` and ``user_bias`` zero); ``user_id``: float32 (n_users, k),
    the part of a history user's vector on its id column (None: none), block-orthogonal to Y."""

    user: np.ndarray
    item: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    history: np.ndarray | None = None
    user_id: np.ndarray | None = None

    def scores(self, users: np.ndarray | None = None) -> np.ndarray:
        """float32 (len(users), n_items) scores of every item for ``users`` (default all)."""
        u = slice(None) if users is None else users
        return self.user[u] @ self.item.T + self.user_bias[u, None] + self.item_bias[None, :]


@dataclass(frozen=True)
class IALSSettings:
    """``factors``: k; ``unobserved_weight``: α0; ``reg``: λ; ``reg_exponent``: ν; ``epochs``;
    ``cg_steps``: conjugate-gradient steps per row and epoch (0: exact Cholesky solves);
    ``init_sigma``: standard deviation of the initial factors times √k; ``history_reg``: λ of the
    history factors Y (when users are their history); ``seed``."""

    factors: int = 64
    unobserved_weight: float = 0.1
    reg: float = 0.01
    reg_exponent: float = 1.0
    epochs: int = 10
    cg_steps: int = 3
    init_sigma: float = 0.1
    history_reg: float = 0.03
    seed: int = 0


class _Side:
    """One side's observed entries: CSR rows of the weight matrix, as torch tensors."""

    def __init__(self, torch, R: sp.csr_matrix, device, dtype=None):
        dtype = dtype or torch.float32
        counts = np.diff(R.indptr)
        self.torch, self.n, self.shape = torch, R.shape[0], R.shape
        self.counts = torch.from_numpy(counts).to(device, dtype)
        self.indptr = R.indptr.astype(np.int64)
        self.crow = torch.from_numpy(self.indptr).to(device)
        self.row = torch.from_numpy(np.repeat(np.arange(self.n, dtype=np.int64), counts)).to(device)
        self.col = torch.from_numpy(R.indices.astype(np.int64)).to(device)
        self.weight = torch.from_numpy(R.data).to(device, dtype)

    def sparse(self, values):
        """The rows' pattern with ``values`` (entries,) as a torch sparse CSR tensor."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return self.torch.sparse_csr_tensor(self.crow, self.col, values, size=self.shape,
                                                check_invariants=False)

    def chunks(self, max_rows: int):
        """Row-aligned slices ``(start_row, stop_row, entries)`` of at most about CHUNK_ENTRIES
        entries and ``max_rows`` rows."""
        start_row = 0
        while start_row < self.n:
            stop_row = int(np.searchsorted(self.indptr, self.indptr[start_row] + CHUNK_ENTRIES, "right")) - 1
            stop_row = min(max(stop_row, start_row + 1), self.n, start_row + max_rows)
            yield start_row, stop_row, slice(int(self.indptr[start_row]), int(self.indptr[stop_row]))
            start_row = stop_row


def fit_ials(torch, R: sp.csr_matrix, settings: IALSSettings, *, history: sp.csr_matrix | None = None,
             device: str = "cpu", on_epoch=None) -> IALSFactors:
    """Fit on ``R``: CSR float32 (n_users, n_items), R[u, i] = c_ui > 0 for observed pairs.

    ``history``: CSR float32 (n_users, n_cols) user features (the user history block): users
    then have no free vector and no bias; their vector is ``history @ Y`` and the (n_cols, k)
    matrix Y is fitted instead, regularised by ``history_reg`` (frequency-scaled likewise).
    ``on_epoch(epoch)`` is called after each epoch (returning True stops training).
    """
    R = sp.csr_matrix(R, dtype=np.float32)
    R.sum_duplicates()
    k, s = settings.factors, settings
    gen = torch.Generator().manual_seed(s.seed)
    # augmented rows [x, b]; the other side sees [x, 1] and an offset b
    U = (torch.randn(R.shape[0], k + 1, generator=gen) * (s.init_sigma / k ** 0.5)).to(device)
    Q = (torch.randn(R.shape[1], k + 1, generator=gen) * (s.init_sigma / k ** 0.5)).to(device)
    U[:, k] = 0
    Q[:, k] = 0
    users, items = _Side(torch, R, device), _Side(torch, R.T.tocsr(), device)
    hist = None if history is None else _History(torch, history, k, s, device, gen)
    for epoch in range(s.epochs):
        if hist is None:
            _solve(torch, users, U, Q, s)
        else:
            hist.solve(users, Q)
            U = hist.user_rows()
        _solve(torch, items, Q, U, s)
        if on_epoch is not None and on_epoch(epoch):
            break
    return _factors(U, Q, k, None if hist is None else hist.Y)


def _factors(U, Q, k: int, Y=None) -> IALSFactors:
    u, i = U.cpu().numpy(), Q.cpu().numpy()
    return IALSFactors(np.ascontiguousarray(u[:, :k]), np.ascontiguousarray(i[:, :k]),
                       np.ascontiguousarray(u[:, k]), np.ascontiguousarray(i[:, k]),
                       None if Y is None else Y.cpu().numpy())


def _design(torch, other):
    """The fixed side as regressors [x, 1] (n, k+1) and its offsets b (n,)."""
    Z = other.clone()
    offset = Z[:, -1].clone()
    Z[:, -1] = 1
    return Z, offset


def _normal_equations(torch, side: _Side, other, s: IALSSettings):
    """Each row's system (Σ_{j∈S_r} c_rj z_j z_jᵀ + α0 ZᵀZ + λ_r I) a_r = rhs_r, given the other
    side: returns Z (n_other, k+1), α0 ZᵀZ, λ_r (n,) and rhs (n, k+1)."""
    Z, offset = _design(torch, other)
    gram = s.unobserved_weight * (Z.T @ Z)  # (k+1, k+1): the all-pairs term
    reg = s.reg * (side.counts + s.unobserved_weight * len(Z)) ** s.reg_exponent  # (n,)
    rhs = side.sparse(side.weight * (1 - offset.index_select(0, side.col))) @ Z
    rhs -= s.unobserved_weight * (Z.T @ offset)
    return Z, gram, reg, rhs


def _solve(torch, side: _Side, A, other, s: IALSSettings) -> None:
    """Update every row of ``A`` (in place) given the other side's rows ``other``."""
    Z, gram, reg, rhs = _normal_equations(torch, side, other, s)
    if s.cg_steps == 0:
        _cholesky(torch, side, A, Z, gram, reg, rhs)
    else:
        _conjugate_gradient(lambda X: _matvec(torch, side, Z, gram, reg, X), A, rhs, s.cg_steps, rowwise=True)


class _History:
    """Users as their history: P = H Y, fitted through Y by conjugate gradient on all of Y at once
    (the users' systems are coupled through the items they share)."""

    def __init__(self, torch, H: sp.csr_matrix, k: int, s: IALSSettings, device, gen, dtype=None):
        H = sp.csr_matrix(H, dtype=np.float32)
        self.torch, self.s, self.k = torch, s, k
        self.H, self.Ht = _Side(torch, H, device, dtype), _Side(torch, H.T.tocsr(), device, dtype)
        self.Y = (torch.randn(H.shape[1], k, generator=gen) * (s.init_sigma / k ** 0.5)).to(device, dtype)
        # frequency-scaled like the rows it stands in for: users with the column, plus α0 × users
        self.reg = s.history_reg * (self.Ht.counts + s.unobserved_weight * H.shape[0]) ** s.reg_exponent

    def user_rows(self, Y=None):
        """(n_users, k+1): [H Y, 0] (no user bias)."""
        P = self.H.sparse(self.H.weight) @ (self.Y if Y is None else Y)
        return self.torch.cat([P, self.torch.zeros(len(P), 1, dtype=P.dtype, device=P.device)], 1)

    def solve(self, users: _Side, Q) -> None:
        torch, k = self.torch, self.k
        Z, gram, _, rhs = _normal_equations(torch, users, Q, self.s)
        no_reg = torch.zeros(users.n, dtype=Z.dtype, device=Z.device)
        Ht = self.Ht.sparse(self.Ht.weight)

        def hessian(D):
            return Ht @ _matvec(torch, users, Z, gram, no_reg, self.user_rows(D))[:, :k] + self.reg.unsqueeze(1) * D

        _conjugate_gradient(hessian, self.Y, Ht @ rhs[:, :k], max(self.s.cg_steps, 1), rowwise=False)


def _matvec(torch, side: _Side, Z, gram, reg, X):
    """(n, k+1): row r = (Σ_{j∈S_r} c_rj z_j z_jᵀ + α0 ZᵀZ + λ_r I) x_r for every row of X.
    The observed part is a sampled product (x_r·z_j at the observed entries only) and a sparse
    product, so no (entries, k+1) array is ever built."""
    dots = torch.sparse.sampled_addmm(side.sparse(side.weight), X, Z.T, beta=0.0).values()
    return side.sparse(dots * side.weight) @ Z + X @ gram + reg.unsqueeze(1) * X


def _conjugate_gradient(matvec, x, rhs, steps: int, *, rowwise: bool) -> None:
    """``steps`` CG iterations on ``matvec(x) = rhs`` from the current ``x`` (updated in place):
    every row its own system (``rowwise``) or all of ``x`` one system."""
    def dot(a, b):
        return (a * b).sum(1, keepdim=True) if rowwise else (a * b).sum()

    r = rhs - matvec(x)
    p = r.clone()
    rr = dot(r, r)
    for _ in range(steps):
        Ap = matvec(p)
        alpha = rr / dot(p, Ap).clamp_min(1e-30)
        x.add_(alpha * p)
        r.sub_(alpha * Ap)
        rr_new = dot(r, r)
        p.mul_(rr_new / rr.clamp_min(1e-30)).add_(r)
        rr = rr_new


def _cholesky(torch, side, A, Z, gram, reg, rhs) -> None:
    """Exact solves: each row's (k+1)×(k+1) system built in full (fine for small data)."""
    d = Z.shape[1]
    eye = torch.eye(d, dtype=Z.dtype, device=Z.device)
    for start, stop, part in side.chunks(max_rows=2048):
        z = Z.index_select(0, side.col[part])
        M = torch.zeros(stop - start, d, d, dtype=Z.dtype, device=Z.device)
        M.index_add_(0, side.row[part] - start, (z * side.weight[part].unsqueeze(1)).unsqueeze(2) * z.unsqueeze(1))
        M += gram + reg[start:stop, None, None] * eye
        A[start:stop] = torch.linalg.solve(M, rhs[start:stop])
