"""bench/quality.py and the offline protocol it shares with topx tune, on tiny synthetic data
(what is measured, never how fast)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from batch.data.interactions import Dataset, IdMap, Interactions
from batch.data.synth import generate
from batch.offline import list_metrics, top_k, validation_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import peers  # noqa: E402
import quality  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    generate(out, users=60, items=90, interactions=2400, seed=5)
    return str(out)


def _dataset(train_pairs, test_pairs, n_users, n_items) -> Dataset:
    def inter(pairs):
        u, i = (np.array(c, np.int32) for c in zip(*pairs, strict=True)) if pairs else (np.empty(0, np.int32),) * 2
        return Interactions(u, i, np.full(len(u), np.nan, np.float32), np.arange(len(u), dtype=np.int64))

    return Dataset(inter(train_pairs), inter(test_pairs), IdMap(np.arange(n_users)), IdMap(np.arange(n_items)))


def test_top_k_excludes_seen_items_and_breaks_ties_by_index():
    scores = np.array([[0.5, 0.9, 0.9, 0.1, 0.7], [1.0, 1.0, 1.0, 1.0, 1.0]])
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [1, 1, 1, 1, 0]], bool))
    top = top_k(lambda users: scores[users], np.array([0, 1]), seen, 3)
    assert top.tolist() == [[2, 4, 0], [4, -1, -1]]


def test_list_metrics_count_any_held_out_item_as_relevant():
    data = _dataset([(0, 0), (1, 1)], [(0, 2), (0, 3), (1, 4)], 2, 6)
    top = np.array([[2, 5, 3], [5, 0, -1]])
    metrics = list_metrics(top, np.array([0, 1]), data, k=3)
    assert metrics["precision@3"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-6)
    assert metrics["hit_rate@3"] == 0.5
    assert metrics["coverage@3"] == pytest.approx(4 / 6, abs=1e-6)


def test_validation_split_comes_from_the_training_part_only():
    train = [(u, i) for u in range(3) for i in range(6)]
    data = _dataset(train, [(0, 7), (1, 8)], 3, 9)
    val = validation_split(data, "last", 2, 0)
    assert len(val.test) == 6 and len(val.train) == 12
    held = set(zip(val.test.user.tolist(), val.test.item.tolist(), strict=True))
    assert held <= set(train) and not held & set(zip(val.train.user.tolist(), val.train.item.tolist(), strict=True))
    assert sorted(val.test.item.tolist()) == [4, 4, 4, 5, 5, 5]  # the latest two of each user


@pytest.mark.parametrize("shape", [(30, 12), (12, 30)])
def test_ease_closed_form_matches_the_items_by_items_inverse(shape):
    rng = np.random.default_rng(1)
    X = sp.csr_matrix((rng.random(shape) < 0.3).astype(np.float64))
    dense = X.toarray()
    P = np.linalg.inv(dense.T @ dense + 5.0 * np.eye(shape[1]))
    B = np.eye(shape[1]) - P / np.diag(P)
    assert np.allclose(np.diag(B), 0)
    users = np.arange(shape[0])
    assert np.allclose(peers.fit_ease(X, 5.0)(users), dense @ B)


@pytest.mark.slow
def test_quality_table_on_tiny_data(tiny):
    result = quality.quality(tiny, "last", 5, 0)
    rows = {row["system"]: row for row in result["table"]}
    assert set(rows) == set(quality.SYSTEMS)
    assert result["relevance"] == "any held-out interaction"
    for row in rows.values():
        assert row["users_evaluated"] == 60
        assert 0 <= row["ndcg@10"] <= 1 and 0 < row["coverage@10"] <= 1
        assert {"precision@10", "recall@10", "map@10", "hit_rate@10", "train_seconds"} <= set(row)
    ndcgs = [row["ndcg@10"] for row in result["table"]]
    assert ndcgs == sorted(ndcgs, reverse=True)
    assert set(rows["ease"]["settings"]) == {"l2"}
    best_peer = max((r for r in result["table"] if not r["system"].startswith("topx")), key=lambda r: r["ndcg@10"])
    assert result["best_peer"] == best_peer["system"]
    assert result["topx_vs_best_peer_ndcg@10_pct"] == pytest.approx(
        100 * (rows["topx"]["ndcg@10"] / best_peer["ndcg@10"] - 1), abs=0.06)


def test_topx_ncf_row_reranks_the_fm_lists(tiny):
    data = quality.load_split(tiny, "last", 5, 0)
    plain = quality.run_topx(tiny, "last", 5, 0, data)
    reranked = quality.run_topx(tiny, "last", 5, 0, data, extra={**quality.OWN["topx+ncf"], "rerank.ncf.epochs": 1,
                                                                  "rerank.candidates": 30})
    assert reranked["users_evaluated"] == plain["users_evaluated"] == 60
    assert reranked["ndcg@10"] != plain["ndcg@10"] and 0 <= reranked["ndcg@10"] <= 1


def test_topx_row_uses_the_benchmark_split(tiny):
    data = quality.load_split(tiny, "random", 5, 2)
    row = quality.run_topx(tiny, "random", 5, 2, data)
    assert row["users_evaluated"] == 60 and row["settings"] == "defaults"


def test_over_seeds_averages_each_systems_figures_over_one_split_per_seed(tiny):
    result = quality.over_seeds(tiny, "random", 5, (0, 3), ("popularity", "ease"))
    assert result["seeds"] == [0, 3] and len(result["runs"]) == 2
    assert [run["seed"] for run in result["runs"]] == [0, 3]
    for row in result["table"]:
        each = [next(r for r in run["table"] if r["system"] == row["system"]) for run in result["runs"]]
        assert row["ndcg@10_by_seed"] == [r["ndcg@10"] for r in each]
        assert row["ndcg@10"] == pytest.approx(np.mean(row["ndcg@10_by_seed"]), abs=1e-6)
        assert row["precision@10"] == pytest.approx(np.mean([r["precision@10"] for r in each]), abs=1e-6)
    # the two random splits differ, so the mean is not one split's figure
    ease = next(row for row in result["table"] if row["system"] == "ease")
    assert ease["ndcg@10_by_seed"][0] != ease["ndcg@10_by_seed"][1]
    assert "topx_vs_best_peer_ndcg@10_pct" not in result  # no topx row: no lead


@pytest.mark.parametrize("argv, message", [(["--protocol", "random", "--seeds", "0,x"], "comma-separated integers"),
                                           (["--seeds", "0,1"], "--protocol random"),
                                           (["--protocol", "random", "--seeds", "1,1"], "distinct seeds")])
def test_the_command_line_refuses_seeds_that_make_no_distinct_splits(tiny, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        quality.main([tiny, *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
