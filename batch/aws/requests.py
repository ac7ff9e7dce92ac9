"""The boto3 requests both engines send: training jobs, a model, a batch transform.

Shapes follow the SageMaker API reference (CreateTrainingJob, CreateModel, CreateTransformJob);
botocore validates every request against the service model before it is sent.
"""

from __future__ import annotations

import math
from typing import Any

from batch.aws.channels import Part
from batch.aws.session import SageMakerSession

RECORDIO = "application/x-recordio-protobuf"
# k-NN writes one JSON line per input record, best match last (see batch.aws.knn_output).
KNN_ACCEPT = "application/jsonlines; verbose=true"
MIN_VOLUME_GB = 30
# Each input record of k-NN is a few hundred bytes but its answer holds k labels and distances
# (up to ~40 kB at k = 1024): the smallest request size keeps each answer bounded.
TRANSFORM_PAYLOAD_MB = 1


def channel(name: str, uri: str, distribution: str) -> dict[str, Any]:
    """An InputDataConfig entry: every object under the ``uri`` prefix, as recordIO-protobuf.
    ``distribution``: ``ShardedByS3Key`` (each instance reads its own objects) or ``FullyReplicated``."""
    return {"ChannelName": name, "ContentType": RECORDIO, "CompressionType": "None",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": distribution}}}


def file_channel(name: str, uri: str) -> dict[str, Any]:
    """An InputDataConfig entry of a script-mode job, as the SDK's estimators send an S3 URI:
    every object under the ``uri`` prefix, copied whole to each instance, no content type (the
    script reads the files itself)."""
    return {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}


def volume_gb(parts: list[Part]) -> int:
    """EBS volume per instance: File mode copies the channels onto it before training starts."""
    return volume_for(sum(p.size for p in parts))


def volume_for(channel_bytes: int) -> int:
    """EBS volume (GB) per instance for channels of ``channel_bytes`` bytes in all."""
    return max(MIN_VOLUME_GB, math.ceil(1.5 * channel_bytes / 2**30) + 5)


def training_request(session: SageMakerSession, *, name: str, stage: str, image: str, hyperparameters: dict[str, str],
                     channels: list[dict[str, Any]], instance_type: str, instance_count: int, volume: int,
                     tags: list[dict[str, str]], spot: bool = False) -> dict[str, Any]:
    """CreateTrainingJob arguments; the artifact lands under ``<run>/<stage>/output/``. With
    ``spot``, managed spot training with checkpoints under ``<run>/<stage>/checkpoints/``."""
    settings = session.settings
    stopping = {"MaxRuntimeInSeconds": settings.max_runtime_s}
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "RoleArn": session.role_arn,
        "HyperParameters": hyperparameters,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": session.uri(stage, "output")},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": instance_count, "VolumeSizeInGB": volume},
        "StoppingCondition": stopping,
        "Tags": tags,
    }
    if spot:  # spot capacity can be reclaimed: SageMaker restarts from the last checkpoint
        stopping["MaxWaitTimeInSeconds"] = settings.max_wait_s
        request["EnableManagedSpotTraining"] = True
        request["CheckpointConfig"] = {"S3Uri": session.uri(stage, "checkpoints")}
    return request


def model_request(session: SageMakerSession, *, name: str, image: str, artifact: str,
                  tags: list[dict[str, str]]) -> dict[str, Any]:
    """CreateModel arguments: the inference container of ``image`` serving ``artifact``."""
    return {"ModelName": name, "ExecutionRoleArn": session.role_arn, "Tags": tags,
            "PrimaryContainer": {"Image": image, "ModelDataUrl": artifact}}


def transform_request(session: SageMakerSession, *, name: str, model: str, input_uri: str, output_uri: str,
                      tags: list[dict[str, str]]) -> dict[str, Any]:
    """CreateTransformJob arguments for k-NN over every recordIO-protobuf object under
    ``input_uri``: records split out of each object, many per request, one output line each."""
    settings = session.settings
    return {
        "TransformJobName": name,
        "ModelName": model,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": TRANSFORM_PAYLOAD_MB,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": RECORDIO, "SplitType": "RecordIO", "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": KNN_ACCEPT, "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": settings.transform_instance_type,
                               "InstanceCount": settings.transform_instance_count},
        "Tags": tags,
    }
