"""Local search: the exact kernel, its exact rounding and batch invariance, the searcher's lists,
and the approximate (faiss IVF/HNSW) methods' exclusions and measured recall."""

import math
import sys
import threading
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp

from batch.config import JobConfig, SearchConfig
from batch.lists import SOURCE_MODEL
from batch.serve.repackage import COLD, FEATURES_ONLY, TRAINED, Vectors
from batch.serve.search import SearchRequest, make_searcher
from batch.serve.search.local import LocalSearcher, NonFiniteVectorError, exact_topk, recall_at
from batch.serve.search.rounding import round_exactly

# On catalogues of < 64 items the approximate indexes search exhaustively (IVF probes every list,
# HNSW's efSearch ≥ 64 reaches every node), so every method must give the exact lists there.
METHODS = ["exact", "ivf", "hnsw"]


def make_vectors(users, items, *, user_status=None, const=None, predictor="binary_classifier"):
    users, items = np.asarray(users, np.float32), np.asarray(items, np.float32)
    return Vectors(users, np.zeros(len(users), np.float32) if const is None else np.asarray(const, np.float32),
                   items, np.full(len(users), TRAINED, np.uint8) if user_status is None else np.asarray(user_status,
                                                                                                    np.uint8),
                   np.full(len(items), TRAINED, np.uint8), np.ones(len(items), np.int64), predictor)


def random_vectors(n_users=40, n_items=60, d=9, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return make_vectors(rng.standard_normal((n_users, d)), rng.standard_normal((n_items, d)),
                        const=rng.standard_normal(n_users), **kw)


def random_exclude(n_users, n_items, density=0.1, seed=1):
    return sp.random(n_users, n_items, density=density, random_state=seed, format="csr", dtype=bool)


def request(vectors, top, exclude=None, candidates=None, users=None):
    if candidates is None:
        candidates = np.ones(len(vectors.items), bool)
    return SearchRequest(vectors, top, exclude, candidates, users)


def reference_topk(queries, items, k, exclude=None, candidates=None):
    """Brute force: every inner product rounded once from its exact value (fsum), a full sort."""
    inner = np.array([[np.float32(math.fsum((q.astype(np.float64) * a.astype(np.float64)).tolist())) for a in items]
                      for q in queries], np.float32)
    if exclude is not None:
        inner[exclude.toarray()] = -np.inf
    if candidates is not None:
        inner[:, ~candidates] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(len(items)), inner.shape), -inner.astype(np.float64)), axis=1)
    order, values = order[:, :k], np.take_along_axis(inner, order[:, :k], axis=1)
    return np.where(values > -np.inf, order, -1), values


# --- the exact kernel --------------------------------------------------------------------------


def test_exact_topk_equals_a_brute_force_reference():
    rng = np.random.default_rng(5)
    queries, items = rng.standard_normal((60, 9)).astype(np.float32), rng.standard_normal((1500, 9)).astype(np.float32)
    exclude, allowed = random_exclude(60, 1500), rng.random(1500) < 0.9
    item, inner = exact_topk(queries, items, 5, exclude=exclude, candidates=allowed)  # two levels of groups
    ref_item, ref_inner = reference_topk(queries, items, 5, exclude, allowed)
    np.testing.assert_array_equal(item, ref_item)
    assert inner.tobytes() == ref_inner.tobytes()
    item, inner = exact_topk(queries, items, 90)  # no groups: one partition per row
    ref_item, ref_inner = reference_topk(queries, items, 90)
    np.testing.assert_array_equal(item, ref_item)
    assert inner.tobytes() == ref_inner.tobytes()


def test_long_lists_scored_in_float64_equal_the_reference():
    """k = 100 of 3,000 candidates (an audience's shape): float64 scores and the threshold
    selection over one level of groups; a row left with fewer allowed items than k + margin falls
    back to a full partition. Same lists, bit for bit, as the reference and as float32 scoring."""
    from batch.serve.search import exact

    rng = np.random.default_rng(11)
    queries = rng.standard_normal((24, 17)).astype(np.float32)
    items = rng.standard_normal((3000, 17)).astype(np.float32)
    exclude = random_exclude(24, 3000, 0.05).tolil()
    exclude[3, 40:] = True  # 40 left: fewer groups with an allowed item than k + margin
    exclude[5, 100:2950] = True  # 150 left: most entries above nothing but -inf
    exclude = exclude.tocsr()
    item, inner = exact_topk(queries, items, 100, exclude=exclude, batch_size=7)
    ref_item, ref_inner = reference_topk(queries, items, 100, exclude)
    np.testing.assert_array_equal(item, ref_item)
    assert inner.tobytes() == ref_inner.tobytes()
    assert (item[3] >= 0).sum() == 3000 - exclude[3].nnz < 41
    original = exact.WIDE
    try:
        exact.WIDE = 0  # float32 scores and gathered recomputation instead
        other = exact_topk(queries, items, 100, exclude=exclude)
    finally:
        exact.WIDE = original
    assert other[0].tobytes() == item.tobytes() and other[1].tobytes() == inner.tobytes()


