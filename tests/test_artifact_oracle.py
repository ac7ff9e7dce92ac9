"""The FM artifact against real MXNet 1.9.1 (side virtualenv, see tests/oracles.py).

Scripts run in the oracle's python; arrays cross the process boundary as .npz/.params files in
tmp_path, never as printed numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from oracles import run_oracle
from test_artifact import legacy_dense, ndlist, random_model, v1_dense

from batch.artifact import model_params, read_ndarray_list, write_model, write_ndarray_list
from batch.artifact.symbol import fm_graph

pytestmark = pytest.mark.oracle


def bits(a: np.ndarray) -> np.ndarray:
    """The raw bit patterns, so NaN payloads and -0.0 compare exactly."""
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a


def assert_bit_equal(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.array_equal(bits(ours), bits(theirs))


MX_LOAD = """
import sys, numpy as np, mxnet as mx
loaded = mx.nd.load(sys.argv[1])
if isinstance(loaded, list):
    loaded = {str(i): a for i, a in enumerate(loaded)}
np.savez(sys.argv[2], **{k: v.asnumpy() for k, v in loaded.items()})
"""


def mx_load(tmp_path, data: bytes) -> dict[str, np.ndarray]:
    (tmp_path / "in.params").write_bytes(data)
    run_oracle("mxnet", MX_LOAD, str(tmp_path / "in.params"), str(tmp_path / "out.npz"))
    with np.load(tmp_path / "out.npz") as z:
        return {k: z[k] for k in z.files}


def test_mxnet_loads_our_params_identically(tmp_path):
    model = random_model(n=300, k=8)
    theirs = mx_load(tmp_path, write_ndarray_list(model_params(model)))
    assert set(theirs) == {"arg:v", "arg:w1_weight", "arg:w0_weight"}
    for key, ours in model_params(model).items():
        assert_bit_equal(ours, theirs[key])


def test_mxnet_loads_hand_built_v1_and_legacy_arrays_like_we_do(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    data = ndlist([v1_dense(a), legacy_dense(a[:, :2] * 3)], ["v1", "legacy"])
    theirs, ours = mx_load(tmp_path, data), read_ndarray_list(data)
    for key in ("v1", "legacy"):
        assert_bit_equal(ours[key], theirs[key])


MX_SAVE = """
import sys, numpy as np, mxnet as mx
src, out = np.load(sys.argv[1]), sys.argv[2]
dense = {k[len("dense:"):]: mx.nd.array(src[k], dtype=src[k].dtype)
         for k in src.files if k.startswith("dense:")}
mx.nd.save(out + "/dense.params", dense)
rsp_rows = src["rsp_values"]
sparse = {
    "from_dense": mx.nd.array(src["rsp_dense"]).tostype("row_sparse"),
    "stored_zero_row": mx.nd.sparse.row_sparse_array(
        (rsp_rows, src["rsp_indices"]), shape=tuple(src["rsp_shape"])),
    "empty": mx.nd.sparse.zeros("row_sparse", (6, 3)),
    "csr": mx.nd.array(src["rsp_dense"]).tostype("csr"),
}
mx.nd.save(out + "/sparse.params", sparse)
mx.nd.save(out + "/unnamed.params", [mx.nd.array(src["dense:v"]), mx.nd.array(src["dense:b"])])
with mx.np_shape(True):
    mx.nd.save(out + "/v3.params", {"v": mx.nd.array(src["dense:v"]),
                                    "empty": mx.nd.array(np.zeros((0, 3), "float32"))})
    scalar = mx.nd.array(np.float32(2.5)).reshape(())
    mx.nd.save(out + "/v3_scalar.params", {"s": scalar})
as_numpy = {"sparse:" + k: v.asnumpy() for k, v in sparse.items()}
np.savez(out + "/expected.npz", **as_numpy)
"""


def mxnet_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    specials = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4e38, 1.0, -2.5], np.float32)
    rsp_dense = rng.normal(size=(8, 3)).astype(np.float32)
    rsp_dense[[0, 3, 4, 7]] = 0  # all-zero rows, dropped by tostype("row_sparse")
    return {
        "dense:b": np.array([0.25], np.float32),
        "dense:w": rng.normal(size=(50, 1)).astype(np.float32),
        "dense:v": rng.normal(size=(50, 4)).astype(np.float32),
        "dense:specials": specials,
        "dense:f64": rng.normal(size=(2, 3, 2)),
        "dense:i32": np.arange(-3, 4, dtype=np.int32),
        "dense:i64": np.array([2**40, -1], np.int64),
        "dense:f16": np.array([0.5, -1.5, 65504], np.float16),
        "dense:u8": np.array([0, 255, 7], np.uint8),
        "rsp_dense": rsp_dense,
        # an explicitly stored row of zeros (row 2) next to real rows
        "rsp_values": np.vstack([rsp_dense[1], np.zeros(3, np.float32), rsp_dense[5]]),
        "rsp_indices": np.array([1, 2, 5], np.int64),
        "rsp_shape": np.array([8, 3]),
    }


def test_arrays_mxnet_writes_read_back_bit_exactly_and_our_bytes_match(tmp_path):
    inputs = mxnet_inputs()
    np.savez(tmp_path / "inputs.npz", **inputs)
    run_oracle("mxnet", MX_SAVE, str(tmp_path / "inputs.npz"), str(tmp_path))
    dense = {k.removeprefix("dense:"): v for k, v in inputs.items() if k.startswith("dense:")}
    mx_bytes = (tmp_path / "dense.params").read_bytes()
    assert write_ndarray_list(dense) == mx_bytes
    for key, array in read_ndarray_list(mx_bytes).items():
        assert_bit_equal(array, dense[key])

    sparse = read_ndarray_list((tmp_path / "sparse.params").read_bytes())
    with np.load(tmp_path / "expected.npz") as expected:
        for key in ("from_dense", "stored_zero_row", "empty", "csr"):
            assert_bit_equal(sparse[key], expected["sparse:" + key])
    assert_bit_equal(sparse["from_dense"], inputs["rsp_dense"])
    assert not sparse["empty"].any() and sparse["empty"].shape == (6, 3)

    unnamed = read_ndarray_list((tmp_path / "unnamed.params").read_bytes())
    assert_bit_equal(unnamed["0"], dense["v"]) and assert_bit_equal(unnamed["1"], dense["b"])
    v3 = read_ndarray_list((tmp_path / "v3.params").read_bytes())
    assert_bit_equal(v3["v"], dense["v"]) and assert_bit_equal(v3["empty"], np.zeros((0, 3), "f4"))
    scalar = read_ndarray_list((tmp_path / "v3_scalar.params").read_bytes())["s"]
    assert scalar.shape == () and scalar == np.float32(2.5)


# The published recipe: https://aws.amazon.com/blogs/machine-learning/extending-amazon-sagemaker-
# factorization-machines-algorithm-to-predict-top-x-recommendations/ (tar xzf, unzip, rename,
# Module.load). tarfile/zipfile stand in for the tar and unzip commands.
RECIPE = """
import os, sys, tarfile, zipfile, numpy as np, mxnet as mx
with tarfile.open("model.tar.gz") as t:
    t.extractall(".")
