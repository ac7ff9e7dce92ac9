"""The NCF paper's evaluation protocol (He et al. 2017, section 4.1), so figures can be set
beside published ones: each held-out (user, item) pair is ranked among ``negatives`` (100)
distinct items drawn uniformly, without replacement, from the items of a pool the user never
interacted with (training or held-out); a user with fewer such items is ranked against all of
them, and the pairs so judged are counted as ``short_pairs``. HR@k is the share of pairs whose
item ranks in the top k, NDCG@k the mean of 1 / log2(position + 1) over them (0 below k). A tie
counts against the held-out item. The draw is seeded, so two models are ranked against the same
items.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (users, items) int64 (n,) → float scores (n,)
# held-out pairs drawn and scored at once: with 100 negatives, about 1.6M scored pairs per chunk
CHUNK_PAIRS = 1 << 14
_ROUNDS = 20  # redraws of rejected items (seen by the user or drawn twice) before a row is drawn from its complement

log = logging.getLogger("topx.rerank")


def sampled_negatives(users: np.ndarray, seen: np.ndarray, n_items: int, pool: np.ndarray, negatives: int,
                      seed: int | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``negatives`` distinct items of ``pool`` (int64 item indices) per entry of ``users`` that
    the user never interacted with (``seen``: sorted unique keys ``user * n_items + item``),
    drawn uniformly without replacement: int64 (n, negatives) and a boolean (n, negatives) that
    is False on the padding of rows whose user has fewer than ``negatives`` such items (all of
    which the row holds).

    Rows are drawn by rejection (a draw the user has seen or that repeats an earlier one in the
    row is redrawn); a row still rejecting after 20 redraws (a user who has seen most of the
    pool) is drawn with ``Generator.choice(replace=False)`` from the user's unseen items. Both
    ways give every subset of the unseen items the same chance."""
    users, pool = np.asarray(users, np.int64), np.asarray(pool, np.int64)
    rng = np.random.default_rng(seed)
    drawn = np.zeros((len(users), negatives), np.int64)
    rejected = np.ones(drawn.shape, bool)
    rows = np.arange(len(users)) if len(pool) else np.zeros(0, np.int64)
    for _ in range(_ROUNDS + 1):
        if not len(rows):
            break
        redraw = rejected[rows]
        block = drawn[rows]
        block[redraw] = pool[rng.integers(0, len(pool), int(redraw.sum()))]
        drawn[rows] = block
        rejected[rows] = _rejected(users[rows], block, seen, n_items)
        rows = rows[rejected[rows].any(axis=1)]
    valid = np.ones(drawn.shape, bool)
    for row in np.flatnonzero(rejected.any(axis=1)):
        unseen = pool[~_seen(users[row] * n_items + pool, seen)]
        take = min(len(unseen), negatives)
        drawn[row, :take] = rng.choice(unseen, take, replace=False)
        drawn[row, take:] = unseen[0] if len(unseen) else 0  # padding, never counted
        valid[row, take:] = False
    return drawn, valid


def _rejected(users: np.ndarray, drawn: np.ndarray, seen: np.ndarray, n_items: int) -> np.ndarray:
    """Entries of ``drawn`` (one row per user) that the row's user has seen or that repeat an
    item earlier in the row."""
    order = np.argsort(drawn, axis=1, kind="stable")
    ordered = np.take_along_axis(drawn, order, axis=1)
    repeat = np.zeros(drawn.shape, bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    again = np.zeros(drawn.shape, bool)
    np.put_along_axis(again, order, repeat, axis=1)
    return again | _seen(users[:, None] * n_items + drawn, seen)


def _seen(keys: np.ndarray, seen: np.ndarray) -> np.ndarray:
    if not len(seen):
        return np.zeros(keys.shape, bool)
    at = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
    return seen[at] == keys


def sampled_ranking(scores: dict[str, Scorer], users: np.ndarray, items: np.ndarray, seen: np.ndarray,
                    n_items: int, pool: np.ndarray, *, negatives: int = 100, k: int = 10,
                    seed: int = 0) -> dict[str, Any]:
    """HR@k and NDCG@k of each scorer in ``scores`` (name → scorer) over the held-out pairs
    (``users[r]``, ``items[r]``), int64 (n,), every scorer against the same sampled items;
    ``short_pairs``: pairs ranked against fewer than ``negatives`` items (all their user's
    unseen items in ``pool``)."""
    users, items, pool = np.asarray(users, np.int64), np.asarray(items, np.int64), np.asarray(pool, np.int64)
    hits, gains, short = {name: 0 for name in scores}, {name: 0.0 for name in scores}, 0
    for start in range(0, len(users), CHUNK_PAIRS):
        u, i = users[start:start + CHUNK_PAIRS], items[start:start + CHUNK_PAIRS]
        # the first chunk draws with ``seed`` itself, chunk c with the entropy (seed, c)
        drawn, valid = sampled_negatives(u, seen, n_items, pool, negatives,
                                         seed if start == 0 else [seed, start // CHUNK_PAIRS])
        short += int((~valid).any(axis=1).sum())
        # each row: the held-out item, then the items it is ranked against; one call scores them all
        pair_items = np.hstack([i[:, None], drawn])
        pair_users = np.repeat(u, pair_items.shape[1])
        for name, score in scores.items():
            scored = np.asarray(score(pair_users, pair_items.ravel()), np.float64).reshape(pair_items.shape)
            positive, against = scored[:, 0], scored[:, 1:]
            position = ((against >= positive[:, None]) & valid).sum(axis=1)  # 0 = ranked first
            hits[name] += int((position < k).sum())
            gains[name] += float(np.where(position < k, 1 / np.log2(position + 2), 0.0).sum())
    result = {name: {f"hit_rate@{k}": hits[name] / len(users) if len(users) else float("nan"),
                     f"ndcg@{k}": gains[name] / len(users) if len(users) else float("nan")} for name in scores}
    if short:
        log.warning("sampled protocol: %d of %d held-out pairs are ranked against fewer than %d items (their "
                    "users have not that many unseen items in the pool): against all of them", short, len(users),
                    negatives)
    return {**result, "pairs": int(len(users)), "negatives": negatives, "short_pairs": short, "k": k}
