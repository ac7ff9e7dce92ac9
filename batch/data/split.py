"""Train/test splits of interactions, vectorised: rows are sorted by user and ranked within
each user, never looped over per user.

Every holdout split keeps at least one training interaction per user: a user with n
interactions gives min(holdout, n − 1) of them to the test set.
"""

from __future__ import annotations

import numpy as np

from batch.errors import ConfigError

METHODS = ("given", "random", "last", "none")


def holdout_mask(method: str, user: np.ndarray, timestamp: np.ndarray, *, n_users: int,
              holdout: int = 10, seed: int = 0, given: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask (length n) of the rows that form the test set.

    ``user``: int32 internal indices; ``timestamp``: int64; ``given``: the mask of rows that
    came from a test file (required for ``given``).
    """
    if method == "given":
        if given is None:
            raise ConfigError("data.split=given needs a base/test pair (ua.base/ua.test) or "
                              "data.test_path")
        return given
    if method == "random":
        return random_holdout(user, n_users, holdout, seed)
    if method == "last":
        return last_holdout(user, timestamp, n_users, holdout)
    if method == "none":
        return np.zeros(len(user), bool)
    raise ConfigError(f"unknown split {method!r}; expected one of {', '.join(METHODS)}")


def random_holdout(user: np.ndarray, n_users: int, holdout: int, seed: int) -> np.ndarray:
    """Each user's ``min(holdout, n_u − 1)`` interactions chosen uniformly at random; the same
    data and seed give the same split."""
    shuffled = np.random.default_rng(seed).permutation(len(user))
    return _first_of_each_user(user, group_by_user(user, shuffled), n_users, holdout)


def last_holdout(user: np.ndarray, timestamp: np.ndarray, n_users: int, holdout: int) -> np.ndarray:
    """Each user's ``min(holdout, n_u − 1)`` latest interactions by timestamp (of equal
    timestamps, the later row counts as later)."""
    newest_first = np.argsort(timestamp, kind="stable")[::-1]  # ties: later row first
    return _first_of_each_user(user, group_by_user(user, newest_first), n_users, holdout)


def group_by_user(user: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``order`` (a permutation of rows) stably regrouped by user. Packing (user, position)
    into one int64 lets a plain sort, much faster than an argsort, do the work."""
    packed = (user[order].astype(np.int64) << 32) | np.arange(len(order), dtype=np.int64)
    packed.sort()
    return order[packed & 0xFFFFFFFF]


def _first_of_each_user(user: np.ndarray, order: np.ndarray, n_users: int,
                        holdout: int) -> np.ndarray:
    """Mask of the first ``min(holdout, n_u − 1)`` rows of each user in ``order`` (a
    permutation that groups rows by user)."""
    counts = np.bincount(user, minlength=n_users)
    starts = np.cumsum(counts) - counts
    grouped = user[order]
    rank = np.arange(len(order)) - starts[grouped]
    quota = np.minimum(holdout, counts - 1)
    mask = np.zeros(len(user), bool)
    mask[order] = rank < quota[grouped]
    return mask


def summary(method: str, user: np.ndarray, mask: np.ndarray, n_users: int) -> dict:
    """Counts for the data report: rows and users on each side of the split."""
    def users(rows: np.ndarray) -> int:
        return int(np.count_nonzero(np.bincount(user[rows], minlength=n_users)))

    return {"method": method, "train_rows": int((~mask).sum()), "test_rows": int(mask.sum()),
            "train_users": users(~mask), "test_users": users(mask)}
