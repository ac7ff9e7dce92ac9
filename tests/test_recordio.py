"""recordIO-protobuf: round trips, byte-identity with the SageMaker SDK v2, and corrupt input.

The oracle tests run ``sagemaker==2.257.7`` in a side virtualenv (tests/oracles.py). Arrays cross
the process boundary as .npz files in tmp_path and the compared output is whole files' bytes.
"""

from __future__ import annotations

import io
import json
import os
import struct

import numpy as np
import pytest
import scipy
import scipy.sparse as sp
from oracles import run_oracle

from batch.aws import recordio
from batch.aws.record_pb import RecordIOError
from batch.aws.recordio import read_dense, read_records, read_sparse, write_dense, write_sparse
from batch.aws.wire import read_varint, unpack_varints, varints
from batch.errors import DataError

MAGIC = struct.pack("<I", 0xCED7230A)


def fm_matrix(n_rows: int = 40, n_cols: int = 300, seed: int = 0) -> sp.csr_matrix:
    """A float32 CSR like the FM channel: 0..6 entries per row, some rows empty."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 7, n_rows)
    counts[::7] = 0
    indices = np.concatenate([np.sort(rng.choice(n_cols, c, replace=False)) for c in counts])
    data = rng.normal(size=counts.sum()).astype(np.float32)
    return sp.csr_matrix((data, indices, np.concatenate([[0], np.cumsum(counts)])),
                         shape=(n_rows, n_cols))


def written(write, *args) -> bytes:
    out = io.BytesIO()
    write(out, *args)
    return out.getvalue()


def records(data: bytes) -> list[recordio.Record]:
    return list(read_records(io.BytesIO(data), file="t.rec"))


def frame(payload: bytes, cflag: int = 0) -> bytes:
    """One recordIO record around ``payload``, as dmlc-core frames it."""
    pad = -len(payload) % 4
    return MAGIC + struct.pack("<I", cflag << 29 | len(payload)) + payload + b"\0" * pad


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("label_dtype", [np.float32, np.float64, np.int64])
def test_sparse_round_trip_keeps_rows_values_and_label_types(label_dtype):
    X = fm_matrix()
    labels = (np.arange(X.shape[0]) % 3).astype(label_dtype)
    back, back_labels = read_sparse(io.BytesIO(written(write_sparse, X, labels)))
    assert back.dtype == np.float32 and back.shape == X.shape
    assert np.array_equal(back.indptr, X.indptr) and np.array_equal(back.indices, X.indices)
    assert np.array_equal(back.data, X.data)
    expected_label = np.int32 if label_dtype is np.int64 else label_dtype  # Int32Tensor
    assert back_labels.dtype == expected_label and np.array_equal(back_labels, labels)


def test_sparse_records_carry_keys_and_shape_and_empty_rows_have_neither_values_nor_keys():
    X = fm_matrix()
    recs = records(written(write_sparse, X, None))
    assert len(recs) == X.shape[0] and all(r.label is None for r in recs)
    for row, rec in enumerate(recs):
        f = rec.features
        assert f.shape == (300,) and f.is_sparse and f.keys.dtype == np.uint64
        assert np.array_equal(f.keys, X[row].indices) and np.array_equal(f.values, X[row].data)
    assert recs[0].features.values.size == 0 and recs[0].features.keys.size == 0


def test_dense_round_trip_with_and_without_labels():
    rng = np.random.default_rng(1)
    items = rng.normal(size=(25, 9)).astype(np.float32)
    labels = np.arange(25, dtype=np.float32)
    got, got_labels = read_dense(io.BytesIO(written(write_dense, items, labels)))
    assert got.dtype == np.float32 and np.array_equal(got, items)
    assert np.array_equal(got_labels, labels)
    users, none = read_dense(io.BytesIO(written(write_dense, items[:4], None)))
    assert np.array_equal(users, items[:4]) and none is None
    rec = records(written(write_dense, items[:1], None))[0]
    assert rec.features.shape == () and not rec.features.is_sparse


def test_int64_arrays_become_int32_tensors_including_negatives():
    a = np.array([[0, -1, 2**31 - 1], [-(2**31), 5, 127]])
    data = written(write_dense, a, np.array([3, -4]))
    got, labels = read_dense(io.BytesIO(data))
    assert got.dtype == np.int32 and np.array_equal(got, a)
    assert np.array_equal(labels, [3, -4])
    with pytest.raises(RecordIOError, match="int32 range"):
        written(write_dense, np.array([[2**31]]), None)


def test_chunked_writes_and_internal_chunks_give_the_same_bytes(monkeypatch):
    X = fm_matrix(n_rows=101)
    labels = np.arange(101, dtype=np.float32)
    whole = written(write_sparse, X, labels)
    monkeypatch.setattr(recordio, "_CHUNK_VALUES", 7)
    monkeypatch.setattr(recordio, "_CHUNK_ROWS", 5)
    assert written(write_sparse, X, labels) == whole
    out = io.BytesIO()
    for start in range(0, 101, 30):  # how a shard writer appends chunk after chunk
        write_sparse(out, X[start:start + 30], labels[start:start + 30])
    assert out.getvalue() == whole
    dense = np.arange(60, dtype=np.float32).reshape(20, 3)
    monkeypatch.setattr(recordio, "_CHUNK_ROWS", 3)
    assert read_dense(io.BytesIO(written(write_dense, dense, None)))[0].tolist() == dense.tolist()


def test_reading_in_batches_keeps_row_order(monkeypatch):
    monkeypatch.setattr(recordio, "_BATCH", 4)
    X = fm_matrix(n_rows=23)
    back, labels = read_sparse(io.BytesIO(written(write_sparse, X, np.arange(23.0))))
    assert (back != X).nnz == 0 and np.array_equal(labels, np.arange(23.0))


def test_empty_inputs():
    assert written(write_sparse, sp.csr_matrix((0, 5), dtype=np.float32), None) == b""
    matrix, labels = read_sparse(io.BytesIO(b""))
    assert matrix.shape == (0, 0) and labels is None


@pytest.mark.parametrize("bad", [
    lambda: written(write_dense, np.zeros((2, 2), np.int32), None),  # the SDK refuses int32
    lambda: written(write_dense, np.zeros((2, 2), np.float32), np.zeros(2, np.int32)),
    lambda: written(write_dense, np.zeros((2, 2), np.float32), np.zeros(3, np.float32)),
    lambda: written(write_dense, np.zeros(4, np.float32), None),
    lambda: written(write_sparse, np.zeros((2, 2), np.float32), None),
])
def test_writer_refuses_what_the_sdk_refuses(bad):
    with pytest.raises(RecordIOError):
        bad()


def test_reader_joins_records_that_mxnet_split_at_the_magic():
    # A float whose bits are the magic makes MXNet's writer split the record there.
    row = np.frombuffer(MAGIC * 3, np.float32).reshape(1, 3).copy()
    whole = written(write_dense, row, None)
    payload = whole[8:8 + struct.unpack("<I", whole[4:8])[0]]
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == MAGIC]
    assert cuts, "the test row must hold the magic at an aligned offset"
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(payload[start:cut])
        start = cut + 4
    pieces.append(payload[start:])
    flags = [1] + [2] * (len(pieces) - 2) + [3]
    data = b"".join(frame(p, f) for p, f in zip(pieces, flags, strict=True))
    got, _ = read_dense(io.BytesIO(data + whole))
    assert np.array_equal(got.view(np.uint32), np.vstack([row, row]).view(np.uint32))


def test_varints_match_protobuf_encoding_at_the_edges():
    values = np.array([0, 1, 127, 128, 300, 2**32, 2**63 - 1], np.int64)
    encoded = varints(values).tobytes()
    assert encoded == b"\x00\x01\x7f\x80\x01\xac\x02\x80\x80\x80\x80\x10" + b"\xff" * 8 + b"\x7f"
    assert unpack_varints(encoded).tolist() == values.tolist()
    assert varints(np.array([-1])).tobytes() == b"\xff" * 9 + b"\x01"  # int32 -1: ten bytes
    long = varints(np.arange(0, 2**40, 2**33, dtype=np.int64)).tobytes()  # numpy decode path
    assert unpack_varints(long).tolist() == list(range(0, 2**40, 2**33))
    assert read_varint(b"\xac\x02", 0) == (300, 2)


# ---------------------------------------------------------------------------- corrupt input


def assert_error(data: bytes, record: int, match: str) -> None:
    with pytest.raises(RecordIOError, match=match) as caught:
        read_sparse(io.BytesIO(data), file="s3://b/train/part-0.rec")
    assert isinstance(caught.value, DataError)
    assert caught.value.file == "s3://b/train/part-0.rec" and caught.value.line == record


GOOD = written(write_sparse, fm_matrix(n_rows=3), np.ones(3, np.float32))


def test_bad_magic_names_the_record():
    second = GOOD.index(MAGIC, 4)
    assert_error(GOOD[:second] + b"\0\0\0\0" + GOOD[second + 4:], 2, "bad magic")


def test_truncated_record_and_truncated_header():
    assert_error(GOOD[:-3], 3, "truncated record")
    assert_error(GOOD + MAGIC[:3], 4, "truncated header")


def test_unknown_wire_type_and_broken_messages():
    assert_error(GOOD + frame(b"\x0b\x00"), 4, "unknown wire type 3")  # field 1, a group
    assert_error(frame(b"\x0e"), 1, "unknown wire type 6")
    assert_error(frame(b"\x0a\x05\x0a\x06"), 1, "runs past the end")
    assert_error(frame(b"\x08\x80"), 1, "truncated varint")
    assert_error(frame(b"\x1a\x01u"), 1, "no features")  # only a uid
    assert_error(frame(b"\x08\x01"), 1, "wire type 0, expected length-delimited")


def test_packed_fields_with_bad_lengths():
    tensor = b"\x0a\x03abc"  # 3 bytes of float32 values
    value = b"\x12" + bytes([len(tensor)]) + tensor
    entry = b"\x0a\x06values\x12" + bytes([len(value)]) + value
    assert_error(frame(b"\x0a" + bytes([len(entry)]) + entry), 1, "packed float32 field of 3")
    keys = b"\x12\x0b" + b"\xff" * 10 + b"\x01"  # an 11-byte varint among the keys
    tensor = b"\x0a\x04" + b"\0" * 4 + keys + b"\x1a\x01\x05"
    value = b"\x12" + bytes([len(tensor)]) + tensor
    entry = b"\x0a\x06values\x12" + bytes([len(value)]) + value
    unlabeled = written(write_sparse, fm_matrix(n_rows=3), None)
    assert_error(unlabeled + frame(b"\x0a" + bytes([len(entry)]) + entry), 4, "longer than 10")


def test_continuation_flags_out_of_sequence():
    payload = GOOD[8:8 + struct.unpack("<I", GOOD[4:8])[0]]
    assert_error(frame(payload, 2), 1, "continuation flag 2")
    assert_error(frame(payload[:8], 1), 1, "ends inside a split record")
    assert_error(frame(payload, 5), 1, "continuation flag 5")


def test_rows_must_agree_on_width_types_and_labels():
    wide = written(write_sparse, fm_matrix(n_rows=2, n_cols=400), np.ones(2, np.float32))
    assert_error(GOOD + wide, 4, "400 columns, earlier rows 300")
    unlabeled = written(write_sparse, fm_matrix(n_rows=1), None)
    assert_error(GOOD + unlabeled, 4, "having a label")
    doubles = written(write_sparse, fm_matrix(n_rows=1).astype(np.float64), np.ones(1, np.float32))
    assert_error(GOOD + doubles, 4, "tensor types")


def test_unpacked_repeated_fields_are_read_too():
    # protobuf parsers must accept a packed field sent element by element
    # values 1.5, -2.0 (fixed32 each), keys 3, 7 and shape 10 (a varint each)
    tensor = b"\x0d" + struct.pack("<f", 1.5) + b"\x0d" + struct.pack("<f", -2.0) \
        + b"\x10\x03\x10\x07\x18\x0a"
    value = b"\x12" + bytes([len(tensor)]) + tensor
    entry = b"\x0a\x06values\x12" + bytes([len(value)]) + value
    rec = records(frame(b"\x0a" + bytes([len(entry)]) + entry + b"\x1a\x02id"))[0]
    assert rec.features.values.tolist() == [1.5, -2.0] and rec.features.keys.tolist() == [3, 7]
    assert rec.features.shape == (10,) and rec.label is None


# ---------------------------------------------------------------------------- the SDK as oracle

SDK_SCRIPT = """
import json, sys
import numpy as np
try:
    import scipy.sparse
