"""Negative sampling for implicit feedback: items a user never interacted with, drawn uniformly.

Vectorised rejection sampling: draw candidate items for every positive at once, reject the pairs
the user has seen (a binary search in the sorted ``user * n_items + item`` keys), redraw only the
rejected ones. Users who have seen (nearly) every item are rare; after a bounded number of rounds
their remaining draws are given up and counted rather than looping forever.
"""

from __future__ import annotations

import numpy as np

MAX_ROUNDS = 50


def seen_keys(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted unique int64 keys ``user * n_items + item`` of the seen pairs (sort and drop
    repeats: ``np.unique``'s hash path is several times slower on millions of keys)."""
    keys = np.sort(user.astype(np.int64) * n_items + item.astype(np.int64))
    if len(keys) < 2:
        return keys
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])]


def is_seen(keys: np.ndarray, user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Boolean per pair: is (user, item) among the sorted ``keys``."""
    wanted = user.astype(np.int64) * n_items + item.astype(np.int64)
    if not len(keys):
        return np.zeros(len(wanted), bool)
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return keys[pos] == wanted


def sample_negatives(
    users: np.ndarray, per_user: int | np.ndarray, keys: np.ndarray, n_items: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw ``per_user`` unseen items for each entry of ``users`` (an int array, e.g. the user of
    every positive). Returns ``(user, item, given_up)``: int32 arrays of the negatives and the
    count of draws abandoned because the user had seen almost every item."""
    user = np.repeat(np.asarray(users, dtype=np.int32), per_user)
    item = rng.integers(0, n_items, size=len(user), dtype=np.int32)
    bad = np.flatnonzero(is_seen(keys, user, item, n_items))
    for _ in range(MAX_ROUNDS):
        if not len(bad):
            break
        item[bad] = rng.integers(0, n_items, size=len(bad), dtype=np.int32)
        bad = bad[is_seen(keys, user[bad], item[bad], n_items)]
    keep = np.ones(len(user), bool)
    keep[bad] = False
    return user[keep], item[keep], int(len(bad))
