"""The local engine for implicit mode: iALS (:mod:`batch.train.ials`) written out as an FM.

The FM's pairwise term on a row ``[user one-hot | item one-hot]`` is ⟨v_u, v_i⟩ and its linear
term w_u + w_i, so the iALS score ⟨x_u, x_i⟩ + b_u + b_i *is* an FM with V's user rows x_u, its
item rows x_i and w = (b_u, b_i). Side-feature columns get zero factors and weights (the id
columns carry the fit), so the artifact, the repackaging identity and everything downstream are
those of any other FM.

Where the data is small enough, a second, closed-form member joins it (:mod:`batch.train.item_item`,
EASE on rating-weighted rows, sessions and item features, scored on recency-weighted profiles) as a
block of factors of its own: user rows [x_u, β m_u] (with the history block: history rows [y_j, 0]
and the id column [0, β m_u]), item rows [x_i, m_i]. The blocks are orthogonal, so the FM's score is
the iALS score plus β times the member's, exactly, and the artifact is still one FM (k = num_factors
+ the member's rank).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from batch.artifact import FMModel
from batch.config import DataConfig, FMHyperparameters, IALSConfig
from batch.features.design import Design
from batch.train import FitResult
from batch.train.ials import IALSFactors, IALSSettings, fit_ials
from batch.train.item_item import NO_MEMBER, Carve, ItemItemSettings, feature_rows, fit_member
from batch.train.local import import_torch, pick_device
from batch.train.samples import Samples, SampleSource

log = logging.getLogger("topx.train")

# iALS fits ŷ ≈ 1 for observed pairs and ≈ 0 elsewhere; the artifact's predictor is a binary
# classifier (sigmoid of the score), so the global bias puts its 0.5 threshold at ŷ = 0.5.
# A constant: it changes no ranking and no repackaged item vector.
BIAS = -0.5


class IALSTrainer:
    """Fits implicit mode's FM by iALS on the training interactions; ``device``: ``auto``,
    ``cpu`` or ``cuda``; ``carve``: where the item-item member chooses its recency
    (:func:`member_carve`; None: it keeps the configured one)."""

    def __init__(self, settings: IALSConfig, device: str = "auto", carve: Carve | None = None):
        self.settings, self.requested_device, self.carve = settings, device, carve

    def fit(self, design: Design, source: SampleSource, test: Samples, hp: FMHyperparameters,
            predictor_type: str) -> FitResult:
        torch = import_torch()
        device = pick_device(self.requested_device)
        R = interaction_weights(source.positives.user, source.positives.item, design.layout.n_users,
                                design.layout.n_items)
        s = self.settings
        settings = IALSSettings(factors=hp.num_factors, unobserved_weight=s.unobserved_weight, reg=s.reg,
                                reg_exponent=s.reg_exponent, epochs=hp.epochs, cg_steps=s.cg_steps,
                                history_reg=s.history_reg, seed=hp.seed)
        log.info("iALS: %d users × %d items, %d interactions, %d factors, α0 %g, λ %g, ν %g",
                 R.shape[0], R.shape[1], R.nnz, hp.num_factors, s.unobserved_weight, s.reg, s.reg_exponent)
        history, started = [], time.perf_counter()

        def on_epoch(epoch: int) -> bool:
            history.append({"epoch": epoch + 1, "seconds": round(time.perf_counter() - started, 3)})
            log.info("iALS epoch %d/%d: %.1f s", epoch + 1, hp.epochs, history[-1]["seconds"])
            return False

        factors = fit_ials(torch, R, settings, history=history_block(design), device=device, on_epoch=on_epoch)
        ials_seconds = time.perf_counter() - started
        member = item_item_settings(s)
        p = source.positives
        fitted = fit_member(p.user, p.item, p.timestamp, p.rating, *R.shape, member, self.carve,
                            feature_rows(design)) if member.weight > 0 else None
        if fitted is not None:
            factors = with_item_item(factors, fitted.users, fitted.items, member.weight)
            log.info("item-item member (%s): %d factors, %.1f s", fitted.describe(member), fitted.rank,
                     time.perf_counter() - started - ials_seconds)
        elif member.weight > 0:
            log.info("item-item member left out: %d users × %d items is beyond train.ials.item_item_max_rank "
                     "%d or item_item_max_cells %d", *R.shape, member.max_rank, member.max_cells)
        seconds = time.perf_counter() - started
        details = {"engine": "local", "objective": "ials", "device": device, "seconds": round(seconds, 3),
                   "samples_per_s": round(R.nnz * hp.epochs / max(ials_seconds, 1e-9)), "history": history,
                   **(NO_MEMBER if fitted is None else fitted.details())}
        return FitResult(to_fm(factors, design, predictor_type), details)


def item_item_settings(s: IALSConfig, backend: str = "local") -> ItemItemSettings:
    """The item-item member's settings from the ``train.ials`` section, with the weight of
    ``backend`` (``item_item`` locally, ``item_item_sagemaker`` on SageMaker)."""
    weight = s.item_item_sagemaker if backend == "sagemaker" else s.item_item
    return ItemItemSettings(weight=weight, l2=s.item_item_l2, recency=s.item_item_recency,
                            half_life=s.item_item_half_life, choose_recency=s.item_item_choose_recency,
                            rating_exponent=s.item_item_rating_exponent,
                            sessions=s.item_item_sessions,
                            session_gap=s.item_item_session_gap, features=s.item_item_features,
                            choose_features=s.item_item_choose_features,
                            max_rank=s.item_item_max_rank,
                            max_cells=s.item_item_max_cells, max_session_cells=s.item_item_max_session_cells)


def member_carve(data: DataConfig) -> Carve:
    """The validation carve the item-item member chooses its recency on: held out as the job's
    split holds out its test part; random for a given (or auto) split, whose files do not say
    how they were made, and last where the job has no split (its lists are for what users take
    up next)."""
    return Carve("last" if data.split in ("last", "none") else "random", data.holdout, data.seed)


def with_item_item(factors: IALSFactors, users: np.ndarray, items: np.ndarray, weight: float) -> IALSFactors:
    """``factors`` with the member's block appended: scores become the iALS scores plus ``weight``
    × users[u]·items[i]. With the history block the member's user rows sit on the id columns."""
    member = (weight * users).astype(np.float32)
    history = None if factors.history is None else \
        np.hstack([factors.history, np.zeros((len(factors.history), member.shape[1]), np.float32)])
    user_id = None if factors.history is None else np.hstack(
        [np.zeros_like(factors.user) if factors.user_id is None else factors.user_id, member])
    return IALSFactors(np.hstack([factors.user, member]), np.hstack([factors.item, items.astype(np.float32)]),
                       factors.user_bias, factors.item_bias, history, user_id)


