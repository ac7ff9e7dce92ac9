"""Exit statuses: bad input 2, temporary failures 75 (AWS Batch retries those), anything else 1,
and a SIGTERM'd ``topx run`` exits 75 and is resumed by the next attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psycopg2
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from batch.errors import TEMPFAIL, AwsJobError, ConfigError, DataError, PublishError, StageError
from batch.publish.connect import make_engine, session
from batch.transient import exit_code


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


def raised(outer: Exception, inner: BaseException) -> Exception:
    """``outer`` raised while handling ``inner`` with ``from None``, as topx wraps errors."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer from None
    except Exception as exc:
        return exc


@pytest.mark.parametrize("exc, status", [
    (ConfigError("x"), 2),
    (DataError("bad rating", file="u.data", line=3), 2),
    (StageError("no model"), 1),
    (ValueError("a bug"), None),
    (EndpointConnectionError(endpoint_url="https://s3.amazonaws.com"), TEMPFAIL),
    (ReadTimeoutError(endpoint_url="https://sagemaker"), TEMPFAIL),
    (client_error("ThrottlingException", 400), TEMPFAIL),
    (client_error("SlowDown", 503), TEMPFAIL),
    (client_error("InternalFailure", 500), TEMPFAIL),
    (client_error("AccessDenied", 403), None),
    (raised(StageError("upload failed"), client_error("ServiceUnavailable", 503)), TEMPFAIL),
    (raised(StageError("upload failed"), client_error("NoSuchBucket", 404)), 1),
    (raised(DataError("no such S3 object", file="s3://b/k"), ConnectionResetError()), 2),  # input stays input
    (AwsJobError("fm failed", reason="CapacityError: Unable to provision requested ML compute capacity"), TEMPFAIL),
    (AwsJobError("fm failed", reason="InternalServerError: We encountered an internal error"), TEMPFAIL),
    (AwsJobError("fm failed", reason="ClientError: feature_dim 10 does not match the data"), 1),
    (raised(PublishError("database error"), psycopg2.OperationalError("could not connect to server: refused")),
     TEMPFAIL),
    (raised(PublishError("database error"), psycopg2.OperationalError('FATAL: password authentication failed')), 1),
])
def test_exit_status_by_failure(exc, status):
    assert exit_code(exc) == status


def publish_error(url: str, statement: str = "SELECT 1", setup: str | None = None) -> PublishError:
    engine = make_engine(url)
    try:
        with pytest.raises(PublishError) as caught, session(engine) as conn:
            if setup:
                conn.exec_driver_sql(setup)
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    return caught.value


@pytest.mark.postgres
def test_postgresql_failures_on_the_real_server(pg_url):
    missing = pg_url.rsplit("/", 1)[0] + "/topx_no_such_database"
    assert exit_code(publish_error(missing)) == 1  # configuration: a retry would fail the same way
    assert exit_code(publish_error(pg_url, "SELECT * FROM no_such_table")) == 1
    assert exit_code(publish_error("postgresql://postgres@127.0.0.1:1/x")) == TEMPFAIL  # nothing listens
    holder = psycopg2.connect(pg_url)
    try:
        with holder.cursor() as cur:
            cur.execute("CREATE TABLE busy (x int)")
            holder.commit()
            cur.execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")  # held until the connection closes
        waited = publish_error(pg_url, "SELECT * FROM busy", setup="SET lock_timeout = '50ms'")
    finally:
        holder.close()
    assert "lock timeout" in str(waited) and exit_code(waited) == TEMPFAIL


def test_sigterm_stops_a_run_with_75_and_the_retry_resumes_it(tmp_path):
    env = {**os.environ, "TOPX_DATA_SYNTH_USERS": "100", "TOPX_DATA_SYNTH_ITEMS": "150",
           "TOPX_DATA_SYNTH_INTERACTIONS": "5000", "TOPX_TRAIN_HYPERPARAMETERS_EPOCHS": "40",
           "TOPX_TRAIN_HYPERPARAMETERS_NUM_FACTORS": "8", "TOPX_TOP": "5", "PYTHONUNBUFFERED": "1",
           "TOPX_PUBLISH_GATE_ALLOW_REGRESSION": "true"}  # a small data set: the gate is not what this tests
    env.pop("TOPX_DATABASE_URL", None)
    command = [sys.executable, "-m", "batch", "run", "--workdir", str(tmp_path / "work")]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in first.stderr:  # training has begun: ingest is done and recorded
        if "local FM engine on" in line:
            first.send_signal(signal.SIGTERM)
            break
    out, err = first.communicate(timeout=120)
    assert first.returncode == TEMPFAIL, err
    assert "stopped by SIGTERM" in err and "the same job may succeed when retried" in err and out == ""
    retry = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert retry.returncode == 0, retry.stderr
    summary = json.loads(retry.stdout.strip().splitlines()[-1])
    assert summary["resumed"] is True and summary["status"] == "published"
    assert [p.name for p in (tmp_path / "work" / "runs").iterdir()] == [summary["run_id"]]  # the same run
