"""The metric code: accuracy checked against trec_eval (pytrec_eval) on random lists, beyond-
accuracy and churn metrics against known answers and against direct loop implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval

from batch.data.interactions import Interactions
from batch.metrics.accuracy import ranking_metrics
from batch.metrics.beyond import Catalogue, beyond_accuracy, gini, intra_list_diversity, novelty
from batch.metrics.churn import churn, moved, overlap_depths, rbo

KS = (1, 3, 5, 10, 20)


def random_case(rng, n_users=60, n_items=40, depth=20):
    """Lists without repeats (some users with short lists) and relevant sets (some empty)."""
    top = np.full((n_users, depth), -1)
    for u in range(n_users):
        length = depth if u % 7 else int(rng.integers(0, depth))
        top[u, :length] = rng.permutation(n_items)[:length]
    pairs = [(u, i) for u in range(n_users) if u % 11 for i in rng.choice(n_items, rng.integers(1, 15), False)]
    user, item = np.array(pairs).T
    relevant = Interactions(user.astype(np.int32), item.astype(np.int32), np.ones(len(user), np.float32),
                            np.zeros(len(user), np.int64))
    return top, relevant


def trec_eval(top, relevant, ks):
    """pytrec_eval's per-user measures for the same lists (scores strictly decreasing by rank)."""
    qrel = {}
    for u, i in zip(relevant.user.tolist(), relevant.item.tolist(), strict=True):
        qrel.setdefault(f"u{u}", {})[f"i{i}"] = 1
    run = {f"u{u}": {f"i{i}": float(len(row) - r) for r, i in enumerate(row) if i >= 0} or {"nothing": 0.0}
           for u, row in enumerate(top.tolist()) if f"u{u}" in qrel}
    cut = ",".join(map(str, ks))
    measures = {f"P.{cut}", f"recall.{cut}", f"ndcg_cut.{cut}", f"map_cut.{cut}", f"success.{cut}"}
    return pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_metrics_match_trec_eval_on_random_lists(seed):
    rng = np.random.default_rng(seed)
    top, relevant = random_case(rng)
    ours = ranking_metrics(top, np.arange(len(top)), relevant, n_items=40, ks=KS)
    theirs = trec_eval(top, relevant, KS)
    n_rel = {u: len(m) for u, m in _qrel_sizes(relevant).items()}
    assert ours["users_evaluated"] == len(theirs) == len(n_rel)

    def mean(measure):
        return np.mean([m[measure] for m in theirs.values()])

    for k in KS:
        assert ours[f"precision@{k}"] == pytest.approx(mean(f"P_{k}"), abs=1e-6)
        assert ours[f"recall@{k}"] == pytest.approx(mean(f"recall_{k}"), abs=1e-6)
        assert ours[f"ndcg@{k}"] == pytest.approx(mean(f"ndcg_cut_{k}"), abs=1e-6)
        assert ours[f"hit_rate@{k}"] == pytest.approx(mean(f"success_{k}"), abs=1e-6)
        # trec_eval's map_cut divides by all relevant items; ours by min(relevant, k)
        rescaled = np.mean([m[f"map_cut_{k}"] * n_rel[q] / min(n_rel[q], k) for q, m in theirs.items()])
        assert ours[f"map@{k}"] == pytest.approx(rescaled, abs=1e-6)


def _qrel_sizes(relevant):
    out = {}
    for u, i in zip(relevant.user.tolist(), relevant.item.tolist(), strict=True):
        out.setdefault(f"u{u}", set()).add(i)
    return out


def test_ranking_metrics_on_a_hand_computed_example():
    # user 0: relevant {1, 2}; list [1, 5, 2] → hits at ranks 1 and 3; user 1: relevant {4}, no hit
    relevant = Interactions(np.array([0, 0, 1], np.int32), np.array([1, 2, 4], np.int32),
                            np.full(3, 5, np.float32), np.zeros(3, np.int64))
    m = ranking_metrics(np.array([[1, 5, 2], [0, 3, -1]]), np.array([0, 1]), relevant, n_items=6, ks=(1, 3))
    assert m["precision@1"] == pytest.approx(0.5) and m["precision@3"] == pytest.approx((2 / 3) / 2)
    assert m["recall@3"] == pytest.approx(0.5) and m["hit_rate@1"] == pytest.approx(0.5)
    ndcg0 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert m["ndcg@3"] == pytest.approx(ndcg0 / 2, rel=1e-5)
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 2) / 2, rel=1e-5)


def test_gini_known_values():
    assert gini(np.array([3, 3, 3, 3])) == pytest.approx(0)
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(3 / 4)  # (n - 1) / n: one item takes all
    x = np.array([1, 2, 3, 4, 10])  # against the mean-absolute-difference definition
    mad = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
    assert gini(x) == pytest.approx(mad)
    assert math.isnan(gini(np.zeros(3)))


def test_novelty_is_mean_self_information():
    popularity = np.array([8, 4, 0, 1])
    assert novelty(np.array([0, 1, 2]), popularity, 8) == pytest.approx((0 + 1 + 3) / 3)


