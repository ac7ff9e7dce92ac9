"""What emulated SageMaker jobs do, part two: k-NN training and the k-NN batch transform.

k-NN training stores an index artifact: the items, their labels and k, in ``model_algo-1`` of a
``model.tar.gz`` (our own layout: only this emulator reads it). The transform searches it
exactly (the handed-in ``Engines.topk``) and writes one ``<input>.out`` of
verbose jsonlines per input object, ascending by distance, as SageMaker's k-NN writes them.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import numpy as np

from batch.aws.requests import RECORDIO
from batch.emulator.engines import Engines
from batch.emulator.jobs import (
    EmulatedJobError,
    MotoS3,
    hyperparameters,
    int_hyperparameter,
    read_channel,
    read_records,
    split,
)

KNN_REQUIRED = {"feature_dim", "k", "predictor_type", "sample_size"}
KNN_OPTIONAL = {"index_metric", "index_type", "faiss_index_ivf_nlists", "faiss_index_pq_m", "mini_batch_size",
                "dimension_reduction_type", "dimension_reduction_target"}
_MEMBER = "model_algo-1"


def train_knn(job: Any, s3: MotoS3) -> list[dict[str, Any]]:
    """A k-NN training job: check the hyperparameters as SageMaker does, sample ``sample_size``
    items as it does (fewer than the items silently drops some), store the index artifact."""
    hyper = hyperparameters(job.hyper_parameters, KNN_REQUIRED, KNN_OPTIONAL)
    metric, index = hyper.get("index_metric", "L2"), hyper.get("index_type", "faiss.Flat")
    if index == "faiss.IVFPQ" and metric in ("INNER_PRODUCT", "COSINE"):
        raise EmulatedJobError(f"ClientError: index_type faiss.IVFPQ does not support index_metric {metric}")
    if metric != "INNER_PRODUCT" or "dimension_reduction_type" in hyper:
        raise EmulatedJobError("emulator: only index_metric INNER_PRODUCT without dimension reduction is emulated")
    X, labels = read_channel(job, s3, "train", int_hyperparameter(hyper, "feature_dim"), labels=True)
    items = X.toarray()
    sample = int_hyperparameter(hyper, "sample_size")
    if sample < len(items):
        keep = np.sort(np.random.default_rng(0).choice(len(items), sample, replace=False))
        items, labels = items[keep], labels[keep]
    artifact = {"items": items, "labels": labels, "k": np.array(int_hyperparameter(hyper, "k"))}
    s3.write(job.model_artifacts["S3ModelArtifacts"], _tar_gz(artifact))
    return []


def read_knn_model(data: bytes) -> dict[str, np.ndarray]:
    """The arrays a k-NN training job of this emulator stored: items, labels, k."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile(tar.getmember(_MEMBER))
        with np.load(io.BytesIO(member.read())) as z:
            return {name: z[name] for name in z.files}


def _tar_gz(arrays: dict[str, np.ndarray]) -> bytes:
    payload = io.BytesIO()
    np.savez(payload, **arrays)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo(_MEMBER)
        info.size = payload.tell()
        payload.seek(0)
        tar.addfile(info, payload)
    return out.getvalue()


def transform(job: Any, sagemaker: Any, s3: MotoS3, engines: Engines) -> list[dict[str, Any]]:
    """A batch transform with a k-NN model of this emulator: exact inner-product search of each
    input object's records (k-NN knows no seen items: nothing is excluded), one ``.out`` each."""
    verbose = _check_transform_io(job)
    index = _knn_index(job.model_name, sagemaker, s3)
    source = job.transform_input["DataSource"]["S3DataSource"]["S3Uri"]
    output = job.transform_output["S3OutputPath"].rstrip("/")
    prefix = split(source)[1]
    for bucket, key in s3.keys(source):
        X, _ = read_records(s3, bucket, key, index["items"].shape[1], labels=False)
        position, inner = engines.topk(X.toarray().astype(np.float32), index["items"].astype(np.float32),
                                         int(index["k"]))
        # like SageMaker, each object's output is written once the whole object succeeded
        s3.write(f"{output}/{key[len(prefix):].lstrip('/')}.out",
                 transform_lines(inner, position, index["labels"], verbose=verbose))
    return []


def _check_transform_io(job: Any) -> bool:
    """Refuse what k-NN could not read; True when the output is verbose (distances and labels)."""
    given, accept = job.transform_input, job.transform_output.get("Accept") or "application/json"
    if given.get("ContentType") != RECORDIO or given.get("SplitType") != "RecordIO":
        raise EmulatedJobError(f"ClientError: emulator transforms need ContentType {RECORDIO} with SplitType "
                               f"RecordIO, not {given.get('ContentType')!r} with {given.get('SplitType')!r}")
    media, *params = [p.strip() for p in accept.split(";")]
    if media != "application/jsonlines":
        raise EmulatedJobError(f"ClientError: emulator transforms write application/jsonlines, not {accept!r}")
    return "verbose=true" in params


def _knn_index(model_name: str, sagemaker: Any, s3: MotoS3) -> dict[str, np.ndarray]:
    try:
        model = sagemaker.describe_model(model_name)
    except Exception as exc:  # moto's ValidationError
        raise EmulatedJobError(f"ClientError: {exc}") from None
    bucket, key = split(model.primary_container.get("ModelDataUrl", ""))
    try:
        return read_knn_model(s3.read(bucket, key))
    except (tarfile.TarError, KeyError, OSError, ValueError):
        raise EmulatedJobError(f"ClientError: s3://{bucket}/{key} is not a k-NN model of this emulator") from None


def transform_lines(inner: np.ndarray, position: np.ndarray, labels: np.ndarray, *, verbose: bool = True) -> bytes:
    """k-NN jsonlines, one per query row; the arrays are best first, a line is ascending by
    distance (for INNER_PRODUCT the distance is the inner product, so the best comes last).
    ``predicted_label``: the best match's label (every label is distinct: no vote to take)."""
    lines = []
    for row_inner, row_position in zip(inner, position, strict=True):
        valid = row_position >= 0
        found = labels[row_position[valid]][::-1].astype(np.float64).tolist()
        record = {"predicted_label": found[-1] if found else None}
        if verbose:
            record.update(distances=row_inner[valid][::-1].astype(np.float64).tolist(), labels=found)
        lines.append(json.dumps(record))
    return "".join(line + "\n" for line in lines).encode()
