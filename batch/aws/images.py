"""Where the built-in SageMaker algorithm images live: one ECR account per region.

Factorization Machines and k-NN share the registry account of each region, as the SageMaker
Python SDK v2 records in ``src/sagemaker/image_uri_config/factorization-machines.json`` and
``knn.json`` (version ``1``). Only regions whose registry lives under ``amazonaws.com`` are
listed; any other region (China, isolated partitions, regions opened later) takes the image
URI from config (``sagemaker.fm_image`` / ``sagemaker.knn_image``).
"""

from __future__ import annotations

from batch.errors import ConfigError

ALGORITHMS = {"fm": "factorization-machines", "knn": "knn"}
IMAGE_VERSION = "1"

REGISTRY_ACCOUNTS = {
    "af-south-1": "455444449433",
    "ap-east-1": "286214385809",
    "ap-northeast-1": "351501993468",
    "ap-northeast-2": "835164637446",
    "ap-northeast-3": "364406365360",
    "ap-south-1": "991648021394",
    "ap-southeast-1": "475088953585",
    "ap-southeast-2": "712309505854",
    "ca-central-1": "469771592824",
    "eu-central-1": "664544806723",
    "eu-north-1": "669576153137",
    "eu-south-1": "257386234256",
    "eu-west-1": "438346466558",
    "eu-west-2": "644912444149",
    "eu-west-3": "749696950732",
    "me-south-1": "249704162688",
    "sa-east-1": "855470959533",
    "us-east-1": "382416733822",
    "us-east-2": "404615174143",
    "us-gov-west-1": "226302683700",
    "us-west-1": "632365934929",
    "us-west-2": "174872318107",
}


def image_uri(algorithm: str, region: str, override: str | None = None) -> str:
    """The container image of ``algorithm`` (``fm`` or ``knn``) in ``region``; ``override``
    (from config) wins. Raises :class:`ConfigError` for a region the table does not know."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown built-in algorithm {algorithm!r}")
    if override:
        return override
    account = REGISTRY_ACCOUNTS.get(region)
    if account is None:
        raise ConfigError(f"no known {ALGORITHMS[algorithm]} image for region {region!r}: set "
                          f"sagemaker.{algorithm}_image to the image URI for that region")
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{ALGORITHMS[algorithm]}:{IMAGE_VERSION}"