except ImportError:  # the SDK imports scipy lazily and does not depend on it: borrow ours
    sys.path.append(sys.argv[1])
    import scipy.sparse
from sagemaker.amazon.common import (read_records, write_numpy_to_dense_tensor,
                                     write_spmatrix_to_sparse_tensor)

def tensor(value):
    kind = value.WhichOneof("value")
    t = getattr(value, kind)
    return {"type": kind, "values": list(t.values), "keys": list(t.keys), "shape": list(t.shape)}

seen = {}
for case in json.loads(sys.argv[2]):
    z = np.load(case + ".npz")
    labels = z["labels"] if "labels" in z.files else None
    with open(case + ".sdk", "wb") as out:
        if "dense" in z.files:
            write_numpy_to_dense_tensor(out, z["dense"], labels)
        else:
            X = scipy.sparse.csr_matrix((z["data"], z["indices"], z["indptr"]),
                                        shape=tuple(z["shape"]))
            write_spmatrix_to_sparse_tensor(out, X.tocsc() if "csc" in z.files else X, labels)
    if sys.argv[3] == "write-only":
        continue
    with open(case + ".ours", "rb") as ours:
        seen[case] = [{"features": tensor(r.features["values"]), "maps": sorted(r.features),
                       "label": tensor(r.label["values"]) if "values" in r.label else None}
                      for r in read_records(ours)]
