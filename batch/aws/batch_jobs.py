"""Submit topx jobs to AWS Batch, follow them to the end, and say why one failed.

The boto3 ``batch`` client is always handed in (:func:`client` makes one with standard retries),
so tests pass a moto-backed one. Requests are plain dicts shaped as ``submit_job`` takes them:
:func:`job_request` builds one, :func:`masked` makes a copy safe to print.

An array job runs N copies of the container with ``AWS_BATCH_JOB_ARRAY_INDEX`` = 0..N-1;
:func:`submit_array_then_final` submits one and then a job that Batch starts only after every
child succeeded (a failed child fails the dependent job without running it), and
:func:`submit_prepared_array` puts a job in front of the array (a sharded run's three jobs).
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from batch.errors import AwsJobError, ConfigError
from batch.log import log, redact

TERMINAL = ("SUCCEEDED", "FAILED")
# Batch's rule for job names; array sizes Batch accepts.
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
ARRAY_SIZES = range(2, 10_001)
# Environment names whose values are credentials; *_ARN names only point at a secret.
_SECRET_NAME = re.compile(r"(?i)(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY)")


class BatchJobError(AwsJobError):
    """An AWS Batch job ended FAILED. The message carries its status reason and, per attempt, the
    container's exit code, reason and log stream."""

    def __init__(self, message: str, *, job_id: str, job_name: str | None, reason: str | None):
        self.job_id = job_id
        super().__init__(message, job_name=job_name, reason=reason)


class BatchRequestError(AwsJobError):
    """AWS Batch refused a request (an unknown queue or job definition, say) or could not be reached."""


def client(region: str | None = None, endpoint_url: str | None = None) -> Any:
    """A boto3 ``batch`` client with standard retries (throttling is retried with backoff)."""
    from botocore.exceptions import NoRegionError

    from batch.aws.clients import make_client

    try:
        return make_client("batch", region_name=region, endpoint_url=endpoint_url)
    except NoRegionError:
        raise ConfigError("no AWS region: pass --region or set AWS_DEFAULT_REGION") from None


def job_request(
    *,
    name: str,
    queue: str,
    definition: str,
    parameters: Mapping[str, str] | None = None,
    environment: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    array_size: int | None = None,
) -> dict[str, Any]:
    """A ``submit_job`` request. ``parameters`` fill the definition's ``Ref::`` placeholders;
    ``environment`` and ``command`` override the container's; ``array_size`` makes an array job."""
    if not JOB_NAME.fullmatch(name):
        raise ConfigError(f"job name {name!r}: up to 128 letters, digits, - and _, starting alphanumeric")
    request: dict[str, Any] = {"jobName": name, "jobQueue": queue, "jobDefinition": definition}
    if parameters:
        request["parameters"] = dict(parameters)
    overrides: dict[str, Any] = {}
    if environment:
        overrides["environment"] = [{"name": k, "value": v} for k, v in environment.items()]
    if command:
        overrides["command"] = list(command)
    if overrides:
        request["containerOverrides"] = overrides
    if array_size is not None:
        if array_size not in ARRAY_SIZES:
            raise ConfigError(f"array size must be 2 to 10000; got {array_size}")
        request["arrayProperties"] = {"size": array_size}
    return request


