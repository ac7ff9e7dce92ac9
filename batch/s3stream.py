"""Writing text to an ``s3://`` object as it is produced, all or nothing, in bounded memory.

boto3's ``upload_fileobj`` reads a file object and sends it as a multipart upload, a part at a
time; it aborts the upload when reading fails. So the writer's text goes into an OS pipe whose
read end ``upload_fileobj`` consumes on a thread of its own: memory holds the pipe's buffers and
at most :data:`PARTS_IN_MEMORY` parts of :data:`PART_SIZE` (32 MiB), whatever the object's
size. When the writer fails midway, the read end raises instead of ending, so boto3 aborts the
multipart upload (or never puts a small object) and no partial object appears under the key.
When the upload fails, the pipe is closed under the writer and the upload's error is raised in
its place.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from batch.errors import PublishError

MiB = 1 << 20
# Parts of 8 MiB (S3 wants ≥ 5 MiB but the last), at most 4 read ahead and 4 in flight.
PART_SIZE = 8 * MiB
PARTS_IN_MEMORY = 4


class UploadFailedError(PublishError):
    """An object could not be written to S3; nothing was left under its key."""


class _WriterGaveUp(Exception):
    """Raised into the upload when the writer failed: boto3 then aborts the upload."""


class _PipeInlet(io.RawIOBase):
    """The read end of the pipe: ends like a file when the writer finished, raises when it gave up."""

    def __init__(self, fd: int, gave_up: threading.Event):
        self.fd, self.gave_up = fd, gave_up

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = os.readv(self.fd, [buffer])
        if n == 0 and self.gave_up.is_set():
            raise _WriterGaveUp("the writer failed before the end of the object")
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


@contextmanager
def s3_text_writer(client: Any, bucket: str, key: str, *, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text stream whose content becomes the object ``s3://bucket/key`` when the ``with`` block
    ends without error, and nothing at all when it raises. Raises :class:`UploadFailedError`
    (with the AWS error as its cause) when S3 refuses or fails the upload."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                            max_concurrency=PARTS_IN_MEMORY)
    config.max_in_memory_upload_chunks = PARTS_IN_MEMORY  # s3transfer's, not among boto3's arguments
    read_fd, write_fd = os.pipe()
    gave_up = threading.Event()
    inlet = io.BufferedReader(_PipeInlet(read_fd, gave_up), buffer_size=MiB)  # read(n) fills n bytes
    failures: list[BaseException] = []

    def upload() -> None:
        try:
            client.upload_fileobj(inlet, bucket, key, Config=config)
        except BaseException as exc:  # handed to the writer's thread, which raises it
            failures.append(exc)
        finally:
            inlet.close()  # a writer still writing gets BrokenPipeError

    uploader = threading.Thread(target=upload, name=f"upload s3://{bucket}/{key}", daemon=True)
    uploader.start()
    stream = open(write_fd, "w", encoding=encoding, newline="", buffering=MiB)
    try:
        yield stream
        stream.close()  # the end of the object: boto3 completes the upload
    except BaseException as exc:
        upload_broke = isinstance(exc, BrokenPipeError) and bool(failures)  # the pipe closed under us
        if not upload_broke:
            gave_up.set()
        _close(stream)
        uploader.join()
        if upload_broke:
            raise _failed(bucket, key, failures[0]) from failures[0]
        raise
    uploader.join()
    if failures:
        raise _failed(bucket, key, failures[0]) from failures[0]


def _close(stream: IO[str]) -> None:
    """Close the write end even when flushing into a pipe nobody reads fails."""
    try:
        stream.close()
    except OSError:
        stream.buffer.raw.close()


def _failed(bucket: str, key: str, exc: BaseException) -> UploadFailedError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    reason = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
    return UploadFailedError(f"could not write s3://{bucket}/{key} ({reason}); no object was written")
