"""Change between two sets of lists of the same users: how far the new lists moved from the
current ones.

For user u with new list S and current list T (best first; L = the shorter length):

    jaccard@k     |S_k ∩ T_k| / |S_k ∪ T_k| of the top-k sets (1 when both are empty)
    rbo           rank-biased overlap, extrapolated (Webber, Moffat & Zobel 2010, eq. 32) to
                  depth L with persistence p: (X_L / L)·p^L + (1 − p)/p · Σ_{d ≤ L} (X_d / d)·p^d,
                  X_d = |S_d ∩ T_d|; 1 for identical lists, 0 for disjoint ones
    changed       the lists differ at any rank;  changed@k: the top-k sets differ

Items a list gained are ``entered``, items it lost ``left``; counted per item over all users.
"""

from __future__ import annotations

import numpy as np

RBO_P = 0.9  # persistence: the top 10 ranks carry about 86% of the weight


def overlap_depths(new: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items both lists of a user hold: (row, rank in ``new``, rank in ``old``), 0-based.
    ``new`` / ``old``: int (n, depth) item indices of the same n users, -1 for empty slots, no
    item twice in a row."""
    depth_new, depth_old = new.shape[1], old.shape[1]
    n_items = int(max(new.max(initial=-1), old.max(initial=-1))) + 1
    kn, ko = _keys(new, n_items), _keys(old, n_items)
    _, i_new, i_old = np.intersect1d(kn, ko, assume_unique=True, return_indices=True)
    valid_new = np.flatnonzero(new.ravel() >= 0)[i_new]
    valid_old = np.flatnonzero(old.ravel() >= 0)[i_old]
    return valid_new // depth_new, valid_new % depth_new, valid_old % depth_old


def _keys(lists: np.ndarray, n_items: int) -> np.ndarray:
    rows, cols = np.nonzero(lists >= 0)
    return rows.astype(np.int64) * n_items + lists[rows, cols]


def churn(new: np.ndarray, old: np.ndarray, k: int, p: float = RBO_P) -> dict[str, float]:
    """Mean jaccard@k, rbo, changed and changed@k shares over the n users (see module doc)."""
    n = len(new)
    row, a, b = overlap_depths(new, old)
    len_new, len_old = (new >= 0).sum(1), (old >= 0).sum(1)
    top_new, top_old = np.minimum(len_new, k), np.minimum(len_old, k)
    shared_k = np.bincount(row[(a < k) & (b < k)], minlength=n)
    union = top_new + top_old - shared_k
    jaccard = np.divide(shared_k, union, out=np.ones(n), where=union > 0)
    width = max(new.shape[1], old.shape[1])
    same = (_pad(new, width) == _pad(old, width)).all(1)
    return {"users_compared": int(n), f"jaccard@{k}": _mean(jaccard), "rbo": _mean(rbo(row, a, b, len_new, len_old, p)),
            "rbo_p": p, "changed_share": _mean(~same),
            f"changed_share@{k}": _mean((shared_k != top_new) | (top_new != top_old))}


def rbo(row: np.ndarray, a: np.ndarray, b: np.ndarray, len_new: np.ndarray, len_old: np.ndarray,
        p: float = RBO_P) -> np.ndarray:
    """Extrapolated RBO per user (float (n,)) from the overlap of :func:`overlap_depths`; NaN for
    users with an empty list."""
    n, depth = len(len_new), int(max(len_new.max(initial=0), len_old.max(initial=0)))
    L = np.minimum(len_new, len_old)
    at = np.maximum(a, b)  # the depth (0-based) from which an item is in both prefixes
    keep = at < L[row]
    X = np.zeros((n, depth + 1))
    np.add.at(X, (row[keep], at[keep] + 1), 1.0)
    X = np.cumsum(X, 1)[:, 1:]  # X[:, d-1] = overlap at depth d
    d = np.arange(1, depth + 1)
    inside = d[None, :] <= L[:, None]
    tail = ((1 - p) / p) * ((X / d) * p ** d * inside).sum(1)
    last = X[np.arange(n), np.maximum(L, 1) - 1] / np.maximum(L, 1) * p ** L
    return np.where(L > 0, tail + last, np.nan) if depth else np.full(n, np.nan)


def moved(new: np.ndarray, old: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item (int64 (n_items,) each): in how many users' new lists it entered (not in their
    current list) and from how many it left (in the current list, not in the new one)."""
    row, a, b = overlap_depths(new, old)
    kept_new = np.zeros(new.shape, bool)
    kept_old = np.zeros(old.shape, bool)
    kept_new[row, a] = True
    kept_old[row, b] = True
    entered = new[(new >= 0) & ~kept_new]
    left = old[(old >= 0) & ~kept_old]
    return np.bincount(entered, minlength=n_items), np.bincount(left, minlength=n_items)


def _pad(lists: np.ndarray, width: int) -> np.ndarray:
    return np.pad(lists, ((0, 0), (0, width - lists.shape[1])), constant_values=-1)


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return round(float(values.mean()), 6) if len(values) else float("nan")
