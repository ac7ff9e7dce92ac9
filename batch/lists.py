"""Top-x lists of many users in one flat, columnar structure: the hand-off from search to publish
(and to the metrics and the report), kept apart from both so neither depends on the other."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOURCE_MODEL = 0  # ranked by the model
SOURCE_POPULARITY = 1  # the user had no interactions and no features: popularity list
SOURCE_RERANKED = 2  # the model's candidates re-ranked by the second stage (batch.rerank)
SOURCE_NAMES = {SOURCE_MODEL: "model", SOURCE_POPULARITY: "popularity", SOURCE_RERANKED: "reranked"}


@dataclass(frozen=True)
class TopLists:
    """Rows ``(user, rank, item, score, probability, source)``, grouped by user, best first.

    ``user``: int32 (n,) internal user index; one user's rows are contiguous with ranks 1, 2, ….
    ``rank``: int32 (n,), 1 = best. ``item``: int32 (n,) internal item index.
    ``score``: float32 (n,), the FM prediction ŷ for the pair (what ``topx score`` prints), or
    the re-ranker's probability for re-ranked rows.
    ``probability``: float32 (n,), sigmoid(score) in binary/implicit modes, NaN in regression;
    the re-ranker's probability for re-ranked rows.
    ``source``: uint8 (n,), :data:`SOURCE_MODEL`, :data:`SOURCE_POPULARITY` or :data:`SOURCE_RERANKED`.
    """

    user: np.ndarray
    rank: np.ndarray
    item: np.ndarray
    score: np.ndarray
    probability: np.ndarray
    source: np.ndarray

    def __post_init__(self):
        if len({len(c) for c in self.columns()}) > 1:
            raise ValueError("TopLists columns differ in length")

    def __len__(self) -> int:
        return len(self.user)

    def columns(self) -> tuple[np.ndarray, ...]:
        return self.user, self.rank, self.item, self.score, self.probability, self.source

    @classmethod
    def empty(cls) -> TopLists:
        return cls(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32),
                   np.empty(0, np.float32), np.empty(0, np.float32), np.empty(0, np.uint8))

    @classmethod
    def concat(cls, parts: list[TopLists]) -> TopLists:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate(cols) for cols in zip(*(p.columns() for p in parts), strict=True)))

    def take(self, index: np.ndarray) -> TopLists:
        return TopLists(*(c[index] for c in self.columns()))

    @property
    def n_users(self) -> int:
        return int(np.unique(self.user).size)

    def chunks(self, rows: int) -> Iterator[TopLists]:
        """Consecutive slices of at most ``rows`` rows, for streamed loading."""
        for start in range(0, len(self), rows):
            yield self.take(slice(start, start + rows))

    def save(self, path: str | Path, **lineage: str) -> None:
        """``lineage``: e.g. ``model_sha256``, stored as 0-d text arrays next to the columns."""
        np.savez(path, user=self.user, rank=self.rank, item=self.item, score=self.score,
                 probability=self.probability, source=self.source, **{k: np.array(v) for k, v in lineage.items()})

    @classmethod
    def load(cls, path: str | Path) -> TopLists:
        with np.load(path) as z:
            return cls(z["user"], z["rank"], z["item"], z["score"], z["probability"], z["source"])


@dataclass(frozen=True)
class KeyedLists:
    """Rows ``(key, rank, value, score)`` grouped by key, best first.

    ``key``: int32 (n,) internal index of the item the list belongs to; ``rank``: int32 (n,),
    1 = best; ``value``: int32 (n,) internal index of the listed item (similar items) or user
    (audiences); ``score``: float32 (n,), the cosine or inner product (similar items) or the FM
    prediction ŷ (audiences).
    """

    key: np.ndarray
    rank: np.ndarray
    value: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.key)

    def columns(self) -> tuple[np.ndarray, ...]:
        return self.key, self.rank, self.value, self.score

    def take(self, index) -> KeyedLists:
        return KeyedLists(*(c[index] for c in self.columns()))

    def chunks(self, rows: int) -> Iterator[KeyedLists]:
        for start in range(0, len(self), rows):
            yield self.take(slice(start, start + rows))

    def of(self, key: int) -> KeyedLists:
        """The rows of one key."""
        return self.take(self.key == key)

    @classmethod
    def from_slots(cls, keys: np.ndarray, value: np.ndarray, score: np.ndarray) -> KeyedLists:
        """Rows of the filled slots of search output ``value`` int (n, k) (-1 = empty) and
        ``score`` (n, k), row r belonging to ``keys[r]``."""
        filled = value >= 0
        if filled.all():  # the usual case (every audience full): no boolean gathers of n × k slots
            n, k = value.shape
            return cls(np.repeat(np.asarray(keys, np.int32), k), np.tile(np.arange(1, k + 1, dtype=np.int32), n),
                       value.astype(np.int32).ravel(), score.astype(np.float32).ravel())
        return cls(np.repeat(np.asarray(keys, np.int32), filled.sum(1)),
                   (np.nonzero(filled)[1] + 1).astype(np.int32), value[filled].astype(np.int32),
                   score[filled].astype(np.float32))

    def save(self, path: str | Path, **lineage: str) -> None:
        """``lineage``: e.g. ``model_sha256``, stored as 0-d text arrays next to the columns."""
        np.savez(path, key=self.key, rank=self.rank, value=self.value, score=self.score,
                 **{k: np.array(v) for k, v in lineage.items()})

    @classmethod
    def load(cls, path: str | Path) -> KeyedLists:
        with np.load(path) as z:
            return cls(z["key"], z["rank"], z["value"], z["score"])
