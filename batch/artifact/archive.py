"""The containers around the FM parameters, packed and unpacked in memory.

``model.tar.gz`` (gzip of a tar) holds one file, ``model_algo-1``: for the factorization machine
a zip with stored (uncompressed) members ``meta.json``, ``symbol.json`` and ``params``; other
SageMaker algorithms put a bare NDArray list there instead. Reading picks the tar member by
name and never extracts to disk (no path traversal), and the whole gzip stream is checked
(CRC and length) before the tar is parsed, so a cut-off download cannot pass as a model.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass

from batch.artifact.errors import (
    ArtifactTooLargeError,
    CorruptArtifactError,
    ModelContentError,
    TruncatedArtifactError,
)
from batch.artifact.ndarray import LIST_MAGIC

MEMBER = "model_algo-1"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
LIST_MAGIC_BYTES = struct.pack("<Q", LIST_MAGIC)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same model gives the same bytes
_TAR_MTIME = 315532800  # 1980-01-01 as a Unix time
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError, zlib.error, struct.error, OverflowError)
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError, OverflowError)


@dataclass(frozen=True)
class ModelFiles:
    """The files of ``model_algo-1``; ``symbol``/``meta`` are None for a bare NDArray list."""

    params: bytes
    symbol: bytes | None = None
    meta: bytes | None = None


def pack_model_tar_gz(files: ModelFiles) -> bytes:
    """``model.tar.gz`` bytes holding ``model_algo-1``, a stored zip of meta, symbol and params."""
    members = {"meta.json": files.meta, "symbol.json": files.symbol, "params": files.params}
    return _tar_gz(MEMBER, _stored_zip({k: v for k, v in members.items() if v is not None}))


def _stored_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16  # a plain rw-r--r-- file when unzipped
            zf.writestr(info, data)
    return buf.getvalue()


def _tar_gz(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), _TAR_MTIME, 0o644
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def unpack_model(data: bytes, limit: int) -> ModelFiles:
    """The files inside ``model.tar.gz``, an uncompressed tar of it, or ``model_algo-1`` itself
    (zip or bare NDArray list), told apart by their leading bytes. ``limit``: the most bytes the
    decompressed tar and each zip member may hold (:class:`ArtifactTooLargeError` beyond)."""
    if data[:2] == GZIP_MAGIC:
        data = _tar_member(_gunzip(data, limit), MEMBER)
    elif data[257:262] == b"ustar":  # the magic of a POSIX tar header
        data = _tar_member(data, MEMBER)
    if data[:4] == ZIP_MAGIC:
        return _read_zip(data, limit)
    if data[:8] == LIST_MAGIC_BYTES:
        return ModelFiles(params=data)
    raise CorruptArtifactError(
        "not a SageMaker model artifact: expected model.tar.gz, a zip or an MXNet NDArray list, "
        f"but the data starts with {bytes(data[:8])!r}"
    )


def _gunzip(data: bytes, limit: int) -> bytes:
    """The decompressed gzip members (CRC and length checked by zlib), never more than ``limit``
    bytes: decompression stops as soon as the output would pass it."""
    out, rest = bytearray(), data
    try:
        while rest:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += inflater.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                raise ArtifactTooLargeError(f"model.tar.gz decompresses to more than {limit:,} bytes, more than a "
                                            f"model of the expected shape holds (a decompression bomb?)")
            if not inflater.eof:
                raise TruncatedArtifactError("model.tar.gz is truncated: the gzip stream ends early")
            rest = inflater.unused_data.lstrip(b"\0")  # members may follow; gzip pads with zeros
    except zlib.error as exc:
        raise CorruptArtifactError(f"model.tar.gz is not a valid gzip stream: {exc}") from None
    return bytes(out)


def _tar_member(raw: bytes, name: str) -> bytes:
    """Bytes of the regular file ``name`` (or ``./name``) in an uncompressed tar."""
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            member = _find_member(tar, name)
            payload = tar.extractfile(member).read()
    except _TAR_ERRORS as exc:
        raise CorruptArtifactError(f"model.tar.gz holds a broken tar: {exc}") from None
    if len(payload) != member.size:
        raise TruncatedArtifactError(f"{name} in model.tar.gz is truncated")
    return payload


def _find_member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    members = tar.getmembers()
    found = [m for m in members if m.name.removeprefix("./") == name]
    if not found:
        listed = ", ".join(m.name for m in members[:10]) or "nothing"
        raise ModelContentError(f"model.tar.gz has no {name} (it holds {listed})")
    if len(found) > 1 or not found[0].isfile():
        raise CorruptArtifactError(f"{name} in model.tar.gz is not a single regular file")
    return found[0]


def _read_zip(data: bytes, limit: int) -> ModelFiles:
    """``params`` (required), ``symbol.json`` and ``meta.json`` of a zip; CRCs are verified and
    no member is inflated past ``limit`` bytes (zipfile stops at the size a member declares)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if len(set(names)) != len(names):
                raise CorruptArtifactError(f"{MEMBER} repeats a file name: {sorted(names)}")
            wanted = [zf.getinfo(n) for n in ("params", "symbol.json", "meta.json") if n in names]
            too_big = [f"{i.filename} ({i.file_size:,} bytes)" for i in wanted if i.file_size > limit]
            if too_big:
                raise ArtifactTooLargeError(f"{MEMBER} holds {', '.join(too_big)}, more than the {limit:,} bytes a "
                                            f"model of the expected shape holds")
            files = {i.filename: zf.read(i) for i in wanted}
    except _ZIP_ERRORS as exc:
        raise CorruptArtifactError(f"{MEMBER} is not a readable zip (corrupt or truncated): "
                                   f"{exc}") from None
    if "params" not in files:
        raise ModelContentError(f"{MEMBER} has no params file (it holds {', '.join(names)})")
    return ModelFiles(files["params"], files.get("symbol.json"), files.get("meta.json"))