@pytest.mark.parametrize("widths", [(), (4,), (4, 4)])
def test_selection_holds_each_rows_largest_and_bounds_every_entry_left_out(widths):
    """select.largest on rows with ties and banned (-inf) entries: the fetched columns are distinct
    and hold the row's ``fetch`` largest values; nothing left out exceeds the bound; the threshold
    level (one width) pads rows that gathered fewer entries with column 0 and -inf."""
    from batch.serve.search.select import largest

    rng = np.random.default_rng(3)
    block = np.round(rng.standard_normal((9, 1920)), 1)  # many ties
    block[rng.random(block.shape) < 0.1] = -np.inf
    block[:, 0] = 9.0  # column 0 (a padded slot's) is every row's best: fetched once only
    block[4, :30], block[4, 30:] = 1.0, -np.inf  # 30 allowed: fewer than fetch (a full partition)
    fetch = 40
    for rows in (block, block[:4]):
        cols, values, bound = largest(rows, fetch, widths)
        assert cols.shape == values.shape and cols.shape[1] >= fetch and bound.dtype == np.float64
        for row in range(len(rows)):
            real = values[row] > -np.inf
            taken = cols[row][real] if cols.shape[1] > fetch else cols[row]  # padded: real slots only
            assert len(set(taken.tolist())) == len(taken)
            np.testing.assert_array_equal(rows[row, cols[row][real]], values[row][real])
            assert np.sort(values[row])[::-1][:fetch].tolist() == np.sort(rows[row])[::-1][:fetch].tolist()
            assert (np.delete(rows[row], taken) <= bound[row]).all()
    assert cols.shape[1] > fetch if len(widths) == 1 else cols.shape[1] == fetch  # unequal counts, padded
    assert (cols[values == -np.inf] == 0).all() or len(widths) != 1
    cols, values, bound = largest(block, fetch, widths)
    assert np.isneginf(bound[4]) and set(cols[4][values[4] > -np.inf].tolist()) == set(range(30))


def test_results_do_not_depend_on_batching_row_order_or_the_item_subset():
    rng = np.random.default_rng(7)
    queries = (rng.standard_normal((300, 65)) * 0.3).astype(np.float32)
    items = (rng.standard_normal((5000, 65)) * 0.3).astype(np.float32)
    exclude, allowed = random_exclude(300, 5000, 0.02), rng.random(5000) < 0.7
    item, inner = exact_topk(queries, items, 50, exclude=exclude, candidates=allowed, batch_size=2048)
    for batch_size in (1, 7, 128):
        other = exact_topk(queries, items, 50, exclude=exclude, candidates=allowed, batch_size=batch_size)
        assert other[0].tobytes() == item.tobytes() and other[1].tobytes() == inner.tobytes()
    perm = rng.permutation(300)  # a query's neighbours in the BLAS call change: its list must not
    other = exact_topk(queries[perm], items, 50, exclude=exclude[perm], candidates=allowed, batch_size=64)
    assert other[0].tobytes() == item[perm].tobytes() and other[1].tobytes() == inner[perm].tobytes()
    # what a k-NN index over the candidate items alone answers (the SageMaker path), mapped back
    index = np.flatnonzero(allowed)
    position, sub_inner = exact_topk(queries, items[index], 50 + 60, batch_size=33)
    seen = exclude.toarray()
    for row in range(0, 300, 17):
        keep = ~seen[row, index[position[row]]]
        assert index[position[row]][keep][:50].tobytes() == item[row].astype(np.int64).tobytes()
        assert sub_inner[row][keep][:50].tobytes() == inner[row].tobytes()


def test_ties_go_to_the_smaller_item_index_even_beyond_the_margin():
    rng = np.random.default_rng(2)
    items = rng.standard_normal((400, 6)).astype(np.float32) * 0.1
    twins = np.sort(rng.choice(400, 60, replace=False))  # 60 copies of the best item: more than k + margin
    items[twins] = np.float32([1, 1, 1, 1, 1, 1])
    queries = np.ones((3, 6), np.float32)
    item, inner = exact_topk(queries, items, 5)
    np.testing.assert_array_equal(item, np.tile(twins[:5], (3, 1)))
    assert np.all(inner == np.float32(6))


