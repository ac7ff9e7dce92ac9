"""The local training engine: a factorization machine in PyTorch (CPU, or CUDA when available).

Every design row is a user's entity row plus an item's (see :mod:`batch.features.design`), so a
mini-batch gathers two small padded "bags" of (column, value) per pair instead of slicing a huge
CSR matrix; the math is the plain FM over the full row:

    ŷ(x) = b + Σ_j w_j x_j + ½ (‖Σ_j x_j v_j‖² − Σ_j x_j² ‖v_j‖²)

Parameters that a batch touches get sparse gradients and a lazy Adam step (SparseAdam), with
per-example L2 regularisation on the touched rows (as libFM's SGD), so a step costs O(batch), not
O(feature_dim). PyTorch is imported lazily: it is the ``local`` extra.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.artifact import FMModel
from batch.config import FMHyperparameters
from batch.errors import ConfigError, MissingDependencyError
from batch.features.design import Design
from batch.log import progress
from batch.train import FitResult
from batch.train.samples import Samples, SampleSource

log = logging.getLogger("topx.train")


def import_torch():
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "local", "Training with the local engine") from None
    return torch


def pick_device(requested: str = "auto") -> str:
    """``cuda`` when asked for or available, else ``cpu``; logs the choice, never falls back silently."""
    torch = import_torch()
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise ConfigError("train.device is cuda but no CUDA device is usable by PyTorch")
    device = "cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    log.info("local FM engine on %s (%s)", device, name)
    return device


def padded_bags(rows: sp.csr_matrix, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Entity rows as fixed-width bags: int64 column indices and float32 values, both of shape
    (n_rows, max nnz per row), short rows padded with column ``pad`` and value 0."""
    lengths = np.diff(rows.indptr)
    width = max(int(lengths.max(initial=0)), 1)
    idx = np.full((rows.shape[0], width), pad, np.int64)
    val = np.zeros((rows.shape[0], width), np.float32)
    slot = np.arange(rows.nnz) - np.repeat(rows.indptr[:-1], lengths)
    row = np.repeat(np.arange(rows.shape[0]), lengths)
    idx[row, slot], val[row, slot] = rows.indices, rows.data
    return idx, val


class LocalFMTrainer:
    """Fits an FM on :class:`SampleSource` epochs; ``device``: ``auto``, ``cpu`` or ``cuda``."""

    def __init__(self, device: str = "auto"):
        self.requested_device = device

    def fit(self, design: Design, source: SampleSource, test: Samples, hp: FMHyperparameters,
            predictor_type: str) -> FitResult:
        """Train on (user, item) pairs: a row is the user's entity row plus the item's."""
        tables = (design.users, design.items)

        def epoch(e: int):
            samples = source.epoch(e)
            return (samples.user, samples.item), samples.label

        return self._fit(tables, design.layout.feature_dim, epoch, hp, predictor_type)

    def fit_rows(self, X: sp.csr_matrix, label: np.ndarray, hp: FMHyperparameters,
                 predictor_type: str) -> FitResult:
        """Train on the rows of an arbitrary design matrix ``X`` (CSR float32 (n, feature_dim))
        with labels ``label`` (float32 (n,)), e.g. what a SageMaker FM channel holds."""
        rows = (np.arange(X.shape[0], dtype=np.int64),)
        return self._fit((X.tocsr(),), X.shape[1], lambda e: (rows, label), hp, predictor_type)

    def _fit(self, tables, feature_dim: int, epoch_data, hp: FMHyperparameters, predictor_type: str) -> FitResult:
        torch = import_torch()
        device = pick_device(self.requested_device)
        torch.manual_seed(hp.seed)
        net = _FMNet(torch, tables, feature_dim, hp, predictor_type, device)
        net.init_bias(epoch_data(0)[1])
        history, seen, started = [], 0, time.perf_counter()
        for epoch in range(hp.epochs):
            index, label = epoch_data(epoch)
            loss = net.train_epoch(index, label, epoch)
            seen += len(label)
            history.append({"epoch": epoch + 1, "loss": loss, "samples": len(label)})
            log.info("epoch %d/%d: loss %.4f on %d samples", epoch + 1, hp.epochs, loss, len(label))
        seconds = time.perf_counter() - started
        details = {"engine": "local", "device": device, "seconds": round(seconds, 3),
                   "samples_per_s": round(seen / max(seconds, 1e-9)), "history": history}
        return FitResult(net.to_model(), details)


