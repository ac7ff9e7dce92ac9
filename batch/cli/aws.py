"""``topx sagemaker-emulator``: S3 and SageMaker on a local port, jobs run by the local engines."""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

log = logging.getLogger("topx.emulator")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sagemaker-emulator", help="serve S3 and SageMaker locally (moto); jobs run on the local engines",
        description="Serve moto's S3 and SageMaker on HOST:PORT with the emulator: training and batch transform "
                    "jobs really run, with the local engines, on their S3 inputs (a script-mode job on the PyTorch "
                    "image runs its entry point with this Python). Point topx at it with "
                    "TOPX_SAGEMAKER_ENDPOINT_URL=http://HOST:PORT. Runs until Ctrl-C.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    p.add_argument("--bucket", action="append", default=[], metavar="NAME",
                   help="create this S3 bucket at start (repeatable)")
    p.add_argument("--region", default="us-east-1", help="region of the created buckets (default us-east-1)")
    p.add_argument("--request-log", action="store_true",
                   help="log every HTTP request (off by default: clients' probes that fail by design read like "
                        "errors)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> dict[str, Any]:
    from batch.emulator.local import local_engines
    from batch.emulator.server import emulator_server

    with emulator_server(local_engines(), args.host, args.port, buckets=args.bucket, region=args.region,
                         request_log=args.request_log) as endpoint:
        log.info("SageMaker emulator at %s (buckets: %s); set TOPX_SAGEMAKER_ENDPOINT_URL=%s and fake AWS "
                 "credentials; Ctrl-C stops it", endpoint.url, ", ".join(args.bucket) or "none", endpoint.url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log.info("stopping the SageMaker emulator")
    return {"command": "sagemaker-emulator", "endpoint_url": endpoint.url, "stopped": True}
