"""The SageMaker k-NN searcher against moto + the emulator: the same lists as the local exact search."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from botocore.validate import validate_parameters
from sagemaker_fixtures import BUCKET, emulated_aws, sagemaker_config, search_request, tied_vectors

from batch.aws.channels import MissingS3ObjectError
from batch.aws.knn_output import knn_k
from batch.aws.sagemaker_jobs import TransformJobFailedError
from batch.config import load_config
from batch.errors import ConfigError
from batch.serve.repackage import COLD
from batch.serve.search import SearchRequest, make_searcher
from batch.serve.search.local import LocalSearcher
from batch.serve.search.sagemaker import (
    ItemLabelError,
    KnnPlan,
    SageMakerKnnSearcher,
    item_labels,
    knn_hyperparameters,
)


@pytest.fixture
def aws():
    with emulated_aws() as aws:
        yield aws


def search(aws, request, run_id="run-1", **settings):
    searcher = SageMakerKnnSearcher(sagemaker_config(**settings), run_id=run_id, clients=aws.clients())
    return searcher.search(request).lists


def assert_same_lists(got, want):
    assert len(want) > 0
    for name, a, b in zip(("user", "rank", "item", "score", "probability", "source"), got.columns(),
                          want.columns(), strict=True):
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b, equal_nan=True), name


@pytest.mark.parametrize("users", [None, np.array([0, 1, 3, 4, 5, 8, 9, 13])])
@pytest.mark.parametrize("top", [1, 5])
def test_exactly_the_lists_of_the_local_exact_search(aws, users, top):
    vectors = tied_vectors()
    request = search_request(vectors, top=top, users=users)
    got = search(aws, request)
    assert_same_lists(got, LocalSearcher(method="exact").search(request).lists)
    assert not np.isin(got.user, [3, 9]).any()  # COLD users get no list from the engine
    assert not request.exclude[got.user, got.item].any() and request.candidates[got.item].all()


def test_exactly_the_lists_of_the_local_exact_search_with_real_valued_vectors(aws):
    vectors = tied_vectors(n_users=300, n_items=500, dim=17, integers=False)
    request = search_request(vectors, top=20)
    assert_same_lists(search(aws, request), LocalSearcher(method="exact").search(request).lists)


def test_ties_are_exercised(aws):
    vectors = tied_vectors()
    request = search_request(vectors, top=5)
    got = search(aws, request)
    inner = got.score.astype(np.float64) - vectors.user_const[got.user]
    same_user = got.user[1:] == got.user[:-1]
    assert np.any(same_user & (inner[1:] == inner[:-1]))  # equal inner products in one list
    assert set(np.unique(got.user)) == set(np.flatnonzero(vectors.user_status != COLD))


def test_the_requests_are_valid_and_ask_for_enough_neighbours(aws):
    vectors = tied_vectors()
    request = search_request(vectors, top=5)
    search(aws, request)
    service = aws.sagemaker.meta.service_model
    for operation in ("CreateTrainingJob", "CreateModel", "CreateTransformJob"):
        (sent,) = aws.sent(operation)
        validate_parameters(sent, service.operation_model(operation).input_shape)
    hyper = aws.sent("CreateTrainingJob")[0]["HyperParameters"]
    candidates = np.flatnonzero(request.candidates)
    known = np.flatnonzero(vectors.user_status != COLD)
    most_seen = int(np.diff(request.exclude[known][:, candidates].indptr).max())
    assert hyper == {"feature_dim": "3", "k": str(5 + most_seen), "predictor_type": "classifier",
                     "sample_size": str(len(candidates)), "index_metric": "INNER_PRODUCT",
                     "index_type": "faiss.Flat"}
    transform = aws.sent("CreateTransformJob")[0]
    assert transform["TransformJobName"] == "topx-run-1-transform" and transform["ModelName"] == "topx-run-1-knn-model"
    assert transform["BatchStrategy"] == "MultiRecord"
    assert transform["TransformInput"]["SplitType"] == "RecordIO"
    assert transform["TransformInput"]["ContentType"] == "application/x-recordio-protobuf"
    assert transform["TransformOutput"]["Accept"] == "application/jsonlines; verbose=true"
    assert transform["TransformOutput"]["AssembleWith"] == "Line"
    assert transform["TransformResources"] == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1}
    users = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/run-1/knn/users/")["Contents"]
    assert len(users) == 3


def test_k_counts_only_candidate_items_the_searched_users_have_seen():
    vectors = tied_vectors()
    request = search_request(vectors, top=4)
    plan = KnnPlan.of(request)
    seen = request.exclude[plan.users][:, plan.items]
    assert plan.k == knn_k(4, seen) == 4 + int(np.diff(seen.indptr).max())
    assert plan.k < 4 + int(np.diff(request.exclude.indptr).max()) + int((~request.candidates).sum())
    assert not np.isin(plan.users, [3, 9]).any() and not np.isin(plan.items, [2, 7, 11, 12]).any()


def test_a_second_search_of_the_run_reuses_every_job(aws):
    request = search_request(tied_vectors())
    first = search(aws, request)
    again = search(aws, request)
    assert aws.training_jobs() == ["topx-run-1-knn"] and aws.transform_jobs() == ["topx-run-1-transform"]
    assert len(aws.sent("CreateModel")) == 1
    assert_same_lists(again, first)


def test_a_failed_transform_raises_its_failure_reason(aws):
    aws.emulator.fail_next("transform", "ClientError: the model container ran out of memory")
    with pytest.raises(TransformJobFailedError) as failed:
        search(aws, search_request(tied_vectors()))
    assert failed.value.reason == "ClientError: the model container ran out of memory"
    assert failed.value.job_name == "topx-run-1-transform"


def test_a_missing_output_object_is_a_named_error(aws):
    request = search_request(tied_vectors())
    search(aws, request)
    key = "runs/run-1/knn/lists/topx-run-1-transform/part-00001.rec.out"
    aws.s3.delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(MissingS3ObjectError, match="part-00001.rec.out"):
        search(aws, request)


def test_ivfflat_is_passed_on_and_ivfpq_is_refused_clearly(aws):
    search(aws, search_request(tied_vectors()), knn_index_type="faiss.IVFFlat")
    assert aws.sent("CreateTrainingJob")[0]["HyperParameters"]["index_type"] == "faiss.IVFFlat"
    with pytest.raises(ConfigError, match="IVFPQ does not support index_metric INNER_PRODUCT"):
        knn_hyperparameters(feature_dim=3, k=5, sample_size=10, index_type="faiss.IVFPQ")
    with pytest.raises(ConfigError, match="knn_index_type"):
        load_config(env={}, overrides={"sagemaker.knn_index_type": "faiss.IVFPQ"})


def test_item_labels_must_be_exact_in_float32():
    np.testing.assert_array_equal(item_labels(np.array([0, 2**24 - 1])), [0.0, 16777215.0])
    with pytest.raises(ItemLabelError, match="16777216"):
        item_labels(np.array([3, 2**24]))


def test_nothing_to_search_starts_no_job(aws):
    vectors = tied_vectors()
    request = search_request(vectors, users=np.array([3, 9]))  # COLD users only
    assert len(search(aws, request)) == 0 and aws.requests == []


def test_make_searcher_picks_the_sagemaker_engine(aws):
    cfg = sagemaker_config()
    cfg = cfg.__class__(**{**cfg.__dict__, "search": cfg.search.__class__(backend="sagemaker")})
    assert isinstance(make_searcher(cfg, run_id="r", clients=aws.clients()), SageMakerKnnSearcher)


def test_users_who_have_seen_too_much_for_k_are_warned_about(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("topx"), "propagate", True)  # the CLI turns it off
    vectors = tied_vectors(n_users=12, n_items=1100)
    request = search_request(vectors, top=10)
    heavy = request.exclude.tolil()
    heavy[1, :1050] = True  # more than 1024 - 10 candidate items seen
    plan = KnnPlan.of(SearchRequest(vectors, 10, heavy.tocsr(), request.candidates))
    assert plan.k == 1024
    assert "1 users have seen more than 1014 candidate items" in caplog.text


def assert_same_keyed(got, want):
    assert len(want) > 0
    for name in ("key", "rank", "value", "score"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name


@pytest.mark.parametrize("integers", [True, False])
def test_similar_items_and_audiences_through_knn_are_the_local_exact_searchs(aws, integers):
    """Similar items: k-NN over the item factors, queried by them (cosine and inner product);
    audiences: k-NN over the users, queried by the items, seen pairs excluded. Exact ties
    (integer vectors) and order-dependent float32 sums (normal ones) alike: the local lists."""
    from batch.config import SimilarConfig
    from batch.serve.search import make_keyed_searcher
    from batch.serve.similar import audiences, similar_items

    vectors = tied_vectors(n_users=40, n_items=60, dim=5, integers=integers)
    request = search_request(vectors)
    cfg = sagemaker_config()
    allowed = request.candidates & vectors.recommendable
    for metric, run_id in (("cosine", "run-cos"), ("inner_product", "run-ip")):
        settings = SimilarConfig(top=4, metric=metric)
        knn = make_keyed_searcher(replace_backend(cfg), "similar", run_id=run_id, clients=aws.clients())
        assert_same_keyed(similar_items(vectors, settings, allowed, searcher=knn),
                          similar_items(vectors, settings, allowed))
    items = np.array([0, 4, 8, 20, 59], np.int64)
    knn = make_keyed_searcher(replace_backend(cfg), "audience", run_id="run-1", clients=aws.clients())
    got = audiences(vectors, items, 6, request.exclude, searcher=knn)
    assert_same_keyed(got, audiences(vectors, items, 6, request.exclude))
    assert not request.exclude[got.value, got.key].any() and not np.isin(got.value, [3, 9]).any()
    assert aws.training_jobs() == ["topx-run-1-knn-audience", "topx-run-cos-knn-similar", "topx-run-ip-knn-similar"]
    assert aws.transform_jobs() == ["topx-run-1-knn-audience-transform", "topx-run-cos-knn-similar-transform",
                                    "topx-run-ip-knn-similar-transform"]


def replace_backend(cfg):
    from dataclasses import replace

    return replace(cfg, search=replace(cfg.search, backend="sagemaker"))


def test_keyed_searches_stay_local_on_the_local_backend():
    from batch.serve.search import make_keyed_searcher

    assert make_keyed_searcher(load_config(env={}), "similar", run_id="r") is None
    assert make_keyed_searcher(replace_backend(sagemaker_config()), "audience", run_id="r").name == "knn-audience"
