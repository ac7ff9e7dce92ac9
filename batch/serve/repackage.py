"""Repackage an FM into user and item vectors whose inner product ranks items for a user.

Split a design row x = x_u + x_i into its user and item parts, with p_u = Vᵀx_u, p_i = Vᵀx_i:

    a_u = [p_u, 1]
    a_i = [p_i, wᵀx_i + ½(‖p_i‖² − Σ_j x_ij² ‖v_j‖²)]
    c_u = b + wᵀx_u + ½(‖p_u‖² − Σ_j x_uj² ‖v_j‖²)

then ŷ(x_u + x_i) = a_u·a_i + c_u exactly. With one-hot ids only, a_i is the published
[V_i, w_i]; with several item features the published formula drops the intra-item pairwise term,
this one keeps it. c_u does not change a user's ranking, but adding it back makes the stored score
the model's prediction.

Who gets a vector: an entity seen in training keeps its id column; one that was not but has side
features gets a vector from its features alone (its id column was never trained); a user with
neither gets the popularity list instead, and an item with neither is not recommended (the model
knows nothing about it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from batch.artifact import FMModel
from batch.artifact.fm import entity_halves
from batch.data.interactions import Dataset
from batch.errors import StageError, StaleArtifactError
from batch.features.design import Design, DesignLayout, build_design
from batch.rundir import RunDir

TRAINED, FEATURES_ONLY, COLD = 0, 1, 2

# numbers gathered at once when scoring pairs (Vectors.scores): 2^24 float64, 128 MiB per side
SCORE_CELLS = 1 << 24
# Vectors.scores takes the asked users' whole score rows by a matrix product when that computes at
# most this many times as many inner products as the pairs asked for: a product runs 40 to 1,000
# times faster per number than a gather (the sampled protocol asks for 101 items per held-out pair)
WHOLE_ROWS_RATIO = 32

log = logging.getLogger("topx.serve")


@dataclass(frozen=True)
class Vectors:
    """The repackaged model.

    ``users``: float32 (n_users, k+1), a_u; ``user_const``: float32 (n_users,), c_u;
    ``items``: float32 (n_items, k+1), a_i; ``user_status`` / ``item_status``: uint8, one of
    TRAINED, FEATURES_ONLY, COLD; ``popularity``: int64 (n_items,) training interactions per item;
    ``predictor_type``: the FM's, for turning scores into probabilities.
    """

    users: np.ndarray
    user_const: np.ndarray
    items: np.ndarray
    user_status: np.ndarray
    item_status: np.ndarray
    popularity: np.ndarray
    predictor_type: str

    @property
    def recommendable(self) -> np.ndarray:
        """Boolean per item: does the model know anything about it."""
        return self.item_status != COLD

    def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """FM predictions ŷ of the pairs (users[r], items[r]): float32 (n,), computed in float64.
        Where the pairs cover much of their users' rows (:data:`WHOLE_ROWS_RATIO`), those users'
        whole score rows are computed by a matrix product and the pairs picked from them; else
        the pairs' vectors are gathered. Either way in slices of about :data:`SCORE_CELLS`
        numbers, so memory stays bounded however many pairs are asked for (the sampled protocol
        asks for 101 per held-out item)."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        out = np.empty(len(users), np.float32)
        if not len(users):
            return out
        if len(self.items) <= WHOLE_ROWS_RATIO * len(users):  # else no user count can make rows cheaper
            distinct, row = np.unique(users, return_inverse=True)
            if len(distinct) * len(self.items) <= WHOLE_ROWS_RATIO * len(users):
                self._from_whole_rows(distinct, row.reshape(-1), items, out)
                return out
        step = max(1, SCORE_CELLS // max(1, self.users.shape[1]))
        for start in range(0, len(users), step):
            u, i = users[start:start + step], items[start:start + step]
            dots = np.einsum("nd,nd->n", self.users[u].astype(np.float64), self.items[i].astype(np.float64))
            out[start:start + step] = dots + self.user_const[u]
        return out

    def _from_whole_rows(self, distinct: np.ndarray, row: np.ndarray, items: np.ndarray, out: np.ndarray) -> None:
        """``out`` (n,) for the pairs (distinct[row[r]], items[r]) from the users' whole score rows,
        made for slices of users and, within a slice, blocks of items, each of about
        :data:`SCORE_CELLS` numbers."""
        n_items, width = self.items.shape
        order = np.argsort(row, kind="stable")
        bounds = np.searchsorted(row[order], np.arange(len(distinct) + 1))
        step, block = max(1, SCORE_CELLS // max(1, n_items, width)), max(1, SCORE_CELLS // max(1, width))
        for start in range(0, len(distinct), step):
            stop = min(start + step, len(distinct))
            u = distinct[start:stop]
            query, whole = self.users[u].astype(np.float64), np.empty((len(u), n_items))
            for first in range(0, n_items, block):
                whole[:, first:first + block] = query @ self.items[first:first + block].astype(np.float64).T
            whole += self.user_const[u, None]
            pairs = order[bounds[start]:bounds[stop]]
            out[pairs] = whole[row[pairs] - start, items[pairs]]

    def save(self, path: str | Path, **lineage: str) -> None:
        """``lineage``: e.g. ``model_sha256``, stored as 0-d text arrays next to the vectors."""
        np.savez(path, users=self.users, user_const=self.user_const, items=self.items,
                 user_status=self.user_status, item_status=self.item_status, popularity=self.popularity,
                 predictor_type=np.array(self.predictor_type), **{k: np.array(v) for k, v in lineage.items()})

    @classmethod
    def load(cls, path: str | Path) -> Vectors:
        with np.load(path) as z:
            return cls(z["users"], z["user_const"], z["items"], z["user_status"], z["item_status"],
                       z["popularity"], str(z["predictor_type"]))


def repackage(model: FMModel, dataset: Dataset, layout: DesignLayout) -> Vectors:
    """Vectors for every user and item of ``dataset`` from ``model`` trained on ``layout``."""
    design = entity_design(dataset, layout)
    if model.feature_dim != layout.feature_dim:
        raise StageError(f"model has feature_dim {model.feature_dim} but the layout has {layout.feature_dim}")
    trained_u, trained_i = _trained(dataset)
    users, user_const = user_vectors(model, design.users)
    items = _item_vectors(model, design.items)
    return Vectors(
        users=users, user_const=user_const, items=items,
        user_status=_status(trained_u, design.users, layout.user_feature_offset),
        item_status=_status(trained_i, design.items, layout.item_feature_offset),
        popularity=np.bincount(dataset.train.item, minlength=dataset.n_items).astype(np.int64),
        predictor_type=model.predictor_type,
    )


def vectors_for(run: RunDir) -> Vectors:
    """The run's repackaged vectors: ``vectors.npz`` if the repackage stage wrote it from the
    run's model, else made now from the run's model, data and layout (and saved)."""
    if run.file("vectors.npz").exists():
        try:
            return run.load_derived("vectors.npz", Vectors, "")
        except StaleArtifactError as exc:
            log.info("repackaging again: %s", exc)
    vectors = repackage(run.load_model(), run.load_dataset(), run.load_layout())
    run.save_derived("vectors.npz", vectors)
    return vectors


def entity_design(dataset: Dataset, layout: DesignLayout) -> Design:
    """Entity rows laid out as in training; entities unseen in training lose their id column."""
    trained_u, trained_i = _trained(dataset)
    design = build_design(dataset, use_features=bool(layout.user_feature_columns or layout.item_feature_columns),
                          history=layout.user_history, user_ids=trained_u, item_ids=trained_i)
    if design.layout != layout:
        raise StageError("the data set does not match the model's design layout (different users, items "
                         "or feature columns than at training time)")
    return design


def _trained(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    trained_u = np.zeros(dataset.n_users, bool)
    trained_i = np.zeros(dataset.n_items, bool)
    trained_u[dataset.train.user] = True
    trained_i[dataset.train.item] = True
    return trained_u, trained_i


def user_vectors(model: FMModel, rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """a_u (float32 (n, k+1)) and c_u (float32 (n,)) of users' design rows (CSR (n, feature_dim))."""
    p, own = entity_halves(model, rows)
    users = np.hstack([p, np.ones((len(p), 1))]).astype(np.float32)
    return users, (model.b + own).astype(np.float32)


def _item_vectors(model: FMModel, rows: sp.csr_matrix) -> np.ndarray:
    p, own = entity_halves(model, rows)
    return np.hstack([p, own[:, None]]).astype(np.float32)


def _status(trained: np.ndarray, rows: sp.csr_matrix, feature_offset: int) -> np.ndarray:
    has_features = np.asarray((rows[:, feature_offset:] != 0).sum(axis=1)).ravel() > 0
    status = np.full(len(trained), COLD, np.uint8)
    status[has_features] = FEATURES_ONLY
    status[trained] = TRAINED
    return status
