"""The NCF paper's evaluation protocol (He et al. 2017, section 4.1), so figures can be set
beside published ones: each held-out (user, item) pair is ranked among ``negatives`` (100) items
drawn uniformly from a pool, leaving out every item the user interacted with (training or
held-out). HR@k is the share of pairs whose item ranks in the top k, NDCG@k the mean of
1 / log2(position + 1) over them (0 below k). A tie counts against the held-out item. The
draw is seeded, so two models are ranked against the same items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (users, items) int64 (n,) → float scores (n,)
_ROUNDS = 20  # redraws of sampled items the user interacted with


def sampled_negatives(users: np.ndarray, seen: np.ndarray, n_items: int, pool: np.ndarray, negatives: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``negatives`` items of ``pool`` (int64 item indices) per entry of ``users`` that the user
    never interacted with (``seen``: sorted unique keys ``user * n_items + item``): int64
    (n, negatives) and a boolean (n, negatives) that is False for the few draws still hitting a
    seen item after 20 redraws (users who interacted with nearly the whole pool)."""
    rng = np.random.default_rng(seed)
    drawn = pool[rng.integers(0, len(pool), (len(users), negatives))]
    hit = _seen(users[:, None] * n_items + drawn, seen)
    for _ in range(_ROUNDS):
        if not hit.any():
            break
        drawn[hit] = pool[rng.integers(0, len(pool), int(hit.sum()))]
        hit[hit] = _seen(np.broadcast_to(users[:, None], drawn.shape)[hit] * n_items + drawn[hit], seen)
    return drawn, ~hit


def _seen(keys: np.ndarray, seen: np.ndarray) -> np.ndarray:
    if not len(seen):
        return np.zeros(keys.shape, bool)
    at = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
    return seen[at] == keys


def sampled_ranking(scores: dict[str, Scorer], users: np.ndarray, items: np.ndarray, seen: np.ndarray,
                    n_items: int, pool: np.ndarray, *, negatives: int = 100, k: int = 10,
                    seed: int = 0) -> dict[str, Any]:
    """HR@k and NDCG@k of each scorer in ``scores`` (name → scorer) over the held-out pairs
    (``users[r]``, ``items[r]``), int64 (n,), every scorer against the same sampled items."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    drawn, valid = sampled_negatives(users, seen, n_items, np.asarray(pool, np.int64), negatives, seed)
    result = {}
    for name, score in scores.items():
        positive = np.asarray(score(users, items), np.float64)
        against = np.asarray(score(np.repeat(users, negatives), drawn.ravel()), np.float64).reshape(drawn.shape)
        position = ((against >= positive[:, None]) & valid).sum(axis=1)  # 0 = ranked first
        gain = np.where(position < k, 1 / np.log2(position + 2), 0.0)
        result[name] = {f"hit_rate@{k}": float(np.mean(position < k)) if len(users) else float("nan"),
                        f"ndcg@{k}": float(gain.mean()) if len(users) else float("nan")}
    return {**result, "pairs": int(len(users)), "negatives": negatives, "k": k}
