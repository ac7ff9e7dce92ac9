"""Named errors. Every error a user can cause says what went wrong and where.

The CLI turns any :class:`TopxError` into a one-line message and an exit status: 2 for bad
input (retrying cannot help), 3 for a run the publish gate refused (:mod:`batch.publish.gate`;
retrying the same run cannot help), 75 for a temporary failure of a service topx depends on (see
:mod:`batch.transient`; retrying may help), 1 for any other failure. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

# sysexits.h's EX_TEMPFAIL: "a temporary failure; the user is invited to retry". AWS Batch's
# retry strategy retries this status and never 2 or 1.
TEMPFAIL = 75
# The publish gate refused the run: it is kept as `rejected`, the previous run stays current.
REFUSED = 3


class TopxError(Exception):
    """Base of all errors topx raises on purpose."""

    exit_code = 1


class TransientError(TopxError):
    """A service topx depends on (database, S3, SageMaker, AWS Batch) could not be reached,
    stopped answering or turned requests away for now: the same job may succeed when retried."""

    exit_code = TEMPFAIL


class TerminatedError(TransientError):
    """The process was asked to stop (SIGTERM), e.g. by AWS Batch draining or reclaiming its host."""


class ConfigError(TopxError):
    """A setting is missing, unknown or out of range."""

    exit_code = 2


class NoDatabaseError(ConfigError):
    """A command that only reads the database was pointed at one that does not exist."""


class MissingDependencyError(TopxError):
    """An optional engine is not installed; the message names the extra that provides it."""

    exit_code = 2

    def __init__(self, module: str, extra: str, purpose: str):
        self.module, self.extra = module, extra
        super().__init__(
            f"{purpose} needs the Python package {module!r}, which is not installed. "
            f"Install it with: pip install 'topx[{extra}]'"
        )


class DataError(TopxError):
    """Input data is malformed. Carries the file, line (1-based) and column where known."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: str | int | None = None,
    ):
        self.file, self.line, self.column, self.reason = file, line, column, message
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class EmptyDataError(DataError):
    """A file or table holds no data rows."""


class MalformedLineError(DataError):
    """A line cannot be split into the expected fields (wrong column count, bad quoting)."""


class InvalidValueError(DataError):
    """A field holds a value of the wrong type or out of its allowed range."""


class UnknownIdError(DataError):
    """An external user or item id is not in the model's id map."""


class NoCandidatesError(DataError):
    """No item may be recommended (allow/deny lists, catalogue): every list would be empty."""


class IdMapMismatchError(DataError):
    """A run directory's id maps, titles, interactions, model or lists do not fit together
    (different lengths): publishing them would put lists under other users' ids."""


class DownloadError(TopxError):
    """A data set could not be fetched, failed its checksum, or holds unsafe paths."""


class DownloadUnavailableError(DownloadError, TransientError):
    """The download server could not be reached (DNS, refused, timed out), answered 5xx or 429,
    or the connection ended before the whole file came: retrying may help (exit status 75)."""


class ArtifactError(TopxError):
    """A model artifact (model.tar.gz, its zip or NDArray list) is corrupt, truncated or unexpected."""

    exit_code = 2


class StageError(TopxError):
    """A pipeline stage cannot run because an earlier stage's output is missing or stale."""


class StaleArtifactError(StageError):
    """A file derived from a model (vectors, lists, metrics) records another model's digest than
    the run directory's model.tar.gz: it is left over from an earlier run in the same directory."""

    exit_code = 2


class NoRunError(StageError):
    """The run directory (or run id) given does not exist: an input error, not worth a retry."""

    exit_code = 2


class PublishError(TopxError):
    """Publishing a run to the database failed; the previously published run stays current."""


class EmptyRunError(PublishError):
    """A run holds no lists at all: it is never published, and nothing is exported from it."""

    exit_code = 2


class SchemaError(PublishError):
    """The database's tables predate what this version of topx stores; the message says which
    statements bring them up to date."""


class NewerSchemaError(SchemaError):
    """The database's schema revision is newer than this version of topx knows: only a newer
    topx can write to it."""

    exit_code = 2


class AwsJobError(TopxError):
    """A SageMaker or AWS Batch job failed; carries the service's failure reason."""

    def __init__(self, message: str, *, job_name: str | None = None, reason: str | None = None):
        self.job_name, self.reason = job_name, reason
        super().__init__(message)
