"""The SageMaker search engine: k-NN with ``index_metric=INNER_PRODUCT`` and a batch transform.

The item vectors of candidate items are the k-NN index (label = internal item index), the user
vectors of the request's non-COLD users are the transform's input, and the transform's jsonlines
are turned into ranked lists by :func:`batch.aws.knn_output.parse_knn_output`. k-NN knows nothing
of seen items, so it is asked for ``k = top + the most candidate items any user has seen``
(at most 1024): dropping a user's seen items afterwards still leaves ``top``, and the lists are
the ones the local exact search gives. Scores are ŷ = inner product + the user's constant c_u.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

from batch.aws.channels import MissingS3ObjectError, Part, S3Objects, part_bounds, split_uri
from batch.aws.clients import NO_CLIENTS, AwsClients
from batch.aws.images import image_uri
from batch.aws.knn_output import EXACT_LABELS, MAX_K, knn_k, parse_knn_output
from batch.aws.recordio import write_dense
from batch.aws.requests import channel, model_request, training_request, transform_request, volume_gb
from batch.aws.sagemaker_jobs import (
    TRAINING,
    TRANSFORM,
    JobInputsChangedError,
    JobOutcome,
    JobRunner,
    fingerprint,
    is_not_found,
)
from batch.aws.session import SageMakerSession
from batch.config import JobConfig
from batch.errors import ConfigError, DataError
from batch.lists import SOURCE_MODEL, TopLists
from batch.serve.repackage import COLD
from batch.serve.search import SearchRequest, SearchResult, probabilities

log = logging.getLogger("topx.search")


class ItemLabelError(DataError):
    """An item index cannot be a k-NN label: float32 labels are exact only below 2^24."""


class TransformOutputError(DataError):
    """A transform's output does not hold one line per input record."""


def knn_hyperparameters(*, feature_dim: int, k: int, sample_size: int, index_type: str) -> dict[str, str]:
    """The built-in k-NN's hyperparameters (strings) for an exact-as-possible inner-product index
    over ``sample_size`` items: sampling fewer than every item would silently drop some."""
    if index_type == "faiss.IVFPQ":
        raise ConfigError("sagemaker.knn_index_type faiss.IVFPQ does not support index_metric INNER_PRODUCT, "
                          "which ranking by the FM score needs: use faiss.Flat (exact) or faiss.IVFFlat")
    if index_type not in ("faiss.Flat", "faiss.IVFFlat"):
        raise ConfigError(f"sagemaker.knn_index_type must be faiss.Flat or faiss.IVFFlat; got {index_type!r}")
    values = {"feature_dim": feature_dim, "k": k, "predictor_type": "classifier", "sample_size": sample_size,
              "index_metric": "INNER_PRODUCT", "index_type": index_type}
    return {key: str(value) for key, value in values.items()}


def item_labels(items: np.ndarray) -> np.ndarray:
    """Internal item indices as k-NN labels (float32 (n,)); refuses any index ≥ 2^24."""
    items = np.asarray(items, np.int64)
    if items.size and items.max() >= EXACT_LABELS:
        raise ItemLabelError(f"item index {int(items.max())} is not exact as a float32 k-NN label (the "
                             f"SageMaker search handles at most {EXACT_LABELS} items): use the local search")
    return items.astype(np.float32)


@dataclass(frozen=True)
class KnnPlan:
    """What one search sends to SageMaker. ``users``: int64 request users that get a list (not
    COLD); ``items``: int64 candidate items, the index; ``seen``: CSR (len(users), n_items) of
    items each must not get, or None; ``deny``: bool (n_items,) non-candidates; ``k``."""

    users: np.ndarray
    items: np.ndarray
    seen: sp.csr_matrix | None
    deny: np.ndarray
    top: int
    k: int

    @classmethod
    def of(cls, request: SearchRequest) -> KnnPlan:
        status = request.vectors.user_status
        users = request.user_indices()
        users = users[status[users] != COLD]
        candidates = np.asarray(request.candidates, bool)
        items = np.flatnonzero(candidates).astype(np.int64)
        seen = None if request.exclude is None else sp.csr_matrix(request.exclude)[users]
        # only seen candidates cost a slot: k-NN never returns an item outside the index
        lost = None if seen is None else seen[:, items]
        k = knn_k(request.top, lost, n_items=max(len(items), 1))
        _warn_short_lists(lost, request.top)
        return cls(users, items, seen, ~candidates, request.top, k)


