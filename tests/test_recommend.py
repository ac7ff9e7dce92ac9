"""Recommendation assembly (popularity for cold users, allow/deny lists) and the ranking metrics."""

import numpy as np
import pytest
import scipy.sparse as sp

from batch.config import SearchConfig
from batch.data.interactions import Dataset, IdMap, Interactions
from batch.errors import NoCandidatesError
from batch.lists import SOURCE_MODEL, SOURCE_POPULARITY, TopLists
from batch.serve.evaluate import popularity_top, relevant_pairs
from batch.serve.recommend import candidates, item_list, popularity_lists, recommend, top_unseen
from batch.serve.repackage import COLD, TRAINED, Vectors
from batch.serve.search import SearchResult


def vectors(n_users=4, n_items=6):
    rng = np.random.default_rng(0)
    status = np.full(n_users, TRAINED, np.uint8)
    status[-1] = COLD
    item_status = np.full(n_items, TRAINED, np.uint8)
    item_status[-1] = COLD  # the model knows nothing about the last item
    return Vectors(rng.normal(size=(n_users, 3)).astype(np.float32), np.full(n_users, 0.5, np.float32),
                   rng.normal(size=(n_items, 3)).astype(np.float32), status, item_status,
                   np.array([5, 9, 1, 9, 0, 7]), "binary_classifier")


class FakeSearcher:
    """Records the request and answers with item 0 for every user it is asked about."""

    def search(self, request):
        self.request = request
        users = request.user_indices().astype(np.int32)
        n = len(users)
        return SearchResult(TopLists(users, np.ones(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.float32),
                                     np.zeros(n, np.float32), np.zeros(n, np.uint8)), {"users": n})


def test_cold_users_get_the_popularity_list_without_their_seen_items():
    v = vectors()
    exclude = sp.csr_matrix(([True], ([3], [1])), shape=(4, 6))  # cold user 3 has seen item 1
    searcher = FakeSearcher()
    found = recommend(v, searcher, top=3, exclude=exclude, candidates=v.recommendable)
    lists = found.lists
    assert found.report == {"users": 3}  # the engine's report comes back in the result
    assert searcher.request.user_indices().tolist() == [0, 1, 2]  # cold users never reach the engine
    cold = lists.take(lists.user == 3)
    assert cold.item.tolist() == [3, 0, 2]  # by popularity 9 (item 1 seen), 5, then 1; item 5 not recommendable
    assert cold.rank.tolist() == [1, 2, 3] and set(cold.source) == {SOURCE_POPULARITY}
    np.testing.assert_allclose(cold.score, v.scores(cold.user, cold.item))
    np.testing.assert_allclose(cold.probability, 1 / (1 + np.exp(-cold.score.astype(np.float64))), rtol=1e-6)
    assert set(lists.take(lists.user < 3).source) == {SOURCE_MODEL}
    assert np.all(np.diff(lists.user) >= 0)


def test_popularity_lists_are_short_when_few_candidates_remain():
    v = vectors()
    allowed = np.array([True, True, False, False, False, False])
    exclude = sp.csr_matrix(([True], ([3], [1])), shape=(4, 6))
    lists = popularity_lists(v, np.array([3]), 5, exclude, allowed)
    assert lists.item.tolist() == [0] and lists.rank.tolist() == [1]


def test_top_unseen_matches_a_python_reference():
    rng = np.random.default_rng(1)
    exclude = sp.random(50, 30, density=0.3, format="csr", random_state=rng).astype(bool)
    order = rng.permutation(30)
    got = top_unseen(order, np.arange(50), 7, exclude)
    for u in range(50):
        seen = set(exclude[u].indices)
        want = [i for i in order if i not in seen][:7]
        assert got[u].tolist() == want + [-1] * (7 - len(want))


