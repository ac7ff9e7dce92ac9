"""Shared pieces of the SageMaker tests: a moto AWS with the emulator, config, tiny data."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import numpy as np
import scipy.sparse as sp
from moto import mock_aws

from batch.aws.clients import AwsClients
from batch.config import FMHyperparameters, JobConfig, load_config
from batch.emulator.local import local_engines
from batch.emulator.sagemaker import SageMakerEmulator
from batch.serve.repackage import COLD, FEATURES_ONLY, TRAINED, Vectors
from batch.serve.search import SearchRequest

REGION = "eu-west-1"
BUCKET = "topx-test"
ROLE = "arn:aws:iam::123456789012:role/topx-sagemaker"
SMALL_HP = FMHyperparameters(num_factors=4, epochs=3, mini_batch_size=64)


def sagemaker_config(**settings: Any) -> JobConfig:
    """A job config for the SageMaker backend against the emulator (polling every 10 ms)."""
    values = {"region": REGION, "role_arn": ROLE, "s3_prefix": f"s3://{BUCKET}/runs", "poll_s": 0.01,
              "channel_shards": 3, **settings}
    return load_config(env={}, overrides={f"sagemaker.{k}": v for k, v in values.items()})


@dataclass
class Aws:
    """The emulator and boto3 clients of one test; ``requests`` records every SageMaker call's
    operation name and parameters, after botocore validated them."""

    emulator: SageMakerEmulator
    sagemaker: Any
    s3: Any
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def clients(self, **more: Any) -> AwsClients:
        return AwsClients(sagemaker=self.sagemaker, s3=self.s3, **more)

    def sent(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.requests if name == operation]

    def training_jobs(self) -> list[str]:
        return sorted(j["TrainingJobName"] for j in self.sagemaker.list_training_jobs()["TrainingJobSummaries"])

    def transform_jobs(self) -> list[str]:
        return sorted(j["TransformJobName"] for j in self.sagemaker.list_transform_jobs()["TransformJobSummaries"])


@contextmanager
def emulated_aws(endpoint_url: str | None = None):
    """moto (in-process, or the server at ``endpoint_url``) with the emulator and a bucket."""
    with mock_aws(), SageMakerEmulator(local_engines()) as emulator:
        sagemaker = boto3.client("sagemaker", region_name=REGION, endpoint_url=endpoint_url)
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint_url)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        aws = Aws(emulator, sagemaker, s3)
        sagemaker.meta.events.register("before-call.sagemaker.*", _recorder(aws))
        yield aws


def _recorder(aws: Aws):
    """Records each request as sent: botocore has validated and serialised it (JSON) by now."""

    def record(model, params, **kwargs):
        aws.requests.append((model.name, json.loads(params["body"] or b"{}")))

    return record


def tied_vectors(n_users: int = 14, n_items: int = 30, dim: int = 3, seed: int = 0, *,
                 integers: bool = True) -> Vectors:
    """Small-integer vectors, so that many inner products tie exactly (or, with ``integers``
    False, normal ones whose float32 inner products depend on summation order); users 3 and 9
    are COLD, user 5 has features only; item 7 is COLD."""
    rng = np.random.default_rng(seed)
    user_status = np.full(n_users, TRAINED, np.uint8)
    user_status[[3, 9]], user_status[5] = COLD, FEATURES_ONLY
    item_status = np.full(n_items, TRAINED, np.uint8)
    item_status[7] = COLD

    def draw(n: int) -> np.ndarray:
        values = rng.integers(-2, 3, (n, dim)) if integers else rng.normal(size=(n, dim))
        return values.astype(np.float32)

    return Vectors(users=draw(n_users), user_const=rng.normal(size=n_users).astype(np.float32), items=draw(n_items),
                   user_status=user_status, item_status=item_status,
                   popularity=np.ones(n_items, np.int64), predictor_type="binary_classifier")


def search_request(vectors: Vectors, top: int = 5, seed: int = 1, users: np.ndarray | None = None) -> SearchRequest:
    """Seen items (up to 8 per user, some users none), a deny list, and COLD users present."""
    rng = np.random.default_rng(seed)
    n_users, n_items = len(vectors.users), len(vectors.items)
    counts = rng.integers(0, 9, n_users)
    counts[0] = 0
    rows = np.repeat(np.arange(n_users), counts)
    cols = np.concatenate([rng.choice(n_items, c, replace=False) for c in counts])
    seen = sp.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(n_users, n_items))
    candidates = vectors.recommendable.copy()
    candidates[[2, 11, 12]] = False  # deny-listed
    return SearchRequest(vectors=vectors, top=top, exclude=seen, candidates=candidates, users=users)