def _warn_short_lists(lost: sp.csr_matrix | None, top: int) -> None:
    if lost is None or not lost.shape[0]:
        return
    short = int(np.sum(np.diff(lost.indptr) > MAX_K - top))
    if short:
        log.warning("%d users have seen more than %d candidate items: k-NN returns at most %d neighbours, so "
                    "their lists may be shorter than %d", short, MAX_K - top, MAX_K, top)


class SageMakerKnnSearcher:
    """Searches with SageMaker k-NN jobs of run ``run_id``; see the module docstring.

    ``clients``: boto3 clients to use instead of creating them. ``name``: the stage the jobs and
    S3 objects are named after (``knn``: the users' lists, ``knn-similar`` and ``knn-audience``:
    the item-keyed searches of :mod:`batch.serve.similar`), so that the run's searches of
    different indexes keep jobs of their own.
    """

    def __init__(self, cfg: JobConfig, *, run_id: str, clients: AwsClients = NO_CLIENTS, name: str = "knn"):
        self.cfg, self.name = cfg, name
        self.session = SageMakerSession(cfg.sagemaker, run_id, sagemaker_client=clients.sagemaker,
                                        s3_client=clients.s3)
        self.jobs = JobRunner(self.session)
        self.transform_stage = "transform" if name == "knn" else f"{name}-transform"

    def search(self, request: SearchRequest) -> SearchResult:
        """Top-x lists of the request's non-COLD users, exactly as the local exact search ranks them."""
        self.session.check()
        image = image_uri("knn", self.session.region, self.cfg.sagemaker.knn_image)
        plan = KnnPlan.of(request)
        if not len(plan.users) or not len(plan.items):
            return SearchResult(TopLists.empty())
        labels = item_labels(plan.items)
        index = self._index(request, plan, labels, image)
        model = self._model(index, image)
        parts = self._user_parts(plan)
        transform = self._transform(request, plan, model, parts)
        report = {"engine": "sagemaker", "k": plan.k, "knn_job": index.name, "model": model,
                  "transform_job": transform.name, "reused": index.reused and transform.reused}
        return SearchResult(self._lists(request, plan, transform, parts), report)

    def _index(self, request: SearchRequest, plan: KnnPlan, labels: np.ndarray, image: str) -> JobOutcome:
        """The k-NN training job: the candidate items' vectors with their labels."""
        vectors = request.vectors.items[plan.items]
        hyper = knn_hyperparameters(feature_dim=vectors.shape[1], k=plan.k, sample_size=len(plan.items),
                                    index_type=self.cfg.sagemaker.knn_index_type)

        def create(name: str, tags: list[dict[str, str]]) -> None:
            objects = S3Objects(self.session.s3, self.session.bucket)
            parts = objects.upload_parts(self.session.key(self.name, "items"), len(vectors), 1,
                                         _dense_writer(vectors, labels))
            s = self.cfg.sagemaker
            self.session.sagemaker.create_training_job(**training_request(
                self.session, name=name, stage=self.name, image=image, hyperparameters=hyper,
                channels=[channel("train", self.session.uri(self.name, "items") + "/", "FullyReplicated")],
                instance_type=s.knn_instance_type, instance_count=1, volume=volume_gb(parts), tags=tags))

        return self.jobs.ensure(TRAINING, self.name, fingerprint(hyper, vectors, labels), create)

    def _model(self, index: JobOutcome, image: str) -> str:
        """The model serving the index; named after the k-NN job's attempt, made once."""
        name = self.session.job_name(f"{self.name}-model", index.attempt)
        artifact = index.description["ModelArtifacts"]["S3ModelArtifacts"]
        try:
            found = self.session.sagemaker.describe_model(ModelName=name)
        except Exception as exc:  # botocore's ClientError comes from the client's own class tree
            if not is_not_found(exc):
                raise
            self.session.sagemaker.create_model(**model_request(self.session, name=name, image=image,
                                                                artifact=artifact, tags=[]))
            log.info("created model %s from %s", name, artifact)
            return name
        if found.get("PrimaryContainer", {}).get("ModelDataUrl") != artifact:
            raise JobInputsChangedError(f"model {name} exists but serves another artifact than {artifact}; "
                                        "start a new run id", job_name=name)
        return name

    def _user_parts(self, plan: KnnPlan) -> list[Part]:
        """The transform's input objects: contiguous users, several objects for several instances."""
        s = self.cfg.sagemaker
        bounds = part_bounds(len(plan.users), max(s.channel_shards, s.transform_instance_count))
        return [Part(self.session.key(self.name, "users", f"part-{n:05d}.rec"), a, b, 0)
                for n, (a, b) in enumerate(bounds)]

    def _transform(self, request: SearchRequest, plan: KnnPlan, model: str, parts: list[Part]) -> JobOutcome:
        users = request.vectors.users[plan.users]

        def create(name: str, tags: list[dict[str, str]]) -> None:
            objects = S3Objects(self.session.s3, self.session.bucket)
            objects.upload_parts(self.session.key(self.name, "users"), len(users), len(parts),
                                 _dense_writer(users, None))
            self.session.sagemaker.create_transform_job(**transform_request(
                self.session, name=name, model=model, input_uri=self.session.uri(self.name, "users") + "/",
                output_uri=self.session.uri(self.name, "lists", name), tags=tags))

        return self.jobs.ensure(TRANSFORM, self.transform_stage, fingerprint(model, users, len(parts)), create)

    def _lists(self, request: SearchRequest, plan: KnnPlan, transform: JobOutcome, parts: list[Part]) -> TopLists:
        """Parse each input object's ``.out`` (found by name under the output path) in input order."""
        bucket, prefix = split_uri(transform.description["TransformOutput"]["S3OutputPath"])
        objects = S3Objects(self.session.s3, bucket)
        outputs = {key.rsplit("/", 1)[-1]: key for key in objects.keys(prefix.rstrip("/"))}
        pieces = []
        for part in parts:
            name = part.key.rsplit("/", 1)[-1] + ".out"
            if name not in outputs:
                raise MissingS3ObjectError(objects.uri(f"{prefix.rstrip('/')}/{name}"))
            pieces.append(self._parse(objects, outputs[name], part, plan))
        user, rank, item, inner = (np.concatenate(c) for c in zip(*pieces, strict=True))
        user = plan.users[user]
        vectors = request.vectors
        score = (inner.astype(np.float64) + vectors.user_const[user].astype(np.float64)).astype(np.float32)
        return TopLists(user.astype(np.int32), rank, item, score, probabilities(score, vectors.predictor_type),
                        np.full(len(user), SOURCE_MODEL, np.uint8))

    def _parse(self, objects: S3Objects, key: str, part: Part, plan: KnnPlan) -> tuple[np.ndarray, ...]:
        lines = _Counted(objects.lines(key))
        rows = parse_knn_output(lines, file=objects.uri(key), first_user=part.start, top=plan.top, seen=plan.seen,
                                deny=plan.deny, n_items=len(plan.deny))
        if lines.count != part.stop - part.start:
            raise TransformOutputError(f"{lines.count} lines for the {part.stop - part.start} users of "
                                       f"{part.key}", file=objects.uri(key))
        return rows


class _Counted:
    """Passes lines through, counting the ones that are not blank."""

    def __init__(self, lines):
        self.lines, self.count = lines, 0

    def __iter__(self):
        for line in self.lines:
            self.count += bool(line.strip())
            yield line


def _dense_writer(matrix: np.ndarray, labels: np.ndarray | None):
    def write(stream: BinaryIO, start: int, stop: int) -> None:
        write_dense(stream, np.ascontiguousarray(matrix[start:stop], np.float32),
                    None if labels is None else labels[start:stop])

    return write