def masked(request: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``request`` fit to print: environment values named like credentials become
    ``***``; passwords inside URLs in any value, parameter or command argument are hidden."""
    shown = copy.deepcopy(dict(request))
    overrides = shown.get("containerOverrides", {})
    for variable in overrides.get("environment", []):
        name = variable["name"]
        secret = _SECRET_NAME.search(name) and not name.upper().endswith("_ARN")
        variable["value"] = "***" if secret else _redact(variable["value"])
    if "command" in overrides:
        overrides["command"] = [_redact(arg) for arg in overrides["command"]]
    if "parameters" in shown:
        shown["parameters"] = {key: _redact(value) for key, value in shown["parameters"].items()}
    return shown


def _redact(value: str) -> str:
    # An ARN names a resource and holds no credential, but "secretsmanager:" and ":secret:" in
    # it look like key: value pairs to redact(); keep it readable.
    return value if value.startswith("arn:") else redact(value)


def submit(batch: Any, request: Mapping[str, Any]) -> dict[str, str]:
    """Submit one job; returns ``{"jobId", "jobName", "jobArn"}``."""
    response = _call(batch.submit_job, **request)
    log.info("submitted AWS Batch job %s (%s) to queue %s", response["jobName"], response["jobId"],
             request["jobQueue"])
    return {key: response[key] for key in ("jobId", "jobName", "jobArn")}


def submit_array_then_final(
    batch: Any, array_request: Mapping[str, Any], final_request: Mapping[str, Any], *, n_to_n: bool = False
) -> tuple[dict[str, str], dict[str, str]]:
    """Submit an array job, then ``final_request`` depending on it.

    By default the final job waits for the whole array (every child SUCCEEDED). ``n_to_n`` makes
    the final job an array of the same size whose child i waits for child i only.
    """
    size = array_request.get("arrayProperties", {}).get("size")
    if size is None:
        raise ConfigError("the first job of an array-then-final pair must be an array job")
    final_size = final_request.get("arrayProperties", {}).get("size")
    if n_to_n and final_size != size:
        raise ConfigError(f"an N_TO_N dependency needs a final array job of size {size}; got {final_size}")
    array = submit(batch, array_request)
    dependency = {"jobId": array["jobId"], **({"type": "N_TO_N"} if n_to_n else {})}
    final = submit(batch, {**final_request, "dependsOn": [dependency]})
    return array, final


def submit_prepared_array(
    batch: Any, prepare_request: Mapping[str, Any], array_request: Mapping[str, Any], final_request: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Submit ``prepare_request``, then an array job that starts once it succeeded, then
    ``final_request`` once every child of the array succeeded (a sharded run: prepare, shards,
    finalize). A failed job fails every job after it without running them."""
    prepare = submit(batch, prepare_request)
    array, final = submit_array_then_final(
        batch, {**array_request, "dependsOn": [{"jobId": prepare["jobId"]}]}, final_request)
    return prepare, array, final


def describe(batch: Any, job_id: str) -> dict[str, Any]:
    """The job's ``describe_jobs`` entry; :class:`BatchRequestError` if Batch does not know it."""
    jobs = _call(batch.describe_jobs, jobs=[job_id])["jobs"]
    if not jobs:
        raise BatchRequestError(f"AWS Batch has no job {job_id} (jobs are kept for about a week)")
    return jobs[0]


def wait(
    batch: Any, job_id: str, *, poll_s: float = 15.0, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Poll until the job SUCCEEDED (returned) or FAILED (:class:`BatchJobError`).

    Logs each status change (SUBMITTED → … → RUNNING → SUCCEEDED) with the time since waiting
    began, and for an array job each change in how many children are in which status.
    """
    started, last = time.monotonic(), None
    while True:
        job = describe(batch, job_id)
        line = progress_line(job)
        if line != last:
            log.info("%s (after %s)", line, _elapsed(time.monotonic() - started))
            last = line
        if job["status"] in TERMINAL:
            break
        sleep(poll_s)
    if job["status"] == "FAILED":
        raise BatchJobError(failure_message(batch, job), job_id=job_id, job_name=job.get("jobName"),
                            reason=job.get("statusReason"))
    return job


def progress_line(job: Mapping[str, Any]) -> str:
    """``job NAME (ID) RUNNING``, plus the children's counts for an array job."""
    line = f"job {job.get('jobName')} ({job['jobId']}) {job['status']}"
    summary = job.get("arrayProperties", {}).get("statusSummary")
    if summary:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.items()) if n)
        line += f" [children of {job['arrayProperties'].get('size', '?')}: {counts or 'none started'}]"
    return line


def failure_message(batch: Any, job: Mapping[str, Any]) -> str:
    """Why a FAILED job failed: its status reason, each attempt's container exit, and for an array
    job the first failed children's reasons."""
    parts = [f"AWS Batch job {job.get('jobName')} ({job['jobId']}) FAILED: "
             f"{job.get('statusReason') or 'no status reason given'}"]
    attempts = job.get("attempts") or []
    parts += [f"attempt {i}: {_attempt(a)}" for i, a in enumerate(attempts, 1)]
    if not attempts and "exitCode" in job.get("container", {}):
        parts.append(f"exit code {job['container']['exitCode']}")
    summary = job.get("arrayProperties", {}).get("statusSummary")
    if summary and summary.get("FAILED"):
        parts.append(f"{summary['FAILED']} of {job['arrayProperties'].get('size', '?')} child jobs failed")
        parts += [f"child {c['jobId']}: {c.get('statusReason') or 'no status reason given'}"
                  for c in _failed_children(batch, job["jobId"])]
    return "; ".join(parts)


def _attempt(attempt: Mapping[str, Any]) -> str:
    container = attempt.get("container", {})
    said = [attempt.get("statusReason"), container.get("reason")]
    if "exitCode" in container:
        said.insert(0, f"exit code {container['exitCode']}")
    if container.get("logStreamName"):
        said.append(f"log stream {container['logStreamName']}")
    return ", ".join(s for s in said if s) or "no details"


def _failed_children(batch: Any, array_id: str, limit: int = 3) -> list[dict[str, Any]]:
    found = _call(batch.list_jobs, arrayJobId=array_id, jobStatus="FAILED")["jobSummaryList"]
    return found[:limit]


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _call(method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Call a client method; AWS and connection errors become :class:`BatchRequestError`,
    a missing region or credentials a :class:`ConfigError`."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    try:
        return method(**kwargs)
    except NoRegionError:
        raise ConfigError("no AWS region: pass --region or set AWS_DEFAULT_REGION") from None
    except NoCredentialsError:
        raise ConfigError("no AWS credentials found (environment, profile or instance role)") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise BatchRequestError(f"AWS Batch refused {exc.operation_name}: "
                                f"{error.get('Code')}: {error.get('Message')}") from None
    except BotoCoreError as exc:
        raise BatchRequestError(f"AWS Batch could not be reached: {exc}") from None
