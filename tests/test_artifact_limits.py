"""A model artifact cannot make topx spend memory a model of its shape would not: a gzip bomb,
a zip member that inflates far past its size, a sparse array with an absurd dense shape."""

import gzip
import io
import json
import struct
import tarfile
import tracemalloc
import zipfile

import numpy as np
import pytest

from batch.artifact import FMModel, read_model, write_model
from batch.artifact.errors import ArtifactTooLargeError
from batch.artifact.fm import model_bytes_bound

BOMB_BYTES = 256 << 20  # what the bomb decompresses to; its file is well under 1 MiB


class Zeros(io.RawIOBase):
    """A file of ``size`` zero bytes that never holds them all in memory."""

    def __init__(self, size: int):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def bomb(member: str = "model_algo-1") -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo(member)
        info.size = BOMB_BYTES
        tar.addfile(info, Zeros(BOMB_BYTES))
    return out.getvalue()


def small_model() -> FMModel:
    rng = np.random.default_rng(0)
    return FMModel(rng.normal(size=(20, 4)), rng.normal(size=20), 0.1, "regressor")


@pytest.mark.parametrize("shape", [None, (20, 4)])
def test_a_gzip_bomb_is_refused_without_spending_its_memory(shape):
    data = bomb()
    assert len(data) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactTooLargeError, match="decompresses to more than"):
            read_model(data, shape=shape)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_a_zip_member_inflating_past_the_bound_is_refused():
    algo = io.BytesIO()
    with zipfile.ZipFile(algo, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("params", "w", force_zip64=True) as member:
            for _ in range(64):
                member.write(bytes(1 << 20))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("model_algo-1")
        info.size = len(algo.getvalue())
        tar.addfile(info, io.BytesIO(algo.getvalue()))
    with pytest.raises(ArtifactTooLargeError, match="params"):
        read_model(gzip.compress(raw.getvalue()), shape=(20, 4))


def test_a_sparse_array_with_a_huge_dense_shape_is_refused():
    # One row_sparse V2 array with no stored rows but a dense shape of 2^24 × 64 float32 (4 GiB).
    shape = (1 << 24, 64)
    parts = [struct.pack("<QQQ", 0x112, 0, 1), struct.pack("<Ii", 0xF993FAC9, 1),
             struct.pack("<i2q", 2, 0, 64), struct.pack("<i2q", 2, *shape), struct.pack("<ii", 1, 0),
             struct.pack("<i", 0), struct.pack("<i", 6), struct.pack("<i1q", 1, 0), struct.pack("<Q", 1),
             struct.pack("<Q", 5), b"arg:v"]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("params", b"".join(parts))
        zf.writestr("meta.json", json.dumps({"predictor_type": "regressor"}))
    with pytest.raises(ArtifactTooLargeError, match="dense shape"):
        read_model(zipped.getvalue(), shape=(1000, 64))


def test_a_model_of_the_expected_shape_reads():
    model = small_model()
    out = io.BytesIO()
    write_model(model, out)
    assert read_model(out.getvalue(), shape=(20, 4)).V.shape == (20, 4)
    assert model_bytes_bound(20, 4) < 5 << 20


def test_topx_score_refuses_a_bomb_in_a_run_directory(tmp_path, topx):
    code, _, err = topx("data", "synth", "--out", str(tmp_path / "d"), "--users", "30", "--items", "80",
                        "--interactions", "1000", "--seed", "1")
    assert code == 0, err
    code, _, err = topx("train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "R"), "--epochs", "1",
                        "--num-factors", "4")
    assert code == 0, err
    (tmp_path / "R" / "model.tar.gz").write_bytes(bomb())
    code, _, err = topx("score", "--run", str(tmp_path / "R"), "--user", "1", "--item", "1")
    assert code == 2 and "decompresses to more than" in err and "Traceback" not in err