def test_empty_slots_when_fewer_items_are_allowed_than_k():
    items = np.eye(4, dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool))
    item, inner = exact_topk(np.ones((2, 4), np.float32), items, 3, exclude=exclude,
                             candidates=np.array([True, True, False, True]))
    np.testing.assert_array_equal(item, [[1, 3, -1], [0, 1, 3]])
    assert inner[0, 2] == -np.inf and np.all(inner[1] == 1)
    item, inner = exact_topk(np.ones((2, 4), np.float32), items, 3, candidates=np.zeros(4, bool))
    assert np.all(item == -1) and np.all(inner == -np.inf)


def test_inner_products_are_rounded_once_from_the_exact_value():
    tiny, tinier = 2.0**-24, 2.0**-60
    queries = np.ones((2, 3), np.float32)
    # exactly halfway between 1 and the next float32: ties to even, 1.0
    assert exact_topk(queries[:1], np.array([[1, tiny, 0]], np.float32), 1)[1][0, 0] == np.float32(1)
    # a hair above halfway: float64 alone rounds to the midpoint and then down; the exact value rounds up
    above = exact_topk(queries[:1], np.array([[1, tiny, tinier]], np.float32), 1)[1][0, 0]
    assert above == np.nextafter(np.float32(1), np.float32(2))
    rng = np.random.default_rng(3)
    for _ in range(200):  # heavy cancellation: large terms summing to a small value
        q, a = rng.standard_normal(65).astype(np.float32), rng.standard_normal(65).astype(np.float32)
        a[-1] = np.float32(-(np.dot(q[:-1].astype(np.float64), a[:-1]) / q[-1]))
        exact = sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(q, a, strict=True))
        assert round_exactly(q.astype(np.float64), a.astype(np.float64)) == _nearest_float32(exact)
        assert exact_topk(q[None], a[None], 1)[1][0, 0] == _nearest_float32(exact)


def _nearest_float32(value):
    guess = np.float32(float(value))
    around = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    return min(around, key=lambda f: (abs(Fraction(float(f)) - value), int(f.view(np.uint32)) & 1))


def test_non_finite_vectors_are_refused():
    with pytest.raises(NonFiniteVectorError, match="NaN or infinity"):
        exact_topk(np.ones((2, 3), np.float32), np.array([[1, np.nan, 0]], np.float32), 1)
    with pytest.raises(NonFiniteVectorError, match="overflow"):
        exact_topk(np.full((1, 3), 1e19, np.float32), np.full((1, 3), 1e19, np.float32), 1)


# --- the searcher: every method -----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_users_best_item_is_its_own(method):
    n = 6  # user u likes item u most; a bias dimension makes item 0 the runner-up for everyone
    users = np.hstack([np.eye(n) * 3, np.ones((n, 1))])
    items = np.hstack([np.eye(n), np.zeros((n, 1))])
    items[0, -1] = 0.5
    lists = LocalSearcher(method, recall_sample=n).search(request(make_vectors(users, items), 2)).lists
    assert lists.item[lists.rank == 1].tolist() == list(range(n))
    assert lists.item[lists.rank == 2].tolist() == [1] + [0] * (n - 1)


@pytest.mark.parametrize("method", METHODS)
def test_lists_respect_exclusions_and_candidates_and_are_ordered(method):
    vectors = random_vectors()
    exclude = random_exclude(40, 60, 0.3)
    allowed = np.random.default_rng(4).random(60) < 0.8
    lists = LocalSearcher(method, batch_size=16).search(request(vectors, 10, exclude, allowed)).lists
    assert not exclude.toarray()[lists.user, lists.item].any()
    assert allowed[lists.item].all()
    assert lists.user.tolist() == np.repeat(np.arange(40), 10).tolist()  # grouped in request order
    assert lists.rank.tolist() == list(range(1, 11)) * 40
    for user in range(40):
        scores = lists.score[lists.user == user]
        assert np.all(np.diff(scores) <= 0)
    ref_item, ref_inner = reference_topk(vectors.users, vectors.items, 10, exclude, allowed)
    np.testing.assert_array_equal(lists.item.reshape(40, 10), ref_item)
    expected = (ref_inner.astype(np.float64) + vectors.user_const[:, None]).astype(np.float32)
    np.testing.assert_array_equal(lists.score.reshape(40, 10), expected)
    np.testing.assert_allclose(lists.score, vectors.scores(lists.user, lists.item), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lists.probability, 1 / (1 + np.exp(-lists.score.astype(np.float64))), rtol=1e-6)
    assert set(lists.source) == {SOURCE_MODEL}


