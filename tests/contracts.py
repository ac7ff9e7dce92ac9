"""Conformance suites every implementation of a seam runs: a test class opts in by subclassing
the contract and defining its ``make_*()`` hook (as implicit's RecommenderBaseTestMixin and
lkpy's ScorerTests do). The data is tiny and its right answers are known or brute-forced."""

from __future__ import annotations

import numpy as np
from sagemaker_fixtures import search_request, tied_vectors

from batch.serve.repackage import COLD
from batch.serve.search import Searcher, SearchResult


def brute_force(request) -> dict[int, list[int]]:
    """Each searched, non-COLD user's best ``top`` allowed unseen items: score descending, ties
    to the smaller item index."""
    vectors, found = request.vectors, {}
    scores = vectors.users.astype(np.float64) @ vectors.items.astype(np.float64).T
    for user in request.user_indices():
        if vectors.user_status[user] == COLD:
            continue
        allowed = request.candidates.copy()
        if request.exclude is not None:
            allowed[request.exclude[user].indices] = False
        items = np.flatnonzero(allowed)
        order = np.lexsort((items, -scores[user, items]))
        found[int(user)] = items[order][: request.top].tolist()
    return found


class SearcherContract:
    """What every :class:`~batch.serve.search.Searcher` does: lists for the request's non-COLD
    users only, grouped by user with ranks 1, 2, …, best first, excluded and non-candidate items
    never listed, a user subset searched alone; an exact engine also finds exactly the
    brute-force lists, ties to the smaller item index."""

    exact = True  # approximate engines set False: their lists may miss items, never break the rules

    def make_searcher(self) -> Searcher:
        raise NotImplementedError

    def search(self, request) -> SearchResult:
        found = self.make_searcher().search(request)
        assert isinstance(found, SearchResult) and isinstance(found.report, dict)
        return found

    def lists_by_user(self, request) -> dict[int, list[int]]:
        lists = self.search(request).lists
        by_user: dict[int, list[int]] = {}
        for user, rank, item in zip(lists.user.tolist(), lists.rank.tolist(), lists.item.tolist(), strict=True):
            assert rank == len(by_user.setdefault(user, [])) + 1  # grouped by user, ranks 1, 2, …
            by_user[user].append(item)
        return by_user

    def test_cold_users_get_nothing_from_the_engine(self):
        request = search_request(tied_vectors())
        got = self.lists_by_user(request)
        assert got and not set(got) & {3, 9}  # tied_vectors' COLD users

    def test_excluded_and_non_candidate_items_are_never_listed(self):
        request = search_request(tied_vectors(), top=8)
        for user, items in self.lists_by_user(request).items():
            assert request.candidates[items].all()
            assert not set(items) & set(request.exclude[user].indices.tolist())

    def test_a_user_subset_is_searched_alone(self):
        users = np.array([0, 1, 3, 5, 8], np.int64)
        request = search_request(tied_vectors(), users=users)
        assert set(self.lists_by_user(request)) == {0, 1, 5, 8}

    def test_lists_are_best_first_and_exact_engines_break_ties_to_the_smaller_item(self):
        request = search_request(tied_vectors(), top=6)
        found = self.search(request).lists
        for user in np.unique(found.user):
            scores = found.score[found.user == user]
            assert np.all(np.diff(scores) <= 0)
        if self.exact:
            assert self.lists_by_user(request) == brute_force(request)


class TrainerContract:
    """What every :class:`~batch.train.Trainer` does on the two-taste ``blocks_dataset``: an FM
    of the design's width and the asked predictor type, finite predictions for every pair, and
    the same model again for the same data and seed."""

    history = False  # trainers that read the design's user history block set True

    def make_trainer(self):
        raise NotImplementedError

    def fit(self):
        from blocks import SMALL, blocks_dataset
        from sagemaker_fixtures import SMALL_HP

        from batch.features.design import build_design
        from batch.train.samples import held_out_samples, training_source

        ds = blocks_dataset(**SMALL)
        source = training_source(ds, "implicit", threshold=4.0, negatives=2, seed=0)
        test = held_out_samples(ds, "implicit", threshold=4.0, negatives=2, seed=0)
        design = build_design(ds, history=self.history)
        return design, self.make_trainer().fit(design, source, test, SMALL_HP, "binary_classifier")

    def test_the_model_has_the_designs_width_and_predicts_every_pair(self):
        design, result = self.fit()
        model = result.model
        assert model.predictor_type == "binary_classifier" and model.feature_dim == design.layout.feature_dim
        users, items = np.meshgrid(np.arange(design.users.shape[0]), np.arange(design.items.shape[0]))
        predicted = model.predict(design.pair_rows(users.ravel(), items.ravel()))
        assert np.isfinite(predicted).all() and ((predicted >= 0) & (predicted <= 1)).all()
        assert isinstance(result.details, dict) and result.details

    def test_the_same_data_and_seed_give_the_same_model(self):
        _, first = self.fit()
        _, again = self.fit()
        for name, value in vars(first.model).items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, getattr(again.model, name)), name


class SinkContract:
    """What publishing through every sink (database kind) does: the view shows exactly the
    published run's rows; publishing the same run again changes nothing (idempotent); a newer
    run replaces it."""

    def make_url(self) -> str:
        raise NotImplementedError

    def publish(self, url: str, run_id: str, shift: int = 0) -> dict:
        from test_publish_support import id_maps, make_lists, run_info, titles_for

        from batch.publish import publish_run

        users, items = id_maps()
        return publish_run(url, run_info(run_id), make_lists(shift=shift), users, items,
                           item_titles=titles_for(items))

    def view(self, url: str) -> list[tuple]:
        from test_publish_support import query

        return query(url, "SELECT user_id, rank, item_id FROM current_recommendations ORDER BY 1, 2")

    def test_the_view_shows_exactly_the_published_rows(self):
        from test_publish_support import expected_rows, id_maps, make_lists

        url = self.make_url()
        self.publish(url, "r1")
        want = sorted((u, r, i) for u, r, i, *_ in expected_rows(make_lists(), *id_maps()))
        assert sorted(self.view(url)) == want

    def test_publishing_the_same_run_again_changes_nothing(self):
        url = self.make_url()
        self.publish(url, "r1")
        before = self.view(url)
        self.publish(url, "r1")
        assert self.view(url) == before

    def test_a_newer_run_replaces_the_current_one(self):
        url = self.make_url()
        self.publish(url, "r1", shift=50)
        self.publish(url, "r2")
        from batch.publish import current_run

        assert current_run(url)["id"] == "r2" and len(self.view(url)) > 0