json.dump(seen, open("seen.json", "w"))
"""


def sdk_cases() -> dict[str, tuple[object, np.ndarray | None]]:
    rng = np.random.default_rng(7)
    X = fm_matrix()
    unsorted = sp.csr_matrix((np.array([1, 2, 3, 4], np.float32), np.array([5, 1, 9, 0]),
                              np.array([0, 3, 3, 4])), shape=(3, 200))  # kept in stored order
    return {
        "fm_f32_labels_f32": (X, rng.integers(0, 2, 40).astype(np.float32)),
        "fm_f32_labels_f64": (X, rng.normal(size=40)),
        "fm_f32_labels_int": (X, rng.integers(-3, 3, 40)),
        "fm_f64_nolabels": (X.astype(np.float64), None),
        "fm_int64": (sp.csr_matrix(rng.integers(-300, 300, (12, 500)) * (rng.random((12, 500))
                                                                          < 0.02)), None),
        "fm_unsorted_indices": (unsorted, np.ones(3, np.float32)),
        "fm_csc_input": (X.tocsc(), None),
        "fm_no_rows": (sp.csr_matrix((0, 10), dtype=np.float32), None),
        "knn_items": (rng.normal(size=(30, 17)).astype(np.float32),
                      np.arange(30, dtype=np.float32)),
        "knn_users": (rng.normal(size=(30, 17)).astype(np.float32), None),
        "dense_f64_int_labels": (rng.normal(size=(5, 4)), rng.integers(0, 9, 5)),
        "dense_int64": (rng.integers(-(2**31), 2**31, (4, 6)), None),
        "dense_no_columns": (np.zeros((3, 0), np.float32), None),
    }


def save_case(path, array, labels) -> None:
    arrays = {} if labels is None else {"labels": labels}
    if sp.issparse(array):
        csr = sp.csr_matrix(array)
        arrays.update(data=csr.data, indices=csr.indices, indptr=csr.indptr,
                      shape=np.array(csr.shape))
        if array.format == "csc":
            arrays["csc"] = np.ones(1)
    else:
        arrays["dense"] = array
    np.savez(path, **arrays)


def sdk_view(array, labels) -> list[dict]:
    """What the SDK's read_records should find in each of our records."""
    sparse = sp.issparse(array)
    rows = sp.csr_matrix(array) if sparse else array
    kind = {np.dtype(np.float32): "float32_tensor", np.dtype(np.float64): "float64_tensor"}
    label_type = None if labels is None else kind.get(labels.dtype, "int32_tensor")
    view = []
    for i in range(rows.shape[0]):
        row = rows[i]
        values = row.data if sparse else row
        view.append({
            "features": {"type": kind.get(rows.dtype, "int32_tensor"), "values": values.tolist(),
                         "keys": row.indices.tolist() if sparse else [],
                         "shape": [rows.shape[1]] if sparse else []},
            "maps": ["values"],
            "label": None if labels is None else {"type": label_type, "values": [labels[i].item()],
                                                  "keys": [], "shape": []}})
    return view