def test_intra_list_diversity_matches_pairwise_loop():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(30, 5))
    vectors[4] = 0  # a zero vector is at distance 1 from the others
    top = np.array([rng.permutation(30)[:8] for _ in range(12)])
    top[0, 5:] = -1
    top[1, 1:] = -1  # one item: no pairs, skipped
    unit = [v / np.linalg.norm(v) if np.linalg.norm(v) else v for v in vectors]
    per_list = []
    for row in top:
        row = row[row >= 0]
        if len(row) > 1:
            per_list.append(np.mean([1 - unit[a] @ unit[b] for a in row for b in row if a != b]))
    assert intra_list_diversity(top, vectors) == pytest.approx(np.mean(per_list))
    assert intra_list_diversity(np.array([[0, 1]]), np.eye(3)) == pytest.approx(1.0)
    assert intra_list_diversity(np.array([[0, 1]]), np.ones((2, 3))) == pytest.approx(0.0)


def test_genre_diversity_leaves_out_items_without_genres():
    genres = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], np.float32)
    assert intra_list_diversity(np.array([[0, 1, 3]]), genres, skip_empty=True) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[0, 2, 3]]), genres, skip_empty=True) == pytest.approx(1.0)


def test_beyond_accuracy_on_a_small_catalogue():
    # 5 candidate items (item 5 is not a candidate); 10 users; item 0 is the most popular
    catalogue = Catalogue(candidates=np.array([1, 1, 1, 1, 1, 0], bool), popularity=np.array([10, 5, 5, 2, 1, 0]),
                          n_users=10, factors=np.eye(6, dtype=np.float32))
    top = np.array([[0, 1], [0, 2], [0, -1]])
    m = beyond_accuracy(top, catalogue, (1, 2))
    assert m["catalogue_coverage@1"] == pytest.approx(1 / 5) and m["catalogue_coverage@2"] == pytest.approx(3 / 5)
    assert m["top1pct_share@1"] == 1 and m["top1pct_share@2"] == pytest.approx(3 / 5)
    assert m["gini@1"] == pytest.approx(4 / 5)
    assert m["novelty@2"] == pytest.approx((3 * 0 + 2 * 1) / 5)
    assert m["ild@2"] == pytest.approx(1.0) and "ild_genre@2" not in m


def rbo_loop(s, t, p):
    """Webber et al. eq. 32 with loops, both lists cut to the shorter length."""
    depth = min(len(s), len(t))
    if not depth:
        return float("nan")
    x = [len(set(s[:d]) & set(t[:d])) for d in range(1, depth + 1)]
    return x[-1] / depth * p ** depth + (1 - p) / p * sum(x[d - 1] / d * p ** d for d in range(1, depth + 1))


def test_rbo_matches_the_formula_on_random_lists():
    rng = np.random.default_rng(1)
    new = np.array([rng.permutation(25)[:12] for _ in range(40)])
    old = np.array([rng.permutation(25)[:12] for _ in range(40)])
    new[3, 6:] = -1
    old[5, 2:] = -1
    row, a, b = overlap_depths(new, old)
    ours = rbo(row, a, b, (new >= 0).sum(1), (old >= 0).sum(1), 0.9)
    for u in range(40):
        assert ours[u] == pytest.approx(rbo_loop(new[u][new[u] >= 0].tolist(), old[u][old[u] >= 0].tolist(), 0.9))


def test_churn_identical_disjoint_and_shifted_lists():
    same = np.array([[1, 2, 3, 4]])
    assert churn(same, same, 2) == {"users_compared": 1, "jaccard@2": 1.0, "rbo": 1.0, "rbo_p": 0.9,
                                    "changed_share": 0.0, "changed_share@2": 0.0}
    disjoint = churn(same, np.array([[5, 6, 7, 8]]), 2)
    assert disjoint["jaccard@2"] == 0 and disjoint["rbo"] == 0 and disjoint["changed_share"] == 1
    swapped = churn(np.array([[2, 1, 3, 4]]), same, 2)  # same top-2 set, other order
    assert swapped["jaccard@2"] == 1 and swapped["changed_share"] == 1 and swapped["changed_share@2"] == 0
    # X = 0, 2, 3, 4 at depths 1..4: RBO = 1·p^4 + (1-p)/p · (0 + 1·p^2 + 1·p^3 + 1·p^4)
    assert swapped["rbo"] == pytest.approx(0.9 ** 4 + 0.1 / 0.9 * (0.81 + 0.729 + 0.6561), abs=1e-6)


def test_moved_counts_items_entering_and_leaving_lists():
    new = np.array([[1, 2, 3], [1, 4, -1]])
    old = np.array([[1, 2, 5], [0, 2, 5]])
    entered, left = moved(new, old, 6)
    assert entered.tolist() == [0, 1, 0, 1, 1, 0] and left.tolist() == [1, 0, 1, 0, 0, 2]
