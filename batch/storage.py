"""Reading and writing local paths and ``s3://`` URIs through one small interface.

Business code calls :func:`open_read`, :func:`read_bytes`, :func:`write_bytes`, :func:`exists`
and :func:`list_names` with a location string and never branches on the scheme itself. The S3
client is created lazily and can be injected (tests hand in a moto-backed one).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import IO, Any

from batch.errors import DataError

_s3_client: Any = None


def set_s3_client(client: Any) -> None:
    """Use ``client`` (a boto3 S3 client) for every s3:// access; None resets to the default."""
    global _s3_client
    _s3_client = client


def s3_client() -> Any:
    """The S3 client in use, created on first use with standard retries."""
    global _s3_client
    if _s3_client is None:
        from batch.aws.clients import make_client

        _s3_client = make_client("s3")
    return _s3_client


def is_s3(location: str | os.PathLike) -> bool:
    return str(location).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/part`` → ``("bucket", "key/part")``."""
    rest = str(uri)[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise DataError(f"not an S3 URI: {uri!r}")
    return bucket, key


def join(location: str | os.PathLike, *names: str) -> str:
    """Join path components for either kind of location."""
    if is_s3(location):
        return "/".join([str(location).rstrip("/"), *names])
    return str(Path(location, *names))


def exists(location: str | os.PathLike) -> bool:
    if not is_s3(location):
        return Path(location).exists()
    bucket, key = split_s3(str(location))
    client = s3_client()
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def is_dir(location: str | os.PathLike) -> bool:
    """A local directory, or an S3 prefix with at least one object below it."""
    if not is_s3(location):
        return Path(location).is_dir()
    bucket, key = split_s3(str(location))
    prefix = key.rstrip("/") + "/" if key else ""
    page = s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    return page.get("KeyCount", 0) > 0


def list_names(location: str | os.PathLike) -> list[str]:
    """Names (not paths) of the files directly inside a directory or S3 prefix, sorted."""
    if not is_s3(location):
        return sorted(p.name for p in Path(location).iterdir() if p.is_file())
    bucket, key = split_s3(str(location))
    prefix = key.rstrip("/") + "/" if key else ""
    names = []
    for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        names += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
    return sorted(n for n in names if n and "/" not in n)


def open_read(location: str | os.PathLike) -> IO[bytes]:
    """A binary stream of the object; S3 bodies are streamed, not loaded whole."""
    if not is_s3(location):
        try:
            return open(location, "rb")
        except FileNotFoundError:
            raise DataError("no such file", file=str(location)) from None
        except IsADirectoryError:
            raise DataError("is a directory, not a file", file=str(location)) from None
    bucket, key = split_s3(str(location))
    client = s3_client()
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"]
    except client.exceptions.NoSuchKey:
        raise DataError("no such S3 object", file=str(location)) from None


def read_bytes(location: str | os.PathLike) -> bytes:
    with open_read(location) as stream:
        return stream.read()


def write_bytes(location: str | os.PathLike, data: bytes) -> None:
    """Write atomically: a local file is renamed into place; S3 puts are atomic already."""
    if is_s3(location):
        bucket, key = split_s3(str(location))
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def upload_file(local: str | os.PathLike, location: str) -> None:
    """Copy a local file to ``location`` (S3 uses multipart upload for big files)."""
    if is_s3(location):
        bucket, key = split_s3(location)
        s3_client().upload_file(str(local), bucket, key)
    else:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, location)


def download_file(location: str, local: str | os.PathLike) -> None:
    """Copy ``location`` to a local file."""
    if is_s3(location):
        bucket, key = split_s3(location)
        client = s3_client()
        try:
            client.download_file(bucket, key, str(local))
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise DataError("no such S3 object", file=location) from None
            raise
    else:
        shutil.copyfile(location, local)


def text_stream(location: str | os.PathLike, encoding: str = "utf-8") -> io.TextIOWrapper:
    return io.TextIOWrapper(open_read(location), encoding=encoding, newline="")
