"""The ways a model artifact can be wrong, each a named :class:`~batch.errors.ArtifactError`.

Every reader in :mod:`batch.artifact` turns low-level failures (short reads, bad zip or gzip
streams, impossible shapes) into one of these, so a caller never sees a numpy, zipfile or
tarfile traceback for a bad file.
"""

from __future__ import annotations

from batch.errors import ArtifactError


class TruncatedArtifactError(ArtifactError):
    """The data ends before the structure it declares is complete (a cut-off download or copy)."""


class CorruptArtifactError(ArtifactError):
    """The bytes do not parse, or what they declare is impossible (bad magic, negative shape,
    sizes that disagree, a failed checksum)."""


class UnsupportedArtifactError(ArtifactError):
    """The bytes are well formed but use a feature topx does not read (e.g. bfloat16 arrays)."""


class ArtifactTooLargeError(ArtifactError):
    """A member of the artifact decompresses, or an array densifies, to more bytes than a model of
    the expected shape can take: a decompression bomb or a damaged header, refused before the
    memory is spent."""


class ModelContentError(ArtifactError):
    """The artifact parses but is not a usable factorization machine (a parameter is missing,
    shapes disagree, values are not finite, or meta.json contradicts the parameters)."""
