"""Where the SageMaker images topx runs live: one ECR account per region.

Factorization Machines and k-NN share the registry account of each region, as the SageMaker
Python SDK v2 records in ``src/sagemaker/image_uri_config/factorization-machines.json`` and
``knn.json`` (version ``1``). The PyTorch framework training image (script mode: the NeuMF
re-ranker) is the SDK's ``pytorch.json`` ``training`` entry for PyTorch 2.8.0 on Python 3.12,
``pytorch-training:2.8.0-{cpu,gpu}-py312``, the GPU build for ``ml.g*`` / ``ml.p*`` instances as
``sagemaker.image_uris.retrieve`` picks it. Only regions whose registry lives under
``amazonaws.com`` are listed; any other region (China, isolated partitions, regions opened
later) takes the image URI from config (``sagemaker.fm_image`` / ``knn_image`` / ``pytorch_image``).
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


PYTORCH_REPOSITORY = "pytorch-training"
PYTORCH_VERSION = "2.8.0"
PYTORCH_PYTHON = "py312"

PYTORCH_ACCOUNTS = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-east-2": "975050140332",
    "ap-northeast-1": "763104351884",
    "ap-northeast-2": "763104351884",
    "ap-northeast-3": "364406365360",
    "ap-south-1": "763104351884",
    "ap-south-2": "772153158452",
    "ap-southeast-1": "763104351884",
    "ap-southeast-2": "763104351884",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ap-southeast-5": "550225433462",
    "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437",
    "ca-central-1": "763104351884",
    "ca-west-1": "204538143572",
    "eu-central-1": "763104351884",
    "eu-central-2": "380420809688",
    "eu-north-1": "763104351884",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "eu-west-1": "763104351884",
    "eu-west-2": "763104351884",
    "eu-west-3": "763104351884",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "mx-central-1": "637423239942",
    "sa-east-1": "763104351884",
    "us-east-1": "763104351884",
    "us-east-2": "763104351884",
    "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353",
    "us-west-1": "763104351884",
    "us-west-2": "763104351884",
}


def pytorch_image(region: str, instance_type: str, override: str | None = None) -> str:
    """The PyTorch framework training image for ``instance_type`` (``ml.<family>.<size>``) in
    ``region``: the GPU build on ``g*`` and ``p*`` families, the CPU build on the others;
    ``override`` (from config) wins. Raises :class:`ConfigError` for a region the table does not
    know, and for an instance type the image has no build for (Inferentia, Trainium)."""
    if override:
        return override
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 and instance_type.startswith("ml.") else ""
    if not family or family.startswith(("inf", "trn")):
        raise ConfigError(f"instance type {instance_type!r}: the PyTorch training image runs on ml.<family>.<size> "
                          "CPU or GPU instances (no Inferentia or Trainium build)")
    account = PYTORCH_ACCOUNTS.get(region)
    if account is None:
        raise ConfigError(f"no known {PYTORCH_REPOSITORY} image for region {region!r}: set "
                          "sagemaker.pytorch_image to the image URI for that region")
    processor = "gpu" if family[0] in "gp" else "cpu"
    return (f"{account}.dkr.ecr.{region}.amazonaws.com/{PYTORCH_REPOSITORY}:"
            f"{PYTORCH_VERSION}-{processor}-{PYTORCH_PYTHON}")
