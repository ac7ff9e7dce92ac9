"""The AWS side of one run: boto3 clients, region, execution role, S3 locations, job names.

Both SageMaker engines hold one :class:`SageMakerSession`. Nothing touches AWS when it is built:
clients are created on first use (or handed in by tests and the pipeline), and settings that a
SageMaker job cannot do without (role, S3 prefix, region) are checked when first needed, with a
:class:`~batch.errors.ConfigError` that names the setting.
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from typing import Any

from batch.config import SageMakerConfig
from batch.errors import ConfigError

MAX_NAME = 63  # SageMaker job and model names: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
_RETRY_ROOM = len("-r99")  # kept free so a retried job's name still fits


def job_name(run_id: str, stage: str, attempt: int = 1) -> str:
    """``topx-<run_id>-<stage>`` (``-r<attempt>`` from the second attempt on), made of letters,
    digits and single hyphens, at most 63 characters. A run id too long to fit is cut and
    followed by a hash of the whole id, so two long run ids never share job names."""
    run = _slug(run_id)
    room = MAX_NAME - _RETRY_ROOM - len("topx--") - len(stage)
    if len(run) > room:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
        run = f"{run[:room - 9].rstrip('-')}-{digest}"
    name = f"topx-{run}-{stage}"
    return name if attempt == 1 else f"{name}-r{attempt}"


def _slug(text: str) -> str:
    """``text`` in letters, digits and single hyphens. Where that changed it, a hash of ``text``
    follows, so run ids that differ only in '.', '_' or repeated '-' get different names."""
    slug = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]+", "-", text)).strip("-")
    if not slug:
        raise ConfigError(f"run id {text!r} has no letters or digits to name SageMaker jobs by")
    return slug if slug == text else f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


class SageMakerSession:
    """Clients and locations for the SageMaker jobs of run ``run_id``.

    ``sagemaker_client`` / ``s3_client``: boto3 clients to use instead of creating them (tests
    hand in moto-backed ones). Created clients use standard retry mode (throttling is retried
    with backoff), the configured region and, when set, ``settings.endpoint_url`` for both
    services (one moto server serves S3 and SageMaker alike).
    """

    def __init__(self, settings: SageMakerConfig, run_id: str, *, sagemaker_client: Any = None,
                 s3_client: Any = None):
        self.settings, self.run_id = settings, run_id
        self.run_slug = _slug(run_id)
        self._clients = {"sagemaker": sagemaker_client, "s3": s3_client}

    def check(self) -> None:
        """Fail early, before any upload, on a missing role, S3 prefix or region."""
        _ = self.role_arn, self.bucket_and_root, self.region

    @property
    def sagemaker(self) -> Any:
        return self._client("sagemaker")

    @property
    def s3(self) -> Any:
        return self._client("s3")

    def _client(self, service: str) -> Any:
        if self._clients[service] is None:
            import boto3

            from batch.aws.clients import client_config

            # against an endpoint URL (the emulator), path-style S3 addresses: no bucket DNS names
            path_style = {"s3": {"addressing_style": "path"}} if service == "s3" and self.settings.endpoint_url else {}
            self._clients[service] = boto3.client(service, region_name=self.region, config=client_config(**path_style),
                                                  endpoint_url=self.settings.endpoint_url)
        return self._clients[service]

    @cached_property
    def region(self) -> str:
        """``sagemaker.region``, else the AWS default region of the environment."""
        region = self.settings.region
        if not region:
            import boto3

            region = boto3.session.Session().region_name
        if not region:
            raise ConfigError("no AWS region: set sagemaker.region (TOPX_SAGEMAKER_REGION) or AWS_REGION")
        return region

    @property
    def role_arn(self) -> str:
        """The execution role SageMaker jobs run as (it must read and write the S3 prefix)."""
        if not self.settings.role_arn:
            raise ConfigError("the SageMaker backend needs an execution role: set sagemaker.role_arn "
                              "(TOPX_SAGEMAKER_ROLE_ARN) to an IAM role ARN SageMaker may assume")
        return self.settings.role_arn

    @cached_property
    def bucket_and_root(self) -> tuple[str, str]:
        """The bucket, and the key prefix under which this run's objects live."""
        prefix = self.settings.s3_prefix
        if not prefix or not prefix.startswith("s3://") or not prefix[5:].split("/")[0]:
            raise ConfigError(f"sagemaker.s3_prefix (TOPX_SAGEMAKER_S3_PREFIX) must be an s3://bucket/prefix "
                              f"URI for SageMaker's inputs and outputs; got {prefix!r}")
        bucket, _, key = prefix[5:].partition("/")
        return bucket, "/".join(p for p in (key.strip("/"), self.run_slug) if p)

    @property
    def bucket(self) -> str:
        return self.bucket_and_root[0]

    def key(self, *parts: str) -> str:
        """An object key (or key prefix) of this run: ``<prefix>/<run>/<parts…>``."""
        return "/".join([self.bucket_and_root[1], *parts])

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def job_name(self, stage: str, attempt: int = 1) -> str:
        return job_name(self.run_id, stage, attempt)
