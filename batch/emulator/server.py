"""The SageMaker emulator behind an HTTP endpoint: moto's server, in this process, on a port.

Point topx at it with ``TOPX_SAGEMAKER_ENDPOINT_URL``: one endpoint serves S3 and SageMaker
alike. moto accepts any credentials, but boto3 wants some, so set fake ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batch.emulator.engines import Engines
from batch.errors import MissingDependencyError

if TYPE_CHECKING:
    from batch.emulator.sagemaker import SageMakerEmulator

FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class EmulatorEndpoint:
    """A running emulator server: its URL and the emulator (for ``fail_next``)."""

    url: str
    emulator: SageMakerEmulator


@contextmanager
def emulator_server(engines: Engines, host: str = "127.0.0.1", port: int = 5000, *, buckets: Sequence[str] = (),
                    region: str = "us-east-1", request_log: bool = False) -> Iterator[EmulatorEndpoint]:
    """Serve moto with the emulator, its jobs run by ``engines``, on ``host:port`` (port 0: any
    free port) until the block ends; ``buckets`` are created first, in ``region``.
    ``request_log``: log every HTTP request. Off by default: clients probe with requests that
    fail by design (a 400 or 404 while a job runs fine), which read like errors."""
    try:
        from moto.server import ThreadedMotoServer

        from batch.emulator.sagemaker import SageMakerEmulator
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "moto", "emulator", "The SageMaker emulator") from None

    logging.getLogger("werkzeug").setLevel(logging.INFO if request_log else logging.WARNING)
    with SageMakerEmulator(engines) as emulator:
        server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        server.start()
        try:
            bound_host, bound_port = server.get_host_and_port()
            url = f"http://{bound_host}:{bound_port}"
            create_buckets(url, region, buckets)
            yield EmulatorEndpoint(url, emulator)
        finally:
            server.stop()


def create_buckets(url: str, region: str, buckets: Sequence[str]) -> None:
    """Create ``buckets`` through the endpoint, as any S3 client would."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=url, region_name=region, **FAKE_CREDENTIALS)
    for bucket in buckets:
        where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **where)