with zipfile.ZipFile("model_algo-1") as z:
    z.extractall(".")
os.rename("symbol.json", "model-symbol.json")
os.rename("params", "model-0000.params")
m = mx.module.Module.load("./model", 0, False, label_names=["out_label"])
x = np.load("design.npz")
X = mx.nd.sparse.csr_matrix((x["data"], x["indices"], x["indptr"]), shape=tuple(x["shape"]))
m.bind(data_shapes=[("data", X.shape)], for_training=False)
m.forward(mx.io.DataBatch(data=[X]), is_train=False)
args = {"arg:" + k: v.asnumpy() for k, v in m._arg_params.items()}
np.savez("out.npz", prediction=m.get_outputs()[0].asnumpy(), **args)
"""


def design_with_features(rows: int, users: int, items: int, features: int, seed=2) -> sp.csr_matrix:
    """[user one-hot | item one-hot | several real-valued side features] per row."""
    rng = np.random.default_rng(seed)
    one_hot = np.zeros((rows, users + items), np.float32)
    one_hot[np.arange(rows), rng.integers(0, users, rows)] = 1
    one_hot[np.arange(rows), users + rng.integers(0, items, rows)] = 1
    side = rng.uniform(-1.5, 2.5, (rows, features)) * (rng.random((rows, features)) < 0.6)
    return sp.csr_matrix(np.hstack([one_hot, side.astype(np.float32)]))


@pytest.mark.parametrize("kind", ["binary_classifier", "regressor"])
def test_published_recipe_loads_our_artifact_and_predicts_like_us(tmp_path, kind):
    users, items, features, k = 9, 13, 6, 4
    model = random_model(n=users + items + features, k=k, kind=kind, seed=4)
    write_model(model, tmp_path / "model.tar.gz", hyperparameters={"num_factors": str(k)})
    X = design_with_features(64, users, items, features)
    assert X.getnnz(axis=1).min() >= 3
    np.savez(tmp_path / "design.npz", data=X.data, indices=X.indices, indptr=X.indptr,
             shape=np.array(X.shape))
    run_oracle("mxnet", RECIPE, cwd=tmp_path)
    with np.load(tmp_path / "out.npz") as out:
        for key, ours in model_params(model).items():
            assert_bit_equal(ours, out[key])
        prediction = out["prediction"]
    assert prediction.shape == (64, 1)
    np.testing.assert_allclose(prediction[:, 0], model.predict(X), rtol=1e-5, atol=1e-6)
    assert np.ptp(model.predict(X)) > 0.1  # the comparison is not between near-constants


MX_GRAPH = """
import sys, json, mxnet as mx
N, k, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
data = mx.sym.var("data", stype="csr")
w1 = mx.sym.var("w1_weight", shape=(N, 1))
linear = mx.sym.broadcast_add(mx.sym.dot(data, w1, name="linear"),
                              mx.sym.var("w0_weight", shape=(1,)), name="linear_bias")
v = mx.sym.var("v", shape=(N, k))
xv_sq = mx.sym.sum(mx.sym.square(mx.sym.dot(data, v, name="xv"), name="xv_sq"),
                   axis=1, keepdims=True, name="xv_sq_sum")
v_sq = mx.sym.sum(mx.sym.square(v, name="v_sq"), axis=1, keepdims=True, name="v_sq_sum")
self_terms = mx.sym.dot(mx.sym.square(data, name="x_sq"), v_sq, name="self_interaction")
pairwise = mx.sym._internal._mul_scalar(mx.sym.elemwise_sub(xv_sq, self_terms, name="pair_diff"),
                                        scalar=0.5, name="pairwise")
score = mx.sym.elemwise_add(linear, pairwise, name="score")
output = {"binary_classifier": mx.sym.LogisticRegressionOutput,
          "regressor": mx.sym.LinearRegressionOutput}[kind]
print(output(score, name="out").tojson())
"""


@pytest.mark.parametrize("kind", ["binary_classifier", "regressor"])
def test_our_symbol_json_is_what_mxnet_serialises_for_the_fm(kind):
    theirs = json.loads(run_oracle("mxnet", MX_GRAPH, "40", "5", kind))
    assert fm_graph(40, 5, kind) == theirs