class _RowAdam:
    """Lazy Adam on the rows a step touches, as torch.optim.SparseAdam does: rows a batch does not
    touch keep their moments; bias correction uses the global step count. ``lr`` may be a vector
    with one rate per column (the factors and the linear weight share one table)."""

    def __init__(self, torch, param, lr, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.b1, self.b2, self.eps = param, lr, betas[0], betas[1], eps
        self.d = param.shape[1]
        # both moments side by side: one gather and one scatter per step instead of two each
        self.state, self.t = torch.zeros(param.shape[0], 2 * self.d, device=param.device), 0

    def step(self, rows, grad) -> None:
        """``rows``: unique int64 row indices; ``grad``: (len(rows), d) their summed gradients."""
        self.t += 1
        # index_select / index_copy_ / index_add_: several times faster than fancy indexing on CPU
        state = self.state.index_select(0, rows)
        m, v = state[:, : self.d], state[:, self.d:]
        m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
        v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        self.state.index_copy_(0, rows, state)
        size = self.lr * ((1 - self.b2**self.t) ** 0.5 / (1 - self.b1**self.t))
        # rows are distinct: gather, update, write back (a scatter-add is slower on CPU)
        update = m.mul(size).div_(v.sqrt().add_(self.eps))
        self.param.index_copy_(0, rows, self.param.index_select(0, rows).sub_(update))


class _FMNet:
    """Parameters, one epoch of training with closed-form FM gradients, export to FMModel.

    Gradients are written out rather than taken by autograd: for a row x with s = Σ_j x_j v_j,
    ∂ŷ/∂v_j = x_j (s − x_j v_j) and ∂ŷ/∂w_j = x_j. This avoids building a graph and coalescing
    sparse gradients on every step, which dominated the step time on CPU.
    """

    def __init__(self, torch, tables, feature_dim: int, hp: FMHyperparameters, predictor_type: str, device: str):
        """``tables``: CSR matrices of design rows; a sample's row is the sum of one row from each
        table (columns never overlap), picked by the sample's index into that table."""
        self.torch, self.hp, self.device, self.predictor_type = torch, hp, device, predictor_type
        n = feature_dim
        self.n = n
        gen = torch.Generator().manual_seed(hp.seed)
        k = hp.num_factors
        # P = [V | w], one row per design column: a step gathers and scatters one table, not two.
        # One extra all-zero row at index n is the padding column of every bag.
        self.P = torch.zeros(n + 1, k + 1)
        self.P[:n, :k] = torch.randn(n, k, generator=gen) * hp.factors_init_sigma
        self.P = self.P.to(device)
        self.b = torch.zeros(1, 1, device=device)
        self.bags = [[torch.from_numpy(a).to(device) for a in padded_bags(t, n)] for t in tables]
        self.opt_p = _RowAdam(torch, self.P, _per_column(torch, k, hp.factors_lr, hp.linear_lr, device))
        self.opt_b = _RowAdam(torch, self.b, hp.bias_lr)
        self.zero_row = torch.zeros(1, dtype=torch.int64, device=device)
        self.gen = torch.Generator().manual_seed(hp.seed + 1)

    def init_bias(self, label: np.ndarray) -> None:
        """Start the bias at the label mean (its logit for classifiers): fewer wasted epochs."""
        mean = float(np.mean(label)) if len(label) else 0.0
        if self.predictor_type == "binary_classifier":
            p = float(np.clip(mean, 1e-4, 1 - 1e-4))
            mean = float(np.log(p / (1 - p)))
        self.b.fill_(mean)

    def train_epoch(self, index: tuple[np.ndarray, ...], label: np.ndarray, epoch: int) -> float:
        """One pass over the samples in random order; ``index[t][r]`` is sample r's row in table t."""
        torch, hp = self.torch, self.hp
        index = [torch.from_numpy(np.asarray(i, dtype=np.int64)).to(self.device) for i in index]
        label = torch.from_numpy(np.asarray(label, dtype=np.float32)).to(self.device)
        order = torch.randperm(len(label), generator=self.gen).to(self.device)
        starts = range(0, len(label), hp.mini_batch_size)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for start in progress(starts, total=len(starts), desc=f"epoch {epoch + 1}/{hp.epochs}", unit="batch"):
                batch = order[start:start + hp.mini_batch_size]
                total += self._step([i[batch] for i in index], label[batch])
        return float(total) / max(len(label), 1)

    def _step(self, index, label):
        """One mini-batch: returns the summed task loss (a 0-d tensor, not synced to the host)."""
        idx = self.torch.cat([bag[0].index_select(0, i) for bag, i in zip(self.bags, index, strict=True)], dim=1)
        val = self.torch.cat([bag[1].index_select(0, i) for bag, i in zip(self.bags, index, strict=True)], dim=1)
        step = fm_gradients(self.torch, self.P, self.b, idx, val, label, self.predictor_type, self.hp, pad=self.n)
        self.opt_p.step(step.rows, step.grad)
        self.opt_b.step(self.zero_row, step.grad_b.reshape(1, 1))
        return step.loss

    def to_model(self) -> FMModel:
        P = self.P[: self.n].cpu().numpy().astype(np.float32)
        V, w = P[:, :-1], P[:, -1]
        return FMModel(V=V, w=w, b=float(self.b[0, 0].cpu()), predictor_type=self.predictor_type)


def _per_column(torch, k: int, factors: float, linear: float, device):
    """A (k+1,) vector: ``factors`` for the k factor columns of [V | w], ``linear`` for w."""
    values = torch.full((k + 1,), factors)
    values[k] = linear
    return values.to(device)


@dataclass
class Gradients:
    """Gradients of one mini-batch's objective, summed per touched design column.

    ``rows``: int64 (U,) unique columns touched; ``grad``: (U, k+1), the gradient of [v_j | w_j];
    ``grad_b``: 0-d; ``loss``: 0-d summed task loss (without regularisation).
    """

    rows: object
    grad: object
    grad_b: object
    loss: object


def fm_gradients(torch, P, b, idx, val, label, predictor_type: str, hp: FMHyperparameters, *, pad: int):
    """Closed-form gradients of mean task loss + per-example L2 for a batch of padded bags.

    ``P``: (n+1, k+1) parameter table [V | w]; ``b``: (1, 1) bias. ``idx``/``val``: (B, L) column
    indices and values, padding column ``pad`` with value 0.
    Objective: mean_r loss(ŷ_r, y_r) + (1/B) Σ_r Σ_{j∈r} (λ_V‖v_j‖² + λ_w w_j²) + λ_b b².
    For an entry (r, j): ∂ŷ_r/∂v_j = x_rj (s_r − x_rj v_j) with s_r = Σ_j x_rj v_j; ∂ŷ_r/∂w_j = x_rj.
    Padding is dropped first, so every (entries, k) product below touches real entries only.
    """
    n, k = len(label), P.shape[1] - 1
    entry = (idx != pad).view(-1).nonzero().squeeze(1)  # flat positions of the entries, grouped by row
    row = entry.div(idx.shape[1], rounding_mode="floor")
    cols, x = idx.view(-1).index_select(0, entry), val.view(-1).index_select(0, entry)
    pe = P.index_select(0, cols)  # (E, k+1)
    v, w = pe[:, :k], pe[:, k]
    xv = v * x.unsqueeze(-1)
    s = torch.zeros(n, k, dtype=P.dtype, device=P.device).index_add_(0, row, xv)  # (B, k)
    own = torch.zeros(n, dtype=P.dtype, device=P.device).index_add_(0, row, w * x - 0.5 * xv.pow(2).sum(1))
    score = b[0, 0] + own + 0.5 * s.pow(2).sum(1)
    if predictor_type == "binary_classifier":
        g = torch.sigmoid(score) - label
        loss = torch.nn.functional.binary_cross_entropy_with_logits(score, label, reduction="sum")
    else:
        g = 2 * (score - label)
        loss = (score - label).pow(2).sum()
    coef = ((g / n).index_select(0, row) * x).unsqueeze(-1)
    grad = torch.empty_like(pe)
    grad[:, :k] = coef * (s.index_select(0, row) - xv)
    grad[:, k:] = coef
    grad.add_(pe * _per_column(torch, k, 2 * hp.factors_wd / n, 2 * hp.linear_wd / n, P.device))
    rows, inverse = distinct(torch, cols, len(P))
    summed = torch.zeros(len(rows), k + 1, dtype=P.dtype, device=P.device).index_add_(0, inverse, grad)
    grad_b = g.sum() / n + 2 * hp.bias_wd * b[0, 0]
    return Gradients(rows, summed, grad_b, loss)


def distinct(torch, cols, n: int):
    """``(rows, inverse)`` as ``torch.unique(cols, return_inverse=True)`` gives them: the sorted
    distinct values of ``cols`` (int64, all in [0, n)) and each entry's position among them.
    Where n is not much larger than the batch, a mark-and-compact pass over n slots is several
    times faster than unique's sort."""
    if n > 32 * len(cols):
        return torch.unique(cols, return_inverse=True)
    slot = torch.zeros(n, dtype=torch.int64, device=cols.device)
    slot.index_fill_(0, cols, 1)
    rows = slot.nonzero().squeeze(1)
    slot.index_copy_(0, rows, torch.arange(len(rows), device=cols.device))
    return rows, slot.index_select(0, cols)
