"""Which database to publish to, and engines for it.

The embedded default is a SQLite file in the work directory; any SQLAlchemy URL (PostgreSQL via
psycopg2 for production) can be given instead, directly or as an AWS Secrets Manager secret.
URLs are shown only through :func:`shown`, which hides the password.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from batch import storage
from batch.config import JobConfig
from batch.errors import ConfigError, NoDatabaseError, PublishError
from batch.log import redact
from batch.redaction import redact_url, remember

DEFAULT_DATABASE = "topx.db"


def shown(url: str | URL) -> str:
    """The URL with its password (and secret query values) replaced by ``***``, safe for logs and
    summaries, whether or not it parses."""
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    return redact_url(url)


def database_url(config: JobConfig, *, secrets_client: Any = None) -> str:
    """The URL to publish to: ``publish.database_url``, else the URL in the Secrets Manager
    secret ``publish.database_secret_arn``, else the SQLite file ``<workdir>/topx.db``."""
    if config.publish.database_url:
        remember(config.publish.database_url)
        return config.publish.database_url
    if config.publish.database_secret_arn:
        url = url_from_secret(config.publish.database_secret_arn, client=secrets_client)
        remember(url)
        return url
    if storage.is_s3(config.workdir):
        raise ConfigError("the embedded SQLite database needs a local workdir; "
                          "set publish.database_url (TOPX_DATABASE_URL) for an s3:// workdir")
    return f"sqlite:///{Path(config.workdir).resolve() / DEFAULT_DATABASE}"


def url_from_secret(secret_id: str, *, client: Any = None) -> str:
    """A secret holding either a URL or RDS's JSON (engine, host, port, username, password,
    dbname) as a PostgreSQL URL."""
    if client is None:
        from batch.aws.clients import make_client

        # the ARN names the secret's region; a bare name uses the environment's
        parts = secret_id.split(":")
        region = parts[3] if secret_id.startswith("arn:") and len(parts) > 3 and parts[3] else None
        client = make_client("secretsmanager", region_name=region)
    try:
        value = client.get_secret_value(SecretId=secret_id)["SecretString"].strip()
    except client.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        raise ConfigError(f"cannot read the database secret {secret_id}: {error.get('Code')}: "
                          f"{error.get('Message')}") from None
    except KeyError:
        raise ConfigError(f"the database secret {secret_id} has no SecretString (binary secrets are not "
                          f"supported)") from None
    if "://" in value:
        return value
    try:
        fields = json.loads(value)
        return URL.create("postgresql+psycopg2", username=fields["username"], password=fields.get("password"),
                          host=fields["host"], port=fields.get("port"),
                          database=fields.get("dbname")).render_as_string(hide_password=False)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"secret {secret_id} holds neither a database URL nor RDS-style JSON "
                          f"(host, username, password, dbname): {type(exc).__name__}") from None


def _json(value: Any) -> str:
    """The text of a JSON column; a float that is not finite (NaN, which PostgreSQL's JSON
    refuses) is stored as null."""
    return json.dumps(_finite(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def make_engine(database_url: str) -> Engine:
    """An engine for the URL; a SQLite file's directory is created if missing."""
    remember(database_url)
    url = parse_database_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if url.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        if url.drivername == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3; we ship psycopg2
            url = url.set(drivername="postgresql+psycopg2")
    try:
        return create_engine(url, json_serializer=_json, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"cannot use database URL {shown(url)}: {exc}") from None


def require_existing(database_url: str) -> str:
    """``database_url``, for a command that only reads: a SQLite file that does not exist raises
    :class:`NoDatabaseError` (opening it would create an empty database and report nothing)."""
    url = parse_database_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).exists():
        raise NoDatabaseError(f"no database at {url.database}: nothing was ever published there (check "
                              f"--database-url / --workdir; this command does not create one)")
    return database_url


def parse_database_url(database_url: str) -> URL:
    """The URL parsed, ``postgres://`` taken as ``postgresql://`` (as libpq does); a
    :class:`ConfigError` that shows no password when it does not parse or is ambiguous."""
    try:
        url = make_url(database_url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"not a database URL: {shown(database_url)} (expected "
                          f"dialect[+driver]://user:password@host:port/database)") from None
    if url.host and "@" in url.host:
        raise ConfigError(f"database URL {shown(database_url)}: the user name or password holds an unencoded '@'; "
                          f"write it as %40") from None
    dialect, plus, driver = url.drivername.partition("+")
    if dialect == "postgres":
        url = url.set(drivername=f"postgresql{plus}{driver}")
    return url


@contextmanager
def engine_scope(database_url: str | None, engine: Engine | None) -> Iterator[Engine]:
    """``engine`` when given (the caller owns it), else a new one disposed on exit."""
    if engine is not None:
        yield engine
        return
    if not database_url:
        raise PublishError("no database URL given")
    own = make_engine(database_url)
    try:
        yield own
    finally:
        own.dispose()


@contextmanager
def session(engine: Engine) -> Iterator[Connection]:
    """A connection; database errors become :class:`PublishError` without the URL's password."""
    try:
        with engine.connect() as conn:
            yield conn
    except DBAPIError as exc:
        reason = redact(str(exc.orig if exc.orig is not None else exc)).strip()
        raise PublishError(f"database error on {shown(engine.url)}: {reason}") from exc
