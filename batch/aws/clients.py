"""How topx makes boto3 clients: standard retry mode, so throttling and transient server errors
are retried with backoff (up to 10 attempts) before an error reaches topx."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RETRIES = {"mode": "standard", "max_attempts": 10}


def client_config(**extra: Any) -> Any:
    """A botocore ``Config`` with topx's retry settings and ``extra`` options."""
    from botocore.config import Config

    return Config(retries=RETRIES, **extra)


def make_client(service: str, **kwargs: Any) -> Any:
    """``boto3.client(service, **kwargs)`` with topx's retry settings."""
    import boto3

    return boto3.client(service, config=client_config(), **kwargs)


@dataclass(frozen=True)
class AwsClients:
    """AWS clients handed to topx instead of made by it (tests hand in moto's). ``sagemaker`` and
    ``s3``: the SageMaker engines'; ``secrets``: Secrets Manager, for the database secret. A
    client left None is made from the configuration when first needed."""

    sagemaker: Any = None
    s3: Any = None
    secrets: Any = None


NO_CLIENTS = AwsClients()
