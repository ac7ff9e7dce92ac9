"""The SageMaker factorization-machines model artifact, written and read with numpy only.

``model.tar.gz`` ⊃ ``model_algo-1`` (a stored zip) ⊃ ``meta.json``, ``symbol.json`` and
``params`` (an MXNet NDArray list: ``arg:v`` (N, k), ``arg:w1_weight`` (N, 1),
``arg:w0_weight`` (1,), float32). Both training backends produce it; every later stage reads it
through :func:`read_model`.
"""

from batch.artifact.errors import (
    CorruptArtifactError,
    ModelContentError,
    TruncatedArtifactError,
    UnsupportedArtifactError,
)
from batch.artifact.fm import PREDICTOR_TYPES, FMModel, model_params, read_model, write_model
from batch.artifact.ndarray import read_ndarray_list, write_ndarray_list

__all__ = [
    "PREDICTOR_TYPES",
    "CorruptArtifactError",
    "FMModel",
    "ModelContentError",
    "TruncatedArtifactError",
    "UnsupportedArtifactError",
    "model_params",
    "read_model",
    "read_ndarray_list",
    "write_model",
    "write_ndarray_list",
]
