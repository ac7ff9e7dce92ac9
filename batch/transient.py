"""Which failures are temporary, so that a retry of the same job may succeed.

A failure is temporary when anything in its chain of causes is: a :class:`TransientError`; a
socket that could not connect or timed out; botocore failing to reach an endpoint, or AWS
throttling or failing on its side (5xx) after the client's own retries; PostgreSQL unreachable,
restarting or refusing for lack of resources, a lock or statement timeout, a deadlock or
serialization failure; a SageMaker job that failed for want of capacity or of SageMaker's own
accord. Bad input never is, nor is a bug. The CLI exits with :data:`~batch.errors.TEMPFAIL` for
these, and the AWS Batch job definition retries exactly that status.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from batch.errors import TEMPFAIL, AwsJobError, TopxError, TransientError

# AWS error codes that mean "not now" rather than "not this request".
_AWS_THROTTLED = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "SlowDown", "ProvisionedThroughputExceededException",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure", "InternalServerError",
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
})
# SQLSTATE classes and codes of a server that is going away, overloaded, or timed out a wait:
# 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown,
# statement or lock timeout), 40 transaction rollback (deadlock, serialization); 55P03 lock
# not available.
_PG_CLASSES = ("08", "53", "57", "40")
_PG_CODES = frozenset({"55P03"})
# What a failed connection says when retrying cannot help: wrong credentials, no such database.
_PG_PERMANENT = ("authentication failed", "does not exist", "no pg_hba.conf entry", "password", "ssl is not enabled",
                 "invalid dsn", "invalid connection option")
# SageMaker FailureReasons that a later attempt may not meet.
_SAGEMAKER_TRANSIENT = ("InternalServerError", "CapacityError")


def exit_code(exc: BaseException) -> int | None:
    """The CLI's exit status for ``exc``: a :class:`TopxError`'s own (temporary failures raised
    as plain errors become :data:`TEMPFAIL`); :data:`TEMPFAIL` for any other temporary failure;
    None for anything else (a bug: the caller lets its traceback show)."""
    if isinstance(exc, TopxError):
        return TEMPFAIL if exc.exit_code == 1 and is_transient(exc) else exc.exit_code
    return TEMPFAIL if is_transient(exc) else None


def is_transient(exc: BaseException) -> bool:
    """Is ``exc``, or anything that caused it, a temporary failure (see the module doc)?"""
    return any(_transient(e) for e in _causes(exc))


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        # __context__ too: `raise X from None` hides the cause from tracebacks, not from us
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "orig", None)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, AwsJobError):
        return (exc.reason or "").startswith(_SAGEMAKER_TRANSIENT)
    module = type(exc).__module__
    if module.startswith("botocore"):
        return _botocore(exc)
    if module.startswith("psycopg2"):
        return _postgres(exc)
    return False


def _botocore(exc: BaseException) -> bool:
    exceptions = sys.modules["botocore.exceptions"]
    if isinstance(exc, exceptions.ConnectionError | exceptions.HTTPClientError):
        return True  # could not connect, connection closed, read or connect timeout
    if isinstance(exc, exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in _AWS_THROTTLED or status >= 500
    return False


def _postgres(exc: BaseException) -> bool:
    code = getattr(exc, "pgcode", None)
    if code:
        return code.startswith(_PG_CLASSES) or code in _PG_CODES
    # No SQLSTATE: the client could not reach the server, or lost it, unless it was turned away
    psycopg2 = sys.modules["psycopg2"]
    message = str(exc).lower()
    return isinstance(exc, psycopg2.OperationalError) and not any(text in message for text in _PG_PERMANENT)
