"""The factorization machine of a SageMaker FM artifact, and ``model.tar.gz`` written and read.

The artifact is the seam between training and everything after it: the local trainer writes
exactly what SageMaker's built-in FM writes, and the rest of topx reads either the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from batch import storage
from batch.artifact.archive import ModelFiles, pack_model_tar_gz, unpack_model
from batch.artifact.errors import CorruptArtifactError, ModelContentError
from batch.artifact.ndarray import read_ndarray_list, write_ndarray_list
from batch.artifact.symbol import meta_json, predictor_type_of_symbol, symbol_json
from batch.errors import DataError
from batch.log import log

PREDICTOR_TYPES = ("binary_classifier", "regressor")
_ARCHIVE_SLACK = 4 << 20  # meta.json, symbol.json, tar and zip headers
_EXPANSION = 64
# Parameter names in the NDArray list; MXNet's checkpoint loader strips the "arg:" prefix.
KEY_V, KEY_W, KEY_B = "arg:v", "arg:w1_weight", "arg:w0_weight"


@dataclass(frozen=True, eq=False)
class FMModel:
    """ŷ(x) = b + Σ_j w_j x_j + Σ_{j<l} ⟨v_j, v_l⟩ x_j x_l over N = ``feature_dim`` features.

    ``V``: float32 (N, k), row j is the factor vector v_j. ``w``: float32 (N,), linear weights
    ((N, 1) is accepted and flattened). ``b``: the global bias, a float32 value held as float.
    ``predictor_type``: ``"binary_classifier"`` (predict = sigmoid(ŷ)) or ``"regressor"``
    (predict = ŷ). Inputs are converted to C-contiguous float32; all values must be finite.
    """

    V: np.ndarray
    w: np.ndarray
    b: float
    predictor_type: str

    def __post_init__(self):
        V = np.ascontiguousarray(self.V, dtype=np.float32)
        w = np.ascontiguousarray(self.w, dtype=np.float32)
        b = np.asarray(self.b, dtype=np.float32).reshape(-1)
        if w.ndim == 2 and w.shape[1] == 1:
            w = w.reshape(-1)
        _check_parameters(V, w, b, self.predictor_type)
        object.__setattr__(self, "V", V)
        object.__setattr__(self, "w", w)
        object.__setattr__(self, "b", float(b[0]))

    @property
    def feature_dim(self) -> int:
        return self.V.shape[0]

    @property
    def num_factors(self) -> int:
        return self.V.shape[1]

    def decision(self, X: sp.spmatrix | sp.sparray | np.ndarray) -> np.ndarray:
        """Raw scores ŷ(x) of the rows of ``X`` (n, N): float32 (n,), computed in float64 as
        b + Xw + ½(‖XV‖² − X²·‖v‖²) row-wise, which is Σ_{j<l} without forming pairs."""
        X = self._as_csr(X)
        V = self.V.astype(np.float64)
        xv = X @ V
        self_terms = X.power(2) @ np.einsum("jf,jf->j", V, V)
        pairwise = 0.5 * (np.einsum("nf,nf->n", xv, xv) - self_terms)
        return (self.b + X @ self.w.astype(np.float64) + pairwise).astype(np.float32)

    def predict(self, X: sp.spmatrix | sp.sparray | np.ndarray) -> np.ndarray:
        """float32 (n,): sigmoid(ŷ) for a binary classifier (a probability), ŷ for a regressor."""
        scores = self.decision(X)
        return expit(scores) if self.predictor_type == "binary_classifier" else scores

    def _as_csr(self, X: Any) -> sp.csr_matrix:
        # A copy of our own, in canonical form. Without copy=True the float64 matrix shares the
        # caller's index arrays, and scipy sorting them in place (for X.power(2) @ ...) left the
        # caller's values against the wrong columns; duplicate entries must be summed before
        # squaring, since x² ≠ Σ parts².
        X = sp.csr_matrix(X, dtype=np.float64, copy=True)
        X.sum_duplicates()
        if X.shape[1] != self.feature_dim:
            raise DataError(f"the design matrix has {X.shape[1]} columns but the model has "
                            f"feature_dim {self.feature_dim}")
        return X


def _check_parameters(V: np.ndarray, w: np.ndarray, b: np.ndarray, predictor_type: str) -> None:
    if predictor_type not in PREDICTOR_TYPES:
        raise ModelContentError(f"predictor_type must be one of {', '.join(PREDICTOR_TYPES)}; "
                                f"got {predictor_type!r}")
    if V.ndim != 2 or min(V.shape) < 1:
        raise ModelContentError(f"factors V must be a non-empty (N, k) matrix; got {V.shape}")
    if w.shape != (V.shape[0],) or b.size != 1:
        raise ModelContentError(f"FM parameters disagree: V is {V.shape}, w is {w.shape}, "
                                f"b has {b.size} values (want (N,) and 1)")
    for name, values in (("V", V), ("w", w), ("b", b)):
        if not np.all(np.isfinite(values)):
            raise ModelContentError(f"FM parameter {name} holds NaN or infinite values")


def model_params(model: FMModel) -> dict[str, np.ndarray]:
    """The NDArray list SageMaker FM saves: ``arg:v`` (N, k), ``arg:w1_weight`` (N, 1),
    ``arg:w0_weight`` (1,), all float32, in that order."""
    return {KEY_V: model.V, KEY_W: model.w.reshape(-1, 1),
            KEY_B: np.array([model.b], dtype=np.float32)}


def model_from_params(arrays: Mapping[str, np.ndarray], predictor_type: str) -> FMModel:
    """An :class:`FMModel` from a loaded NDArray list (keys with or without ``arg:``)."""
    named = {key.removeprefix("arg:"): value for key, value in arrays.items()}
    wanted = [k.removeprefix("arg:") for k in (KEY_V, KEY_W, KEY_B)]
    missing = [k for k in wanted if k not in named]
    if missing:
        raise ModelContentError(f"the model parameters lack {', '.join(missing)} "
                                f"(they hold {', '.join(arrays) or 'nothing'})")
    extra = sorted(set(named) - set(wanted))
    if extra:
        log.warning("the model parameters also hold %s, which an FM does not use", extra)
    V, w, b = (named[k] for k in wanted)
    for key, value in zip(wanted, (V, w, b), strict=True):
        if value.dtype.kind != "f":
            raise ModelContentError(f"model parameter {key} is {value.dtype}, not floating point")
    if w.ndim != 2 or w.shape[1:] != (1,) or b.size != 1:
        raise ModelContentError(f"model parameters have shapes v {V.shape}, w1_weight {w.shape}, "
                                f"w0_weight {b.shape}; want (N, k), (N, 1), (1,)")
    return FMModel(V=V, w=w, b=b, predictor_type=predictor_type)


def write_model(model: FMModel, dest: str | os.PathLike | IO[bytes], *,
                hyperparameters: Mapping[str, Any] | None = None) -> None:
    """Write ``model`` as SageMaker FM's ``model.tar.gz`` to a path, an ``s3://`` URI or a binary
    file object. ``hyperparameters`` (stored as strings, as SageMaker passes them) go to
    meta.json. The same model and hyperparameters always give the same bytes."""
    hyper = {str(k): str(v) for k, v in (hyperparameters or {}).items()}
    files = ModelFiles(
        params=write_ndarray_list(model_params(model)),
        symbol=symbol_json(model.feature_dim, model.num_factors, model.predictor_type).encode(),
        meta=meta_json(model.feature_dim, model.num_factors, model.predictor_type, hyper).encode(),
    )
    blob = pack_model_tar_gz(files)
    if hasattr(dest, "write"):
        dest.write(blob)
    else:
        storage.write_bytes(dest, blob)


def model_bytes_bound(feature_dim: int, num_factors: int) -> int:
    """The most bytes any member of the artifact of an FM of this shape holds once decompressed:
    V, w and b as float32, row indices should they be row_sparse, and room for the JSON files
    and tar/zip headers."""
    return 4 * (feature_dim * (num_factors + 1) + 1) + 8 * feature_dim + _ARCHIVE_SLACK


def default_bound(compressed: int) -> int:
    """The bound when the model's shape is not known: float32 parameters barely compress, so a
    member far larger than its compressed bytes is not a model."""
    return _ARCHIVE_SLACK + _EXPANSION * compressed


def read_model(src: str | os.PathLike | bytes | IO[bytes], *, predictor_type: str | None = None,
               shape: tuple[int, int] | None = None) -> FMModel:
    """Read an FM from ``model.tar.gz`` (or ``model_algo-1``: zip or bare NDArray list) given as
    a path, an ``s3://`` URI, bytes or a binary file object.

    The predictor type comes from meta.json or symbol.json; ``predictor_type`` supplies it for a
    bare NDArray list, which does not say, and must agree with the artifact otherwise. A corrupt,
    truncated or inconsistent artifact raises an :class:`~batch.errors.ArtifactError` subclass.
    ``shape``: the expected (feature_dim, num_factors); no member may decompress to more than
    such a model takes (:func:`model_bytes_bound`; without it, :func:`default_bound`), else
    :class:`ArtifactTooLargeError`.
    """
    data = _source_bytes(src)
    limit = model_bytes_bound(*shape) if shape else default_bound(len(data))
    files = unpack_model(data, limit)
    meta = _parse_json(files.meta, "meta.json")
    graph = _parse_json(files.symbol, "symbol.json")
    kind = _predictor_type(meta, graph, predictor_type)
    model = model_from_params(read_ndarray_list(files.params, limit), kind)
    _check_meta(meta, model)
    return model


def _source_bytes(src: Any) -> bytes:
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src)
    if hasattr(src, "read"):
        return src.read()
    return storage.read_bytes(src)


def _parse_json(data: bytes | None, name: str) -> Any:
    if data is None:
        return None
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorruptArtifactError(f"{name} in the model artifact is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise CorruptArtifactError(f"{name} in the model artifact is not a JSON object")
    return parsed


def _predictor_type(meta: dict | None, graph: dict | None, given: str | None) -> str:
    """The one predictor type that meta.json, symbol.json's output op and ``given`` agree on."""
    said = {"meta.json": (meta or {}).get("predictor_type"),
            "symbol.json": predictor_type_of_symbol(graph) if graph is not None else None,
            "the predictor_type argument": given}
    said = {source: kind for source, kind in said.items() if kind is not None}
    if len(set(said.values())) > 1:
        raise ModelContentError("the model's predictor type is contradictory: " +
                                ", ".join(f"{s} says {k!r}" for s, k in said.items()))
    if not said:
        raise ModelContentError("the model artifact does not say whether it is a binary_classifier "
                                "or a regressor (a bare NDArray list); pass predictor_type")
    kind = next(iter(said.values()))
    if kind not in PREDICTOR_TYPES:
        raise ModelContentError(f"unknown predictor_type {kind!r} in the model artifact")
    return kind


def _check_meta(meta: dict | None, model: FMModel) -> None:
    for key, actual in (("feature_dim", model.feature_dim), ("num_factors", model.num_factors)):
        declared = (meta or {}).get(key)
        if declared is not None and declared != actual:
            raise ModelContentError(f"meta.json says {key} {declared!r} but the parameters "
                                    f"have {actual}")


def entity_halves(model: FMModel, rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """The FM split at an entity (users' or items' design rows ``rows``, CSR (n, feature_dim)):
    p = Vᵀx (float64 (n, k)) and the entity's own part of ŷ without b: wᵀx + ½(‖p‖² − Σ x_j²‖v_j‖²)."""
    V = model.V.astype(np.float64)
    rows = rows.astype(np.float64)
    p = np.asarray(rows @ V)
    own = rows @ model.w.astype(np.float64) + 0.5 * (np.einsum("nk,nk->n", p, p) - rows.power(2) @ (V * V).sum(1))
    return p, np.asarray(own).ravel()
