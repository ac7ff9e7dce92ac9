"""Which model a derived file came from, so that nothing made from another model is used.

A run directory can be reused (``topx train --out R`` over an earlier run): the new model then
sits next to vectors, lists and metrics of the old one. Every file derived from the model
therefore records the model's digest, the SHA-256 of ``model.tar.gz``: ``vectors.npz`` and
``lists.npz`` as an array ``model_sha256``, the ``train`` and ``evaluate`` sections of
``metrics.json`` as a key ``model_sha256``. Publishing refuses a file whose digest is not that
of the model beside it (:class:`StaleArtifactError`, exit status 2).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from batch.errors import StaleArtifactError

KEY = "model_sha256"
# Sections of metrics.json computed from the model or its lists.
MODEL_SECTIONS = ("train", "evaluate")

_cache: dict[tuple, str] = {}


def model_digest(model: str | Path) -> str:
    """Hex SHA-256 of a model file, read in 1 MiB blocks; cached while the file is unchanged."""
    path = Path(model)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        _cache[key] = digest.hexdigest()
    return _cache[key]


def recorded(npz: str | Path) -> str | None:
    """The model digest an ``.npz`` file records, None when it records none."""
    with np.load(npz, allow_pickle=False) as z:
        return str(z[KEY]) if KEY in z.files else None


def check(model: str | Path, digest: str | None, what: str, remedy: str) -> None:
    """Raise :class:`StaleArtifactError` unless ``digest`` is the digest of ``model``."""
    if digest is None:
        raise StaleArtifactError(f"{what} does not say which model it was made from (made by an older topx, or "
                                 f"not by topx): {remedy}")
    current = model_digest(model)
    if digest != current:
        raise StaleArtifactError(f"{what} was made from another model (sha256 {digest[:12]}…) than {model} "
                                 f"(sha256 {current[:12]}…): {remedy}")


def stamped(model: str | Path, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the model's digest added."""
    return {**values, KEY: model_digest(model)}


def check_metrics(model: str | Path, metrics: dict[str, Any], where: str, remedy: str) -> None:
    """Every model section of a metrics document must come from ``model``."""
    for section in MODEL_SECTIONS:
        if section in metrics:
            check(model, (metrics[section] or {}).get(KEY), f"section {section!r} of {where}", remedy)
