"""The SageMaker script-mode entry point that trains NeuMF: ``python entry.py --epochs 10 ...``.

SageMaker's PyTorch framework container unpacks ``sourcedir.tar.gz`` (this file and ``ncf.py``)
and runs this script with the job's hyperparameters as ``--name value`` arguments; the
environment names the training channel's directory (``SM_CHANNEL_TRAIN``, holding
``interactions.npz`` as :func:`ncf.save_interactions` writes it) and the directory whose files
become the job's ``model.tar.gz`` (``SM_MODEL_DIR``). Self-contained like ``ncf.py``: topx is not
installed in the container. :func:`main` takes ``argv`` and the environment so topx's emulator
and tests can run it in-process.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

try:
    from . import ncf  # imported as batch.rerank.entry
except ImportError:
    import ncf  # run as a script next to ncf.py, as in the container

CHANNEL_FILE = "interactions.npz"
DEFAULT_CHANNEL = "/opt/ml/input/data/train"
DEFAULT_MODEL_DIR = "/opt/ml/model"
_SAGEMAKER_PREFIX = "--sagemaker_"  # the container's own hyperparameters (program, submit directory, region)


def parse_settings(argv: Sequence[str]) -> ncf.NCFSettings:
    """:class:`ncf.NCFSettings` from ``--name value`` arguments (every field optional); the
    container's own ``--sagemaker_*`` arguments are ignored, any other unknown one is an error."""
    parser = argparse.ArgumentParser(prog="entry.py", description="Train NeuMF on a SageMaker channel.",
                                     allow_abbrev=False)
    for f in dataclasses.fields(ncf.NCFSettings):
        parser.add_argument(f"--{f.name}", type=str, default=None)
    known, unknown = parser.parse_known_args(list(argv))
    stray = [a for a in unknown if a.startswith("--") and not a.startswith(_SAGEMAKER_PREFIX)]
    if stray:
        parser.error(f"unknown hyperparameters: {' '.join(stray)}")
    return ncf.NCFSettings.from_hyperparameters({k: v for k, v in vars(known).items() if v is not None})


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Train on ``$SM_CHANNEL_TRAIN/interactions.npz`` and write the artifact files into
    ``$SM_MODEL_DIR``; returns their paths."""
    environ = os.environ if environ is None else environ
    settings = parse_settings(sys.argv[1:] if argv is None else argv)
    channel = Path(environ.get("SM_CHANNEL_TRAIN", DEFAULT_CHANNEL)) / CHANNEL_FILE
    if not channel.is_file():
        raise ncf.NCFError(f"the training channel has no {CHANNEL_FILE}: {channel} is missing")
    users, items, n_users, n_items = ncf.load_interactions(channel)
    model = ncf.train_ncf(users, items, n_users, n_items, settings)
    return ncf.save_artifact(model, settings, environ.get("SM_MODEL_DIR", DEFAULT_MODEL_DIR))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main()