@pytest.mark.parametrize("method", METHODS)
def test_short_lists_when_few_candidates_remain_and_cold_users_are_skipped(method):
    vectors = random_vectors(n_users=5, n_items=8, user_status=[TRAINED, COLD, FEATURES_ONLY, TRAINED, COLD])
    allowed = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    exclude = sp.csr_matrix(([True, True, True], ([0, 0, 3], [0, 5, 2])), shape=(5, 8))
    lists = LocalSearcher(method).search(request(vectors, 4, exclude, allowed)).lists
    assert sorted(set(lists.user.tolist())) == [0, 2, 3]
    assert [int((lists.user == u).sum()) for u in (0, 2, 3)] == [2, 3, 2]
    assert np.all(lists.item >= 0) and np.all(lists.rank <= 3)


@pytest.mark.parametrize("method", METHODS)
def test_a_shard_of_users_gets_the_same_rows_as_the_full_search(method):
    vectors = random_vectors(n_users=50)
    exclude = random_exclude(50, 60)
    full = LocalSearcher(method, batch_size=8).search(request(vectors, 7, exclude)).lists
    shard = np.array([3, 4, 17, 30, 49])
    part = LocalSearcher(method, batch_size=3).search(request(vectors, 7, exclude, users=shard)).lists
    expected = full.take(np.isin(full.user, shard))
    for mine, theirs in zip(part.columns(), expected.columns(), strict=True):
        assert mine.tobytes() == theirs.tobytes()


def test_a_request_of_cold_users_only_gives_no_rows():
    vectors = random_vectors(n_users=3, user_status=[COLD] * 3)
    found = LocalSearcher().search(request(vectors, 5))
    assert len(found.lists) == 0 and found.report["users"] == 0


def test_regression_models_have_no_probability():
    lists = LocalSearcher().search(request(random_vectors(predictor="regressor"), 3)).lists
    assert np.isnan(lists.probability).all() and np.isfinite(lists.score).all()


def test_make_searcher_builds_the_configured_local_searcher():
    cfg = JobConfig(search=SearchConfig(method="ivf", batch_size=64, nprobe=4, recall_sample=10))
    searcher = make_searcher(cfg)
    assert isinstance(searcher, LocalSearcher)
    assert (searcher.method, searcher.batch_size, searcher.nprobe, searcher.recall_sample) == ("ivf", 64, 4, 10)


# --- approximate methods on a catalogue big enough to be approximate ----------------------------


def clustered_vectors(n_users=400, n_items=6000, factors=32, clusters=24, seed=0):
    """Users and items around shared taste centres, as a trained FM's factors are; last item
    dimension a bias, last user dimension 1."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, factors))

    def around(n, last):
        points = centres[rng.integers(0, clusters, n)] + 0.4 * rng.standard_normal((n, factors))
        return np.hstack([points, last[:, None]]) / np.sqrt(factors)

    return make_vectors(around(n_users, np.full(n_users, np.sqrt(factors))), around(n_items, rng.normal(0, 1, n_items)),
                        const=rng.standard_normal(n_users))


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_recall_is_reported_and_high_and_seen_items_stay_out(method):
    vectors = clustered_vectors()
    exclude = random_exclude(400, 6000, 0.02)
    searcher = LocalSearcher(method, batch_size=128, nprobe=16, recall_sample=150)
    found = searcher.search(request(vectors, 50, exclude))
    lists, report = found.lists, found.report
    assert report["method"] == method and report["sample_users"] == 150 and report["users"] == 400
    assert 0.9 <= report["recall_at_x"] <= 1.0
    assert not exclude.toarray()[lists.user, lists.item].any()
    assert np.all(np.bincount(lists.user, minlength=400) == 50)
    exact = LocalSearcher("exact").search(request(vectors, 50, exclude)).lists
    assert recall_at(lists.item.reshape(400, 50), exact.item.reshape(400, 50)) >= 0.9


def test_recall_counts_the_exact_items_found():
    exact = np.array([[1, 2, 3], [4, 5, -1]])
    found = np.array([[3, 9, 1], [5, -1, -1]])
    assert recall_at(found, exact) == pytest.approx(3 / 5)
    assert recall_at(found, np.full((2, 3), -1)) == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_refuses_broken_vectors(method):
    vectors = random_vectors()
    vectors.items[3, 0] = np.inf
    with pytest.raises(NonFiniteVectorError):
        LocalSearcher(method).search(request(vectors, 3))


@pytest.mark.skipif(not sys.platform.startswith("linux") or "openblas" not in
                    str(np.show_config(mode="dicts")["Build Dependencies"]["blas"].get("name", "")).lower(),
                    reason="per-thread BLAS threads are an OpenBLAS feature found through /proc")
def test_search_threads_get_one_blas_thread_each():
    from batch.serve.search.blas import _local_setters, one_blas_thread

    seen = {}

    def worker():
        seen["set"] = one_blas_thread()
        seen["previous"] = [setter(1) for setter in _local_setters()]  # what one_blas_thread left behind

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["set"] and seen["previous"] and set(seen["previous"]) == {1}
