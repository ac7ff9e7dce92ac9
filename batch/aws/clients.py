"""How topx makes boto3 clients: standard retry mode, so throttling and transient server errors
are retried with backoff (up to 10 attempts) before an error reaches topx."""

from __future__ import annotations

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
