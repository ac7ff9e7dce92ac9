"""S3 objects that SageMaker jobs read and write: sharded uploads, downloads, streamed lines.

A channel is a key prefix holding ``part-00000.rec``, ``part-00001.rec``, … (recordIO-protobuf).
Each part is written chunk by chunk to a local temporary file and uploaded from there, so a
channel of any size passes through bounded memory; parts let ``ShardedByS3Key`` hand each
training instance its own share, and a batch transform spread its input over its instances.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from batch.errors import AwsJobError

log = logging.getLogger("topx.aws")

_LINE_CHUNK = 1 << 20  # bytes read per call when streaming lines


class MissingS3ObjectError(AwsJobError):
    """An S3 object a stage needs (a job's input or output) is not there."""

    def __init__(self, uri: str):
        self.uri = uri
        super().__init__(f"{uri}: no such S3 object (deleted, or the job that writes it did not finish)")


@dataclass(frozen=True)
class Part:
    """One uploaded object of a channel: its key, the rows ``[start, stop)`` it holds, its size."""

    key: str
    start: int
    stop: int
    size: int


def part_bounds(n_rows: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of up to ``parts`` contiguous, non-empty, near-equal row ranges."""
    cuts = np.unique(np.linspace(0, n_rows, min(parts, max(n_rows, 1)) + 1).round().astype(np.int64))
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


class S3Objects:
    """The objects of one bucket, through an injected boto3 S3 client."""

    def __init__(self, s3: Any, bucket: str):
        self.s3, self.bucket = s3, bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def upload_parts(self, prefix: str, n_rows: int, parts: int,
                     write_rows: Callable[[BinaryIO, int, int], None]) -> list[Part]:
        """Replace everything under ``prefix/`` by ``part-NNNNN.rec`` objects; ``write_rows(stream,
        start, stop)`` writes rows ``[start, stop)`` of the channel to ``stream``."""
        self.clear(prefix)
        uploaded = []
        for number, (start, stop) in enumerate(part_bounds(n_rows, parts)):
            key = f"{prefix}/part-{number:05d}.rec"
            with tempfile.TemporaryFile() as stream:
                write_rows(stream, start, stop)
                size = stream.tell()
                stream.seek(0)
                self.s3.upload_fileobj(stream, self.bucket, key)  # multipart above 8 MB
            uploaded.append(Part(key, start, stop, size))
        log.info("uploaded %d rows in %d objects (%.1f MB) to %s/", n_rows, len(uploaded),
                 sum(p.size for p in uploaded) / 1e6, self.uri(prefix))
        return uploaded

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix/``, sorted."""
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)

    def clear(self, prefix: str) -> None:
        """Delete everything under ``prefix/``: a re-upload must not leave parts of an older one."""
        keys = self.keys(prefix)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1000 keys
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def read(self, key: str) -> bytes:
        with self._body(key) as body:
            return body.read()

    def lines(self, key: str) -> Iterator[bytes]:
        """The object's lines, streamed."""
        body = self._body(key)
        try:
            yield from body.iter_lines(chunk_size=_LINE_CHUNK)
        finally:
            body.close()

    def download(self, key: str, path: str) -> None:
        """The object into the local file ``path``, streamed (multipart above 8 MB)."""
        try:
            self.s3.download_file(self.bucket, key, path)
        except Exception as exc:
            if _not_found(exc):
                raise MissingS3ObjectError(self.uri(key)) from None
            raise

    def _body(self, key: str) -> Any:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            if _not_found(exc):
                raise MissingS3ObjectError(self.uri(key)) from None
            raise


def _not_found(exc: Exception) -> bool:
    """Does a botocore ClientError (from the client's own class tree) say there is no such object?"""
    return getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``("bucket", "key")``."""
    if not uri.startswith("s3://"):
        raise AwsJobError(f"expected an s3:// URI from SageMaker, got {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key