@pytest.mark.oracle
def test_sdk_writes_our_bytes_and_each_side_reads_the_other(tmp_path):
    cases = sdk_cases()
    for name, (array, labels) in cases.items():
        save_case(tmp_path / f"{name}.npz", array, labels)
        write = write_sparse if sp.issparse(array) else write_dense
        (tmp_path / f"{name}.ours").write_bytes(written(write, array, labels))
    scipy_home = os.path.dirname(os.path.dirname(scipy.__file__))
    run_oracle("sagemaker", SDK_SCRIPT, scipy_home, json.dumps(list(cases)), "read",
               cwd=tmp_path)
    seen = json.loads((tmp_path / "seen.json").read_text())
    for name, (array, labels) in cases.items():
        ours = (tmp_path / f"{name}.ours").read_bytes()
        theirs = (tmp_path / f"{name}.sdk").read_bytes()
        assert ours == theirs, f"{name}: our bytes differ from the SDK's"
        assert seen[name] == sdk_view(array, labels), f"{name}: the SDK reads our file differently"
        if min(array.shape):  # an empty file or width-0 rows carry no width to read back
            got, got_labels = read_sparse(io.BytesIO(theirs))
            assert np.array_equal(sp.csr_matrix(got).toarray(), sp.csr_matrix(array).toarray())
            assert (got_labels is None) == (labels is None)
            if labels is not None:
                assert np.array_equal(got_labels, labels)


@pytest.mark.oracle
@pytest.mark.slow
def test_a_big_fm_channel_is_byte_identical(tmp_path):
    """Enough rows to cross several internal chunks (their boundaries must not show)."""
    X = fm_matrix(n_rows=70_000, n_cols=5_000, seed=3)
    labels = (np.arange(X.shape[0]) % 2).astype(np.float32)
    save_case(tmp_path / "big.npz", X, labels)
    (tmp_path / "big.ours").write_bytes(written(write_sparse, X, labels))
    scipy_home = os.path.dirname(os.path.dirname(scipy.__file__))
    run_oracle("sagemaker", SDK_SCRIPT, scipy_home, json.dumps(["big"]), "write-only",
               cwd=tmp_path)
    assert (tmp_path / "big.ours").read_bytes() == (tmp_path / "big.sdk").read_bytes()
