"""Labelled (user, item, label) samples for each training mode.

``binary``: rated pairs, label = rating ≥ threshold (the published tutorials' setting).
``regression``: rated pairs, label = rating. ``implicit``: every interaction is a positive and
``negatives`` unseen items per positive are negatives — drawn afresh for every epoch the local
engine trains (``SampleSource.epoch``), drawn once for a SageMaker channel (epoch 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from batch.data.interactions import Dataset, Interactions
from batch.errors import DataError
from batch.features.negatives import sample_negatives, seen_keys

log = logging.getLogger("topx.train")

PREDICTOR_TYPES = {"binary": "binary_classifier", "implicit": "binary_classifier", "regression": "regressor"}


@dataclass(frozen=True)
class Samples:
    """Columns of one labelled sample set: user, item (int32 internal indices), label (float32)."""

    user: np.ndarray
    item: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class SampleSource:
    """Training samples for one mode; implicit negatives are redrawn per epoch from ``seed``."""

    mode: str
    positives: Interactions
    threshold: float
    negatives: int
    n_items: int
    seen: np.ndarray  # sorted keys of every known (user, item) pair: never drawn as negatives
    seed: int

    def epoch(self, epoch: int) -> Samples:
        if self.mode != "implicit":
            return labelled(self.positives, self.mode, self.threshold)
        rng = np.random.default_rng([self.seed, epoch])
        return with_negatives(self.positives, self.negatives, self.seen, self.n_items, rng)


def training_source(dataset: Dataset, mode: str, *, threshold: float, negatives: int, seed: int) -> SampleSource:
    """The training samples of ``dataset.train`` for ``mode``. Negatives avoid the training pairs
    only: avoiding held-out pairs too would leak the test set into training (the held-out items
    would be the only unseen items never pushed down)."""
    if mode != "implicit":
        _require_ratings(dataset.train, mode)
    keys = seen_keys(dataset.train.user, dataset.train.item, dataset.n_items)
    return SampleSource(mode, dataset.train, threshold, negatives, dataset.n_items, keys, seed)


def held_out_samples(dataset: Dataset, mode: str, *, threshold: float, negatives: int, seed: int) -> Samples:
    """Held-out samples for the end-of-training metrics (empty when there is no test split)."""
    if mode != "implicit":
        _require_ratings(dataset.test, mode)
        return labelled(dataset.test, mode, threshold)
    keys = seen_keys(*_known_pairs(dataset), dataset.n_items)
    rng = np.random.default_rng([seed, 1_000_003])
    return with_negatives(dataset.test, negatives, keys, dataset.n_items, rng)


def labelled(data: Interactions, mode: str, threshold: float) -> Samples:
    if mode == "binary":
        label = (data.rating >= threshold).astype(np.float32)
    elif mode == "regression":
        label = data.rating.astype(np.float32)
    else:
        label = np.ones(len(data), np.float32)
    return Samples(data.user.astype(np.int32), data.item.astype(np.int32), label)


def with_negatives(data: Interactions, negatives: int, keys: np.ndarray, n_items: int,
                   rng: np.random.Generator) -> Samples:
    neg_user, neg_item, given_up = sample_negatives(data.user, negatives, keys, n_items, rng)
    if given_up:
        log.info("%d of %d negative draws found no unseen item (users who have seen nearly every item); "
                 "those positives have fewer negatives", given_up, len(data) * negatives)
    return Samples(
        np.concatenate([data.user.astype(np.int32), neg_user]),
        np.concatenate([data.item.astype(np.int32), neg_item]),
        np.concatenate([np.ones(len(data), np.float32), np.zeros(len(neg_user), np.float32)]),
    )


def _known_pairs(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    both = dataset.all_interactions()
    return both.user, both.item


def _require_ratings(data: Interactions, mode: str) -> None:
    if len(data) and np.isnan(data.rating).any():
        raise DataError(f"{mode} mode needs a rating for every interaction; this data has none "
                        f"(use --mode implicit)")
