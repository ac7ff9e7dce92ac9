"""The SageMaker FM artifact: NDArray lists, the FM math, model.tar.gz, and bad input of every kind.

Hand-built arrays below follow the layout in apache/mxnet src/ndarray/ndarray.cc, independently
of batch.artifact.ndarray; tests/test_artifact_oracle.py checks the same bytes against MXNet.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from batch import storage
from batch.artifact import (
    CorruptArtifactError,
    FMModel,
    ModelContentError,
    TruncatedArtifactError,
    UnsupportedArtifactError,
    model_params,
    read_model,
    read_ndarray_list,
    write_model,
    write_ndarray_list,
)
from batch.artifact.symbol import fm_graph, predictor_type_of_symbol
from batch.errors import ArtifactError, DataError

# --- hand-built NDArray bytes (little-endian) -------------------------------------------------
V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
FLAGS = {np.dtype("f4"): 0, np.dtype("f8"): 1, np.dtype("f2"): 2, np.dtype("u1"): 3,
         np.dtype("i4"): 4, np.dtype("i8"): 6}


def tshape(shape) -> bytes:
    return struct.pack(f"<i{len(shape)}q", len(shape), *shape)


def body(a: np.ndarray, ctx=(1, 0)) -> bytes:
    return struct.pack("<iii", *ctx, FLAGS[a.dtype]) + a.astype(a.dtype.newbyteorder("<")).tobytes()


def v2_dense(a: np.ndarray, magic=V2, ctx=(1, 0)) -> bytes:
    return struct.pack("<Ii", magic, 0) + tshape(a.shape) + body(a, ctx)


def v1_dense(a: np.ndarray) -> bytes:
    return struct.pack("<I", V1) + tshape(a.shape) + body(a)


def legacy_dense(a: np.ndarray) -> bytes:
    """Pre-V1 MXNet: no magic; u32 ndim and u32 dims come first."""
    return struct.pack(f"<I{a.ndim}I", a.ndim, *a.shape) + body(a)


INDEX_TYPES = {6: np.int64, 11: np.uint64}  # MXNet writes int64 aux data (type flag 6)


def row_sparse(dense: np.ndarray, saved_storage_shape=None, rows=None, index_flag=6) -> bytes:
    if rows is None:
        rows = np.flatnonzero(np.any(dense.reshape(len(dense), -1) != 0, axis=1))
    rows = np.asarray(rows).astype(INDEX_TYPES[index_flag])
    values = dense[rows]
    sshape = values.shape if saved_storage_shape is None else saved_storage_shape
    head = struct.pack("<Ii", V2, 1) + tshape(sshape) + tshape(dense.shape)
    aux = struct.pack("<i", index_flag) + tshape(rows.shape)
    ctx_and_type = struct.pack("<iii", 1, 0, FLAGS[dense.dtype])
    return head + ctx_and_type + aux + values.tobytes() + rows.tobytes()


def csr(dense: np.ndarray, index_flag=6, indptr=None) -> bytes:
    m = sp.csr_matrix(dense)
    indptr = m.indptr if indptr is None else np.asarray(indptr)
    indptr, indices = (a.astype(INDEX_TYPES[index_flag]) for a in (indptr, m.indices))
    head = struct.pack("<Ii", V2, 2) + tshape((0,)) + tshape(dense.shape)  # MXNet saves (0,)
    flag = struct.pack("<i", index_flag)
    aux = flag + tshape(indptr.shape) + flag + tshape(indices.shape)
    return (head + struct.pack("<iii", 1, 0, FLAGS[dense.dtype]) + aux + m.data.tobytes()
            + indptr.tobytes() + indices.tobytes())


def ndlist(arrays: list[bytes], names: list[str] | None = None) -> bytes:
    names = names or []
    out = struct.pack("<QQQ", 0x112, 0, len(arrays)) + b"".join(arrays)
    out += struct.pack("<Q", len(names))
    return out + b"".join(struct.pack("<Q", len(n.encode())) + n.encode() for n in names)


def random_model(n=40, k=5, kind="binary_classifier", seed=0) -> FMModel:
    rng = np.random.default_rng(seed)
    return FMModel(V=rng.normal(0, 0.3, (n, k)), w=rng.normal(0, 0.3, n), b=rng.normal(),
                   predictor_type=kind)


def random_design(rows, n, seed=1) -> sp.csr_matrix:
    """Several non-zeros per row with non-binary values, like one-hots plus side features."""
    rng = np.random.default_rng(seed)
    X = sp.random(rows, n, density=0.15, format="csr", random_state=seed, dtype=np.float64)
    X.data = rng.uniform(-2, 3, X.nnz)
    return X.astype(np.float32)


def same_model(a: FMModel, b: FMModel) -> bool:
    return (np.array_equal(a.V, b.V) and np.array_equal(a.w, b.w) and a.b == b.b
            and a.predictor_type == b.predictor_type)


# --- NDArray list: writing ---------------------------------------------------------------------
def test_writer_emits_the_mxnet_v2_layout_byte_for_byte():
    expected = ndlist([v2_dense(np.array([0.2], np.float32))], ["arg:w0_weight"])
    assert write_ndarray_list({"arg:w0_weight": np.array([0.2], np.float32)}) == expected
    assert expected.hex().startswith("1201000000000000" "0000000000000000" "0100000000000000"
                                     "c9fa93f9" "00000000" "01000000" "0100000000000000")


def test_writer_round_trips_names_order_dtypes_and_shapes():
    rng = np.random.default_rng(3)
    arrays = {"z": rng.normal(size=(3, 4)).astype(np.float32), "a": np.arange(5, dtype=np.int64),
              "m": rng.normal(size=(2, 1, 3)), "h": np.ones((2,), np.float16)}
    back = read_ndarray_list(write_ndarray_list(arrays))
    assert list(back) == ["z", "a", "m", "h"]
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and np.array_equal(back[name], array)


def test_writer_converts_big_endian_and_strided_input():
    a = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    back = read_ndarray_list(write_ndarray_list({"a": a}))["a"]
    assert back.dtype == np.float32 and np.array_equal(back, a)


@pytest.mark.parametrize("bad", [np.float32(1.0), np.zeros((0, 3), np.float32),
                                 np.array(["x"]), np.zeros(2, np.complex64)])
def test_writer_refuses_what_mxnet_v2_cannot_hold(bad):
    with pytest.raises(ValueError):
        write_ndarray_list({"x": np.asarray(bad)})


# --- NDArray list: reading every version and storage type ------------------------------------
def test_reader_takes_v1_legacy_v3_and_gpu_arrays():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    scalar = v2_dense(np.float64(7.0).reshape(()), magic=V3)  # numpy semantics: ndim 0 is a scalar
    data = ndlist([v1_dense(a), legacy_dense(a * 2), scalar, v2_dense(a * 3, ctx=(2, 1))],
                  ["v1", "legacy", "scalar", "gpu"])
    back = read_ndarray_list(data)
    assert np.array_equal(back["v1"], a) and np.array_equal(back["legacy"], a * 2)
    assert back["scalar"].shape == () and back["scalar"] == 7.0
    assert np.array_equal(back["gpu"], a * 3)


def test_reader_densifies_row_sparse_including_all_zero():
    dense = np.zeros((6, 3), np.float32)
    dense[1], dense[4] = [1, 2, 3], [4, 5, 6]
    empty = np.zeros((4, 2), np.float32)
    arrays = [row_sparse(dense), row_sparse(empty, saved_storage_shape=(0, 2))]
    back = read_ndarray_list(ndlist(arrays, ["v", "empty"]))
    assert np.array_equal(back["v"], dense) and back["v"].dtype == np.float32
    assert np.array_equal(back["empty"], empty)


def test_reader_densifies_csr():
    dense = np.array([[0, 1.5, 0], [2, 0, 3], [0, 0, 0]], np.float32)
    assert np.array_equal(read_ndarray_list(ndlist([csr(dense)], ["c"]))["c"], dense)


def test_unnamed_list_is_keyed_by_position():
    arrays = [v2_dense(np.ones(2, np.float32)), v2_dense(np.zeros(1, np.float32))]
    back = read_ndarray_list(ndlist(arrays))
    assert list(back) == ["0", "1"]


# --- NDArray list: bad input -------------------------------------------------------------------
def sample_list() -> bytes:
    dense = np.zeros((5, 2), np.float32)
    dense[2] = [1, 2]
    return ndlist([v2_dense(np.ones((3, 2), np.float32)), row_sparse(dense),
                   csr(np.eye(3, dtype=np.float32)), v1_dense(np.ones(2, np.float32))],
                  ["arg:v", "rsp", "csr", "old"])


def test_truncation_at_every_offset_is_a_named_error():
    data = sample_list()
    for cut in range(len(data)):
        with pytest.raises((TruncatedArtifactError, CorruptArtifactError)):
            read_ndarray_list(data[:cut])


def test_truncated_data_reports_truncation():
    with pytest.raises(TruncatedArtifactError, match="truncated"):
        read_ndarray_list(sample_list()[:-20])


def test_random_corruption_never_escapes_as_a_foreign_exception():
    data = sample_list()
    rng = np.random.default_rng(0)
    outcomes = {"error": 0, "parsed": 0}
    for _ in range(3000):
        bad = bytearray(data)
        for pos in rng.integers(0, len(bad), rng.integers(1, 4)):
            bad[pos] = rng.integers(0, 256)
        try:
            back = read_ndarray_list(bytes(bad))
        except ArtifactError:
            outcomes["error"] += 1
        else:
            outcomes["parsed"] += 1
            assert all(isinstance(a, np.ndarray) for a in back.values())
    assert outcomes["error"] > 100 and outcomes["parsed"] > 100  # both paths were exercised


@pytest.mark.parametrize("mutate, error, message", [
    (lambda d: b"\x13" + d[1:], CorruptArtifactError, "not an MXNet NDArray list"),
    (lambda d: d + b"\0", CorruptArtifactError, "unexpected bytes"),
    (lambda d: d[:24] + struct.pack("<I", 0xDEADBEEF) + d[28:], CorruptArtifactError,
     "unknown magic"),
    (lambda d: d[:16] + struct.pack("<Q", 2**60) + d[24:], CorruptArtifactError, "declares"),
])
def test_list_level_damage(mutate, error, message):
    with pytest.raises(error, match=message):
        read_ndarray_list(mutate(ndlist([v2_dense(np.ones(2, np.float32))], ["a"])))


def v2_head(shape, ctx=(1, 0), flag=0) -> bytes:
    return struct.pack("<Ii", V2, 0) + tshape(shape) + struct.pack("<iii", *ctx, flag)


@pytest.mark.parametrize("array, error, message", [
    (v2_head((2,), flag=12) + b"\0" * 4, UnsupportedArtifactError, "bfloat16"),
    (struct.pack("<Ii", V2, 0) + tshape(()), UnsupportedArtifactError, "none"),
    (v2_head((2,), flag=99), CorruptArtifactError, "type flag"),
    (struct.pack("<Ii", V2, 7), CorruptArtifactError, "storage type"),
    (struct.pack("<Iii", V2, 0, 40_000), CorruptArtifactError, "ndim"),
    (struct.pack("<Ii", V2, 0) + tshape((-3,)), CorruptArtifactError, "negative"),
    (v2_head((1,), ctx=(9, 0)), CorruptArtifactError, "context"),
    (v2_head((2**40,)), TruncatedArtifactError, "needs"),
])
def test_array_level_damage(array, error, message):
    with pytest.raises(error, match=message):
        read_ndarray_list(ndlist([array], ["a"]))


@pytest.mark.parametrize("index_flag", [6, 11])
def test_row_sparse_indices_must_be_increasing_and_in_range(index_flag):
    dense = np.zeros((4, 2), np.float32)
    dense[1], dense[3] = 1, 2
    assert np.array_equal(read_ndarray_list(ndlist([row_sparse(dense, index_flag=index_flag)],
                                                   ["r"]))["r"], dense)
    good = row_sparse(dense, index_flag=index_flag)
    rows_at = len(good) - 16  # the two 8-byte row indices end the array
    for rows in ([3, 1], [1, 1], [1, 4]):
        bad = good[:rows_at] + np.array(rows, INDEX_TYPES[index_flag]).tobytes()
        with pytest.raises(CorruptArtifactError, match="row indices"):
            read_ndarray_list(ndlist([bad], ["r"]))


def test_row_sparse_storage_shape_must_match_its_indices():
    dense = np.zeros((4, 2), np.float32)
    dense[1] = 1
    with pytest.raises(CorruptArtifactError, match="do not fit"):
        read_ndarray_list(ndlist([row_sparse(dense, saved_storage_shape=(1, 3))], ["r"]))


def test_csr_with_impossible_indices_is_corrupt():
    good = csr(np.eye(2, dtype=np.float32))
    bad = good[:-16] + np.array([0, 2], np.int64).tobytes()  # column 2 of a 2-column matrix
    with pytest.raises(CorruptArtifactError, match="csr"):
        read_ndarray_list(ndlist([bad], ["c"]))


def test_csr_with_unsigned_decreasing_indptr_is_corrupt():
    eye = np.eye(3, dtype=np.float32)
    assert np.array_equal(read_ndarray_list(ndlist([csr(eye, index_flag=11)], ["c"]))["c"], eye)
    with pytest.raises(CorruptArtifactError, match="csr"):
        read_ndarray_list(ndlist([csr(eye, index_flag=11, indptr=[0, 3, 1, 3])], ["c"]))


def test_repeated_names_and_bad_utf8_are_corrupt():
    one = v2_dense(np.ones(1, np.float32))
    with pytest.raises(CorruptArtifactError, match="repeats"):
        read_ndarray_list(ndlist([one, one], ["a", "a"]))
    data = ndlist([one], ["é"])
    with pytest.raises(CorruptArtifactError, match="UTF-8"):
        read_ndarray_list(data[:-2] + b"\xff\xfe")


# --- the FM model ------------------------------------------------------------------------------
def brute_force_scores(model: FMModel, X) -> np.ndarray:
    X, V = np.asarray(X.todense(), np.float64), model.V.astype(np.float64)
    n = model.feature_dim
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return np.array([model.b + x @ model.w + sum(V[i] @ V[j] * x[i] * x[j] for i, j in pairs)
                     for x in X])


def test_decision_equals_the_pairwise_sum_with_features():
    model = random_model(n=12, k=3)
    X = random_design(30, 12)
    assert model.decision(X).dtype == np.float32
    expected = brute_force_scores(model, X)
    np.testing.assert_allclose(model.decision(X), expected, rtol=1e-5, atol=1e-6)


def test_decision_takes_unsorted_and_duplicate_columns_and_leaves_its_input_alone():
    # What Design.pair_rows gives: a user's columns, then an item's, some of them lower.
    model = random_model(n=12, k=3)
    X = sp.csr_matrix((np.array([1, .25, .5, 1, .5, .25], np.float32), np.array([0, 9, 11, 4, 10, 9]),
                       np.array([0, 3, 6])), shape=(2, 12))
    before = (X.data.copy(), X.indices.copy())
    expected = brute_force_scores(model, X)  # todense sums the duplicate column 9 of row 1
    for _ in range(3):  # the same answer every time: the input is not reordered under our feet
        np.testing.assert_allclose(model.decision(X), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(X.data, before[0])
    np.testing.assert_array_equal(X.indices, before[1])


def test_decision_accepts_dense_input_and_single_rows():
    model = random_model(n=12, k=3)
    X = random_design(4, 12)
    np.testing.assert_array_equal(model.decision(X.toarray()), model.decision(X))
    np.testing.assert_array_equal(model.decision(X[2]), model.decision(X)[2:3])


def test_predict_is_sigmoid_for_classifier_and_identity_for_regressor():
    binary, regressor = random_model(n=10), random_model(n=10, kind="regressor")
    X = random_design(8, 10)
    scores = binary.decision(X).astype(np.float64)
    np.testing.assert_allclose(binary.predict(X), 1 / (1 + np.exp(-scores)), rtol=1e-6)
    np.testing.assert_array_equal(regressor.predict(X), regressor.decision(X))


def test_decision_checks_the_design_matrix_width():
    with pytest.raises(DataError, match="feature_dim 10"):
        random_model(n=10).decision(random_design(3, 11))


def test_model_normalises_dtypes_and_column_weights():
    m = FMModel(V=np.ones((3, 2)), w=np.ones((3, 1)), b=np.array([0.5]), predictor_type="regressor")
    assert m.V.dtype == m.w.dtype == np.float32 and m.w.shape == (3,) and m.b == 0.5
    assert (m.feature_dim, m.num_factors) == (3, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"w": np.ones(4)}, "disagree"),
    ({"V": np.ones(3)}, r"\(N, k\)"),
    ({"b": [1.0, 2.0]}, "disagree"),
    ({"predictor_type": "multiclass"}, "predictor_type"),
    ({"V": np.full((3, 2), np.nan)}, "NaN"),
])
def test_model_rejects_inconsistent_parameters(kwargs, message):
    args = {"V": np.ones((3, 2)), "w": np.ones(3), "b": 0.0, "predictor_type": "regressor"}
    args.update(kwargs)
    with pytest.raises(ModelContentError, match=message):
        FMModel(**args)


# --- model.tar.gz ------------------------------------------------------------------------------
def artifact_bytes(model: FMModel, **hyper) -> bytes:
    buf = io.BytesIO()
    write_model(model, buf, hyperparameters=hyper)
    return buf.getvalue()


def zip_of(artifact: bytes) -> zipfile.ZipFile:
    with tarfile.open(fileobj=io.BytesIO(artifact), mode="r:gz") as tar:
        assert tar.getnames() == ["model_algo-1"]
        return zipfile.ZipFile(io.BytesIO(tar.extractfile("model_algo-1").read()))


def test_artifact_layout_is_sagemakers():
    model = random_model()
    zf = zip_of(artifact_bytes(model, num_factors=5, epochs=3))
    assert zf.namelist() == ["meta.json", "symbol.json", "params"]
    assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
    assert zf.read("params") == write_ndarray_list(model_params(model))
    params = read_ndarray_list(zf.read("params"))
    assert list(params) == ["arg:v", "arg:w1_weight", "arg:w0_weight"]
    assert [params[k].shape for k in params] == [(40, 5), (40, 1), (1,)]
    meta = json.loads(zf.read("meta.json"))
    assert meta["feature_dim"] == 40 and meta["num_factors"] == 5
    assert meta["predictor_type"] == "binary_classifier"
    assert meta["hyperparameters"] == {"num_factors": "5", "epochs": "3"}


def test_artifact_bytes_are_deterministic():
    assert artifact_bytes(random_model(), a=1) == artifact_bytes(random_model(), a=1)


@pytest.mark.parametrize("kind", ["binary_classifier", "regressor"])
def test_round_trip_through_path_bytes_and_file_object(tmp_path, kind):
    model = random_model(kind=kind)
    write_model(model, tmp_path / "run" / "model.tar.gz")
    assert same_model(read_model(tmp_path / "run" / "model.tar.gz"), model)
    assert same_model(read_model(str(tmp_path / "run" / "model.tar.gz")), model)
    data = (tmp_path / "run" / "model.tar.gz").read_bytes()
    assert same_model(read_model(data), model)
    assert same_model(read_model(io.BytesIO(data)), model)


def test_round_trip_through_s3():
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="models")
        storage.set_s3_client(client)
        try:
            model = random_model(kind="regressor")
            write_model(model, "s3://models/run/output/model.tar.gz", hyperparameters={"k": "5"})
            assert same_model(read_model("s3://models/run/output/model.tar.gz"), model)
        finally:
            storage.set_s3_client(None)


def test_reads_model_algo_1_and_a_bare_ndarray_list():
    model = random_model(kind="regressor")
    zipped = zip_of(artifact_bytes(model)).fp.getvalue()
    assert same_model(read_model(zipped), model)
    bare = write_ndarray_list(model_params(model))
    assert same_model(read_model(bare, predictor_type="regressor"), model)
    with pytest.raises(ModelContentError, match="pass predictor_type"):
        read_model(bare)


def test_reads_row_sparse_parameters_in_the_zip():
    model = random_model(n=8, k=2, kind="regressor")
    V = model.V.copy()
    V[[1, 5]] = 0
    sparse_model = FMModel(V, model.w, model.b, "regressor")
    arrays = [row_sparse(V), row_sparse(model.w.reshape(-1, 1)),
              v2_dense(np.array([model.b], np.float32))]
    params = ndlist(arrays, ["arg:v", "arg:w1_weight", "arg:w0_weight"])
    with zipfile.ZipFile(buf := io.BytesIO(), "w") as zf:
        zf.writestr("params", params)
        zf.writestr("meta.json", json.dumps({"predictor_type": "regressor"}))
    assert same_model(read_model(buf.getvalue()), sparse_model)


def test_predictor_type_must_agree_everywhere():
    data = artifact_bytes(random_model(kind="regressor"))
    with pytest.raises(ModelContentError, match="contradictory"):
        read_model(data, predictor_type="binary_classifier")


def rezip(artifact: bytes, **replace: bytes) -> bytes:
    old = zip_of(artifact)
    with zipfile.ZipFile(buf := io.BytesIO(), "w") as zf:
        for name in old.namelist():
            zf.writestr(name, replace.get(name.replace(".", "_"), old.read(name)))
    return buf.getvalue()


def test_meta_json_that_contradicts_the_parameters_is_refused():
    data = artifact_bytes(random_model())
    meta = json.loads(zip_of(data).read("meta.json"))
    wrong_dim = json.dumps({**meta, "feature_dim": 41}).encode()
    with pytest.raises(ModelContentError, match="feature_dim"):
        read_model(rezip(data, meta_json=wrong_dim))
    wrong_kind = json.dumps({**meta, "predictor_type": "regressor"}).encode()
    with pytest.raises(ModelContentError, match="contradictory"):
        read_model(rezip(data, meta_json=wrong_kind))
    with pytest.raises(CorruptArtifactError, match="not JSON"):
        read_model(rezip(data, meta_json=b"{not json"))


def test_missing_parameters_are_named():
    params = write_ndarray_list({"arg:v": np.ones((3, 2), np.float32)})
    with pytest.raises(ModelContentError, match="w1_weight, w0_weight"):
        read_model(params, predictor_type="regressor")


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_info(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def test_tar_member_is_chosen_by_name_and_nothing_is_extracted(tmp_path, monkeypatch):
    model = random_model()
    algo = zip_of(artifact_bytes(model)).fp.getvalue()
    evil = b"owned"
    data = tar_gz([(file_info("../../evil.txt", evil), evil),
                   (file_info("./model_algo-1", algo), algo)])
    monkeypatch.chdir(tmp_path)
    assert same_model(read_model(data), model)
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / "evil.txt").exists()


def test_tar_without_model_or_with_a_link_instead_is_refused():
    other = b"x"
    with pytest.raises(ModelContentError, match="no model_algo-1"):
        read_model(tar_gz([(file_info("hyperparams.json", other), other)]))
    link = tarfile.TarInfo("model_algo-1")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(CorruptArtifactError, match="regular file"):
        read_model(tar_gz([(link, None)]))


def test_uncompressed_tar_is_accepted():
    model = random_model()
    raw = gzip.decompress(artifact_bytes(model))
    assert same_model(read_model(raw), model)


def test_unknown_bytes_are_refused():
    with pytest.raises(CorruptArtifactError, match="not a SageMaker model artifact"):
        read_model(b"hello world, this is not a model")
    with pytest.raises(DataError, match="no such file"):
        read_model("/nonexistent/model.tar.gz")


@pytest.mark.parametrize("layer", ["model.tar.gz", "model_algo-1"])
def test_truncated_artifact_at_every_offset_is_a_named_error(layer):
    data = artifact_bytes(random_model(n=6, k=2))
    if layer == "model_algo-1":
        data = zip_of(data).fp.getvalue()
    for cut in range(len(data)):
        with pytest.raises(ArtifactError):
            read_model(data[:cut])


@pytest.mark.parametrize("layer", ["model.tar.gz", "model_algo-1"])
def test_checksummed_layers_either_fail_or_give_the_same_model(layer):
    model = random_model(n=6, k=2)
    data = artifact_bytes(model)
    if layer == "model_algo-1":
        data = zip_of(data).fp.getvalue()
    rng = np.random.default_rng(5)
    failures = 0
    for _ in range(1500):
        bad = bytearray(data)
        bad[rng.integers(len(bad))] ^= int(rng.integers(1, 256))
        try:
            assert same_model(read_model(bytes(bad)), model)  # damage only in unchecked fields
        except ArtifactError:
            failures += 1
    assert failures > 1000


def test_corrupt_bare_parameters_fail_cleanly_or_parse():
    data = write_ndarray_list(model_params(random_model(n=6, k=2)))
    rng = np.random.default_rng(6)
    for _ in range(2000):
        bad = bytearray(data)
        bad[rng.integers(len(bad))] ^= int(rng.integers(1, 256))
        try:
            model = read_model(bytes(bad), predictor_type="regressor")
        except ArtifactError:
            continue
        assert model.V.shape[0] == model.w.shape[0]


# --- symbol.json -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, op", [("binary_classifier", "LogisticRegressionOutput"),
                                      ("regressor", "LinearRegressionOutput")])
def test_symbol_graph_is_well_formed(kind, op):
    graph = fm_graph(40, 5, kind)
    nodes = graph["nodes"]
    for i, node in enumerate(nodes):
        assert all(src < i for src, _, _ in node["inputs"])  # topological order
    args = {nodes[i]["name"]: nodes[i].get("attrs", {}) for i in graph["arg_nodes"]}
    assert set(args) == {"data", "w0_weight", "w1_weight", "v", "out_label"}
    assert args["v"]["__shape__"] == "(40, 5)" and args["w1_weight"]["__shape__"] == "(40, 1)"
    assert args["data"]["__storage_type__"] == "2"
    head = nodes[graph["heads"][0][0]]
    assert (head["op"], head["name"]) == (op, "out")
    assert predictor_type_of_symbol(graph) == kind
    assert predictor_type_of_symbol({"nodes": []}) is None