@pytest.mark.parametrize("seed", range(6))
def test_top_unseen_with_candidates_repeated_users_and_long_histories(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 40, 25, int(rng.integers(1, 30))
    exclude = sp.random(n_users, n_items, density=rng.uniform(0.05, 0.95), format="csr", random_state=rng)
    exclude = exclude.astype(bool)
    order = rng.permutation(n_items)[: int(rng.integers(1, n_items + 1))]  # the candidates, best first
    users = rng.integers(0, n_users, 30)
    got = top_unseen(order, users, k, exclude)
    for row, u in enumerate(users):
        seen = set(exclude[u].indices)
        want = [i for i in order if i not in seen][:k]
        assert got[row].tolist() == want + [-1] * (k - len(want))
    nothing_seen = sp.csr_matrix((n_users, n_items), dtype=bool)
    assert top_unseen(order, users, k, nothing_seen).tolist() == top_unseen(order, users, k, None).tolist()
    assert top_unseen(order, users, k, None).tolist() == [
        (order[:k].tolist() + [-1] * max(0, k - len(order)))] * len(users)


def test_allow_and_deny_files(tmp_path):
    items = IdMap(np.array([10, 20, 30, 40, 50, 60]))
    (tmp_path / "allow.txt").write_text("# spring campaign\n10\n20\n30\n999\n\n")
    (tmp_path / "deny.txt").write_text("20\n")
    mask, unknown = item_list(str(tmp_path / "allow.txt"), items)
    assert mask.tolist() == [True, True, True, False, False, False] and unknown == [(5, "999")]
    cfg = SearchConfig(allow=str(tmp_path / "allow.txt"), deny=str(tmp_path / "deny.txt"))
    allowed, report = candidates(vectors(), items, cfg)
    assert allowed.tolist() == [True, False, True, False, False, False]
    assert report["allow_unknown"] == 1 and report["candidates"] == 2


def test_one_text_id_among_integer_ids_is_the_only_unknown_one(tmp_path, caplog):
    items = IdMap(np.array([10, 20, 30, 40, 50, 60]))
    (tmp_path / "deny.txt").write_text("20\nSKU-1\n 30 \n4.5\n")
    mask, unknown = item_list(str(tmp_path / "deny.txt"), items)
    assert mask.tolist() == [False, True, True, False, False, False]
    assert unknown == [(2, "SKU-1"), (4, "4.5")]
    allowed, report = candidates(vectors(), items, SearchConfig(deny=str(tmp_path / "deny.txt")))
    assert allowed.tolist() == [True, False, False, True, True, False] and report["deny_unknown_lines"] == [2, 4]
    assert f"{tmp_path / 'deny.txt'}:2: 'SKU-1'" in caplog.text


def test_an_allow_list_leaving_no_candidate_is_an_error(tmp_path):
    items = IdMap(np.array([10, 20, 30, 40, 50, 60]))
    (tmp_path / "allow.txt").write_text("SKU-1\n999\n")
    with pytest.raises(NoCandidatesError, match="no item is left to recommend"):
        candidates(vectors(), items, SearchConfig(allow=str(tmp_path / "allow.txt")))


def test_relevance_uses_the_threshold_only_when_ratings_exist():
    rated = Interactions(np.array([0, 0], np.int32), np.array([1, 2], np.int32),
                         np.array([5, 2], np.float32), np.zeros(2, np.int64))
    assert relevant_pairs(rated, 4).item.tolist() == [1]
    implicit = Interactions(rated.user, rated.item, np.full(2, np.nan, np.float32), rated.timestamp)
    assert relevant_pairs(implicit, 4).item.tolist() == [1, 2]


def test_popularity_baseline_skips_training_items():
    train = Interactions(np.array([0, 1, 1, 2], np.int32), np.array([0, 0, 1, 0], np.int32),
                         np.ones(4, np.float32), np.zeros(4, np.int64))
    ds = Dataset(train, Interactions.empty(), IdMap(np.arange(3)), IdMap(np.arange(3)))
    top = popularity_top(ds, np.array([0, 1]), 2, np.ones(3, bool))
    assert top.tolist() == [[1, 2], [2, -1]]
