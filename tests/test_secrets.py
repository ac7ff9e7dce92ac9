"""The database credentials inside the container: resolved from Secrets Manager, never shown.

The password must not reach stderr, the summary line, error messages, log records (checked raw,
before the redacting formatter, so a second log handler could not leak it either), files the run
writes, or the ``runs`` table.
"""

from __future__ import annotations

import json
import logging

import boto3
import pytest
import sqlalchemy
from aws_env import fake_credentials
from moto import mock_aws

import batch.cli
from batch.config import load_config
from batch.errors import ConfigError
from batch.log import redact, redact_tree
from batch.publish import database_url, make_engine

PASSWORD = "S3cr3t-pw-7f2a"
URL = f"postgresql://writer:{PASSWORD}@db.example.com:5432/topx"
DOWN = f"postgresql://writer:{PASSWORD}@127.0.0.1:1/topx"  # nothing listens on port 1: refused at once


@pytest.fixture
def secrets(monkeypatch):
    fake_credentials(monkeypatch)
    with mock_aws():
        yield boto3.client("secretsmanager")


@pytest.fixture
def topx(monkeypatch, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr, every topx log record as text)."""
    records: list[logging.LogRecord] = []
    collector = logging.Handler(level=logging.DEBUG)
    collector.emit = records.append
    original = batch.cli.setup_logging

    def setup_logging(level=None):
        original(level)
        logging.getLogger("topx").addHandler(collector)  # after setup, which replaces the handlers

    monkeypatch.setattr(batch.cli, "setup_logging", setup_logging)
    raw = logging.Formatter("%(name)s %(message)s")  # no redaction: what any other handler would get

    def run(*argv: str):
        records.clear()
        code = batch.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err, "\n".join(raw.format(r) for r in records)

    yield run
    logging.getLogger("topx").removeHandler(collector)


@pytest.mark.parametrize("url", [
    URL,
    "postgresql://writer:pa/ss:w#rd?x@db.example.com/topx",  # '/', ':', '#', '?' unencoded
    "postgresql://:S3cr3t@db.example.com/topx",  # no user name
    "postgresql+psycopg2://writer:S3cr3t@db.example.com:5432/topx?sslmode=require",
])
def test_every_url_password_is_hidden(url):
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    for shown in (redact(f"error on {url} (refused)"), json.dumps(redact_tree({"database": {"url": url}}))):
        assert password not in shown and ":***@db.example.com" in shown


def test_secret_holding_a_url_resolves(secrets):
    arn = secrets.create_secret(Name="topx-db", SecretString=URL)["ARN"]
    config = load_config(env={"TOPX_DATABASE_SECRET_ARN": arn})
    assert database_url(config) == URL  # the default client: region from AWS_DEFAULT_REGION


def test_secret_holding_rds_json_resolves(secrets):
    fields = {"engine": "postgres", "host": "db.example.com", "port": 5432, "username": "writer",
              "password": PASSWORD, "dbname": "topx"}
    arn = secrets.create_secret(Name="rds!db-1", SecretString=json.dumps(fields))["ARN"]
    url = database_url(load_config(env={"TOPX_DATABASE_SECRET_ARN": arn}), secrets_client=secrets)
    assert url == f"postgresql+psycopg2://writer:{PASSWORD}@db.example.com:5432/topx"


def test_a_url_setting_wins_and_the_secret_is_not_read():
    class NoCalls:
        def get_secret_value(self, **kwargs):
            raise AssertionError("the secret must not be read when a URL is set")

    config = load_config(env={"TOPX_DATABASE_URL": URL, "TOPX_DATABASE_SECRET_ARN": "arn:aws:secretsmanager:x"})
    assert database_url(config, secrets_client=NoCalls()) == URL


def test_unusable_secret_content_is_not_repeated_in_the_error(secrets):
    arn = secrets.create_secret(Name="topx-db", SecretString=f"host=db user=writer password={PASSWORD}")["ARN"]
    with pytest.raises(ConfigError) as caught:
        database_url(load_config(env={"TOPX_DATABASE_SECRET_ARN": arn}), secrets_client=secrets)
    assert PASSWORD not in str(caught.value) and arn in str(caught.value)


def test_connection_failure_hides_the_password(topx):
    code, out, err, logs = topx("--log-level", "DEBUG", "runs", "--database-url", DOWN)
    assert code == 75 and "database error on postgresql+psycopg2://writer:***@127.0.0.1:1/topx" in err  # retryable
    assert PASSWORD not in out + err + logs


def test_connection_failure_through_the_secret_hides_the_password(secrets, topx, monkeypatch):
    arn = secrets.create_secret(Name="topx-db", SecretString=DOWN)["ARN"]
    monkeypatch.setenv("TOPX_DATABASE_SECRET_ARN", arn)
    code, out, err, logs = topx("--log-level", "DEBUG", "runs")
    assert code == 75 and "writer:***@127.0.0.1:1" in err
    assert PASSWORD not in out + err + logs


@pytest.mark.postgres
def test_summary_line_hides_the_password(topx, pg_url):
    # The test server trusts local connections, so a wrong password still connects.
    with_password = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    code, out, err, logs = topx("runs", "--database-url", with_password)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["database"] == with_password.replace(PASSWORD, "***")
    assert PASSWORD not in out + err + logs


@pytest.mark.postgres
def test_whole_run_keeps_the_password_out_of_output_files_and_database(secrets, topx, pg_url, monkeypatch, tmp_path):
    with_password = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    arn = secrets.create_secret(Name="topx-db", SecretString=with_password)["ARN"]
    for name, value in {"TOPX_DATABASE_SECRET_ARN": arn, "TOPX_DATA_SYNTH_USERS": "30", "TOPX_DATA_SYNTH_ITEMS": "40",
                        "TOPX_DATA_SYNTH_INTERACTIONS": "600", "TOPX_TRAIN_HYPERPARAMETERS_EPOCHS": "1",
                        "TOPX_TRAIN_HYPERPARAMETERS_NUM_FACTORS": "4",
                        "TOPX_PUBLISH_GATE_ALLOW_REGRESSION": "true"}.items():  # tiny data, 1 epoch
        monkeypatch.setenv(name, value)
    code, out, err, logs = topx("--log-level", "DEBUG", "run", "--workdir", str(tmp_path / "work"), "--top", "5")
    assert code == 0, err
    assert PASSWORD not in out + err + logs
    leaked = [p for p in (tmp_path / "work").rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert leaked == []
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        stored = [json.dumps(row[0]) for row in conn.execute(sqlalchemy.text("SELECT config FROM runs"))]
    engine.dispose()
    assert stored and not any(PASSWORD in text for text in stored)


def test_dry_run_masks_the_environment(topx):
    code, out, err, logs = topx("submit", "--queue", "topx", "--dry-run", "--env", f"TOPX_DATABASE_URL={URL}",
                                "--env", f"DB_PASSWORD={PASSWORD}")
    assert code == 0
    [request] = json.loads(out.strip().splitlines()[-1])["requests"]
    env = {e["name"]: e["value"] for e in request["containerOverrides"]["environment"] if e["name"] != "TOPX_RUN_ID"}
    assert env == {"TOPX_DATABASE_URL": URL.replace(PASSWORD, "***"), "DB_PASSWORD": "***"}
    assert PASSWORD not in out + err + logs


# Each form a password can take in a database URL, and the text that must not appear anywhere.
FORMS = {
    "query": ("postgresql://postgres@127.0.0.1:5432/{db}?password=Qu3ry-s3cret&sslmode=disable", "Qu3ry-s3cret"),
    "space": ("postgresql://postgres:sp ace-s3cret@127.0.0.1:5432/{db}", "ace-s3cret"),
    "encoded": ("postgresql://postgres:en%40c-s3cret@127.0.0.1:5432/{db}", "c-s3cret"),
}
MALFORMED = {
    "no colon": ("postgresql//u:Typ0-s3cret@h/db", "Typ0-s3cret"),
    "unencoded @": ("postgresql://u:at@Sign-s3cret@h/db", "Sign-s3cret"),
    "no scheme": ("u:Bare-s3cret@h/db", "Bare-s3cret"),
}


@pytest.mark.parametrize("url, secret", [*FORMS.values(), *MALFORMED.values()])
def test_every_form_is_redacted_in_text_and_trees(url, secret):
    url = url.format(db="topx")
    assert secret not in redact(f"cannot connect to {url}: refused")
    assert secret not in json.dumps(redact_tree({"publish": {"database_url": url}, "argv": [url]}))


@pytest.mark.parametrize("form", MALFORMED)
def test_a_malformed_url_is_a_config_error_without_the_password(form, topx):
    url, secret = MALFORMED[form]
    code, out, err, logs = topx("--log-level", "DEBUG", "runs", "--database-url", url)
    assert code == 2 and "database URL" in err
    assert secret not in out + err + logs


@pytest.mark.postgres
@pytest.mark.parametrize("form", FORMS)
def test_summaries_files_and_runs_config_hide_each_form(form, topx, pg_url, tmp_path, monkeypatch):
    url, secret = FORMS[form]
    url = url.format(db=pg_url.rsplit("/", 1)[1])  # the test server trusts local connections
    for name, value in {"TOPX_DATA_SYNTH_USERS": "30", "TOPX_DATA_SYNTH_ITEMS": "40",
                        "TOPX_DATA_SYNTH_INTERACTIONS": "600", "TOPX_TRAIN_HYPERPARAMETERS_EPOCHS": "1",
                        "TOPX_TRAIN_HYPERPARAMETERS_NUM_FACTORS": "4",
                        "TOPX_PUBLISH_GATE_ALLOW_REGRESSION": "true"}.items():  # tiny data, 1 epoch
        monkeypatch.setenv(name, value)
    code, out, err, logs = topx("--log-level", "DEBUG", "run", "--workdir", str(tmp_path / "work"), "--top", "5",
                                "--database-url", url)
    assert code == 0, err
    code2, out2, err2, logs2 = topx("runs", "--database-url", url)
    assert code2 == 0 and "***" in out2
    assert secret not in out + err + logs + out2 + err2 + logs2
    leaked = [p.name for p in (tmp_path / "work").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        stored = [json.dumps(row[0]) for row in conn.execute(sqlalchemy.text("SELECT config FROM runs"))]
    engine.dispose()
    assert stored and not any(secret in text for text in stored)


def test_postgres_scheme_is_postgresql():
    engine = make_engine("postgres://u:pw@127.0.0.1:1/db")
    assert engine.url.drivername == "postgresql+psycopg2"
    engine.dispose()