def interaction_weights(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """CSR float32 (n_users, n_items) with 1 at every observed pair (repeats count once)."""
    R = sp.csr_matrix((np.ones(len(user), np.float32), (user, item)), shape=(n_users, n_items))
    R.sum_duplicates()
    R.data[:] = 1
    return R


def history_block(design: Design) -> sp.csr_matrix | None:
    """The users' history columns of the design (CSR float32 (n_users, n_items)), or None."""
    layout = design.layout
    if not layout.user_history:
        return None
    return design.users[:, layout.user_history_offset:layout.user_history_offset + layout.n_items]


def history_pairwise(H: sp.csr_matrix, Y: np.ndarray) -> np.ndarray:
    """float32 (n_users,): the FM's pairwise terms among a user's own history columns,
    ½(‖Σ_j x_j y_j‖² − Σ_j x_j² ‖y_j‖²). The user's id-column weight cancels them, so the FM's
    prediction is the iALS score itself, not only the same ranking."""
    Y = Y.astype(np.float64)
    H = H.astype(np.float64)
    p = np.asarray(H @ Y)
    return (0.5 * (np.einsum("nk,nk->n", p, p) - H.power(2) @ (Y * Y).sum(1))).astype(np.float32)


def to_fm(factors: IALSFactors, design: Design, predictor_type: str) -> FMModel:
    """The FM whose score on the design row of (u, i) equals the iALS score plus :data:`BIAS`:
    V (feature_dim, k) and w (feature_dim,) float32. Users are their id column's factors, or,
    with the history block, their history's factors Y (their id columns then get zero factors
    and the weight that cancels the pairwise terms inside the history); side-feature columns
    get zeros. With the item-item member (:func:`with_item_item`) the history user's id column
    carries the member's block."""
    layout, k = design.layout, factors.user.shape[1]
    V = np.zeros((layout.feature_dim, k), np.float32)
    w = np.zeros(layout.feature_dim, np.float32)
    users = slice(0, layout.n_users)
    items = slice(layout.item_offset, layout.item_offset + layout.n_items)
    V[items], w[items] = factors.item, factors.item_bias
    if factors.history is None:
        V[users], w[users] = factors.user, factors.user_bias
    else:
        V[layout.user_history_offset:layout.user_history_offset + layout.n_items] = factors.history
        H = history_block(design)
        w[users] = -history_pairwise(H, factors.history)
        if factors.user_id is not None:
            # the id column's pairwise term with the history (0 when the blocks are orthogonal)
            V[users] = factors.user_id
            w[users] -= np.einsum("nk,nk->n", factors.user_id.astype(np.float64),
                                  np.asarray(H.astype(np.float64) @ factors.history)).astype(np.float32)
    return FMModel(V=V, w=w, b=BIAS, predictor_type=predictor_type)
