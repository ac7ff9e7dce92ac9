"""`topx export` and the other publish commands: CSV content, streaming, the CLI, and where the
database URL comes from."""

from __future__ import annotations

import csv
import io
import json

import boto3
import psycopg2
import pytest
from aws_env import moto_s3
from moto import mock_aws
from test_publish_support import id_maps, make_lists, run_info, titles_for

import batch.cli
from batch.config import load_config
from batch.errors import ConfigError, PublishError
from batch.publish import database_url, export_current, publish_run
from batch.publish.models import schema_sql


def publish_two(url: str) -> None:
    users, items = id_maps()
    publish_run(url, run_info("old"), make_lists(shift=50), users, items, item_titles=titles_for(items))
    publish_run(url, run_info("new"), make_lists(), users, items, item_titles=titles_for(items))


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_export_writes_the_current_runs_top_n_with_titles(db_url, tmp_path):
    publish_two(db_url)
    out = tmp_path / "emails" / "top.csv"
    assert export_current(db_url, out, top=2) == 12

    rows = read_csv(out.read_text(encoding="utf-8"))
    assert rows[0] == ["user_id", "rank", "item_id", "title", "score"]
    # Users 7..12 as text: "10" < "11" < "12" < "7" < "8" < "9"; user u gets items u-7, u-6.
    assert [r[0] for r in rows[1::2]] == ["10", "11", "12", "7", "8", "9"]
    assert rows[1:3] == [["10", "1", "109", 'Title of 109, "quoted"', "9.03"],
                         ["10", "2", "112", 'Title of 112, "quoted"', "8.03"]]
    assert all(r[1] in ("1", "2") for r in rows[1:])  # the cut
    assert all(float(r[4]) < 20 for r in rows[1:])  # only the new run (old scores are ≥ 50)
    assert not list(tmp_path.glob("emails/*.part"))


def test_export_jsonl_is_one_user_a_line_in_personalizes_batch_output_shape(db_url, tmp_path):
    publish_two(db_url)
    out = tmp_path / "batch-output.jsonl"
    # batch_rows=5: users' rows straddle the fetched partitions (4 rows a user)
    assert export_current(db_url, out, top=4, format="jsonl", batch_rows=5) == 24
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["input"]["userId"] for line in lines] == ["10", "11", "12", "7", "8", "9"]
    assert lines[0] == {"input": {"userId": "10"}, "error": None,
                        "output": {"recommendedItems": ["109", "112", "115", "118"],
                                   "scores": [9.03, 8.03, 7.03, 6.03]}}
    with pytest.raises(ConfigError, match="format"):
        export_current(db_url, out, top=4, format="xml")


def test_export_to_an_open_file_and_the_whole_list(db_url):
    publish_two(db_url)
    buffer = io.StringIO()
    assert export_current(db_url, buffer, top=100) == 24
    rows = read_csv(buffer.getvalue())
    assert len(rows) == 25 and ["12", "4", "124", "", "6.05"] in rows  # an item without a title


def test_export_streams_from_a_server_side_cursor(pg_url):
    """While rows are being written the exporting session is still FETCHing from a cursor, a
    batch at a time: the result is never fetched whole."""
    publish_two(pg_url)
    seen = []
    watcher = psycopg2.connect(pg_url)
    watcher.autocommit = True  # else pg_stat_activity is read once per transaction

    class Out(io.StringIO):
        def write(self, text):
            cur = watcher.cursor()
            cur.execute("SELECT query, query_start FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND state = 'idle in transaction'")
            seen.extend(cur.fetchall())
            return super().write(text)

    try:
        assert export_current(pg_url, Out(), top=100, batch_rows=5) == 24
    finally:
        watcher.close()
    assert seen[0][0].startswith("FETCH FORWARD")  # while writing the header
    fetches = {(q, at) for q, at in seen if q.startswith("FETCH FORWARD 5 FROM")}
    assert len(fetches) >= 3  # rows were written between fetches of 5


def test_export_needs_a_published_run(db_url, tmp_path):
    with pytest.raises(PublishError, match="no run is published"):
        export_current(db_url, tmp_path / "x.csv", top=5)
    with pytest.raises(ConfigError):
        export_current(db_url, tmp_path / "x.csv", top=0)
    assert not (tmp_path / "x.csv").exists()


def test_export_of_a_run_without_rows_writes_nothing(db_url, tmp_path):
    import sqlalchemy as sa

    from batch.errors import EmptyRunError
    from batch.publish import make_engine

    publish_two(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM recommendations WHERE run_id = 'new'"))
    engine.dispose()
    with pytest.raises(EmptyRunError, match="has no lists"):
        export_current(db_url, tmp_path / "x.csv", top=5)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.csv.part").exists()


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `topx …` with just the publish commands registered; returns (status, summary, stderr)."""
    monkeypatch.setattr(batch.cli, "GROUPS", ("publish",))

    def run(*argv):
        code = batch.cli.main(list(argv))
        captured = capsys.readouterr()
        lines = captured.out.strip().splitlines()
        return code, json.loads(lines[-1]) if lines else None, captured.err

    return run


def test_cli_export_runs_and_cleanup(db_url, tmp_path, cli):
    publish_two(db_url)
    code, summary, _ = cli("export", "--top", "3", "--out", str(tmp_path / "x.csv"), "--database-url", db_url)
    assert code == 0 and summary["rows"] == 18 and summary["run_id"] == "new" and summary["top"] == 3
    assert len(read_csv((tmp_path / "x.csv").read_text())) == 19

    code, summary, _ = cli("runs", "--database-url", db_url)
    assert code == 0
    assert [(r["id"], r["status"]) for r in summary["runs"]] == [("new", "current"), ("old", "superseded")]

    code, summary, _ = cli("cleanup", "--keep-runs", "1", "--database-url", db_url)
    assert code == 0 and summary["pruned"] == ["old"] and summary["recovered"] == []


def test_cli_schema_writes_schema_sql(tmp_path, cli):
    code, summary, _ = cli("schema", "--out", str(tmp_path / "schema.sql"))
    assert code == 0 and summary["statements"] == 15  # 8 tables, 2 indexes, 4 views, the revision stamp
    assert (tmp_path / "schema.sql").read_text() == schema_sql()


def test_cli_default_database_is_sqlite_in_the_workdir(tmp_path, cli, monkeypatch):
    monkeypatch.delenv("TOPX_DATABASE_URL", raising=False)
    publish_two(f"sqlite:///{tmp_path / 'work' / 'topx.db'}")
    code, summary, _ = cli("runs", "--workdir", str(tmp_path / "work"))
    assert code == 0 and [r["id"] for r in summary["runs"]] == ["new", "old"]
    assert summary["database"] == f"sqlite:///{tmp_path / 'work' / 'topx.db'}"


@pytest.mark.parametrize("command", [("runs",), ("export", "--top", "1", "--out", "x.csv"),
                                     ("cleanup", "--keep-runs", "1")])
def test_read_only_commands_never_create_a_database(tmp_path, cli, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, summary, err = cli(*command, "--database-url", f"sqlite:///{tmp_path / 'typo.db'}")
    assert code == 2 and summary is None and "no database at" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_errors_hide_the_password(tmp_path, cli):
    code, summary, err = cli("export", "--top", "1", "--out", str(tmp_path / "x.csv"),
                             "--database-url", "postgresql://topx:s3cret-pw@127.0.0.1:1/nowhere")
    assert code == 75 and summary is None  # nothing listens: a temporary failure, worth a retry
    assert "s3cret-pw" not in err and "topx:***@127.0.0.1" in err


def test_database_url_comes_from_config_secret_or_workdir(tmp_path):
    assert database_url(load_config(env={}, overrides={"workdir": str(tmp_path)})) == \
        f"sqlite:///{tmp_path / 'topx.db'}"
    assert database_url(load_config(env={"TOPX_DATABASE_URL": "postgresql://a@h/d"})) == "postgresql://a@h/d"
    with pytest.raises(ConfigError, match="local workdir"):
        database_url(load_config(env={}, overrides={"workdir": "s3://bucket/work"}))
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        rds = client.create_secret(Name="rds", SecretString=json.dumps(
            {"engine": "postgres", "host": "db.internal", "port": 5432, "username": "topx",
             "password": "p@ss/word", "dbname": "reco"}))["ARN"]
        plain = client.create_secret(Name="url", SecretString="postgresql://u:pw@h/db")["ARN"]
        bad = client.create_secret(Name="bad", SecretString="not a url")["ARN"]
        config = load_config(env={"TOPX_DATABASE_SECRET_ARN": rds})
        assert database_url(config, secrets_client=client) == \
            "postgresql+psycopg2://topx:p%40ss%2Fword@db.internal:5432/reco"
        config = load_config(env={"TOPX_DATABASE_SECRET_ARN": plain})
        assert database_url(config, secrets_client=client) == "postgresql://u:pw@h/db"
        with pytest.raises(ConfigError, match="neither a database URL"):
            database_url(load_config(env={"TOPX_DATABASE_SECRET_ARN": bad}), secrets_client=client)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_runs_is_a_table_on_a_terminal_and_json_otherwise(db_url, monkeypatch):
    from batch.cli import main

    publish_two(db_url)
    for argv, table in ((["runs", "--database-url", db_url], True), (["runs", "--json", "--database-url", db_url],
                                                                      False)):
        out = Terminal()
        monkeypatch.setattr("sys.stdout", out)
        assert main(argv) == 0
        lines = out.getvalue().splitlines()
        summary = json.loads(lines[-1])  # the JSON summary line stays
        assert [r["id"] for r in summary["runs"]] == ["new", "old"]
        assert (lines[0].split() == ["RUN", "STATUS", "MODE", "ROWS", "NDCG@10", "(POPULARITY)", "AGE"]) is table
        if table:
            assert lines[1].split()[:2] == ["new", "current"] and lines[1].endswith("ago")


def test_runs_table_shows_mode_rows_ndcg_next_to_popularity_and_age():
    from datetime import UTC, datetime

    from batch.cli.publish import runs_table

    run = {"id": "r1", "status": "current", "n_rows": 12000, "started_at": "2026-01-01T10:00:00+00:00",
           "config": {"train": {"mode": "implicit"}},
           "metrics": {"evaluate": {"model": {"ndcg@10": 0.0731}, "popularity": {"ndcg@10": 0.0472}}}}
    text = runs_table([run], now=datetime(2026, 1, 1, 13, 30, tzinfo=UTC))
    assert text.splitlines()[1].split() == ["r1", "current", "implicit", "12,000", "0.0731", "(0.0472)", "3h", "ago"]


# --- s3:// and stdout -------------------------------------------------------------------------

@pytest.fixture
def s3(monkeypatch):
    """A moto S3 with the bucket `exports`, used by every s3:// access of topx."""
    with moto_s3(monkeypatch, "exports", secret_key="s3cret-key-value") as client:
        yield client


def objects(s3) -> tuple[list[str], list[str]]:
    """Keys of the bucket's objects and of its multipart uploads still open."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="exports").get("Contents", [])]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket="exports").get("Uploads", [])]
    return keys, uploads


@pytest.mark.parametrize("format", ["jsonl", "csv"])
def test_export_to_s3_writes_what_a_file_gets(db_url, tmp_path, s3, format):
    publish_two(db_url)
    assert export_current(db_url, tmp_path / "local", top=3, format=format) == 18
    assert export_current(db_url, "s3://exports/nightly/top.out", top=3, format=format, batch_rows=4) == 18
    body = s3.get_object(Bucket="exports", Key="nightly/top.out")["Body"].read()
    assert body == (tmp_path / "local").read_bytes()
    assert objects(s3) == (["nightly/top.out"], [])
    with pytest.raises(ConfigError, match="names no object"):
        export_current(db_url, "s3://exports/nightly/", top=3)


def line_of(n: int) -> str:
    return json.dumps({"input": {"userId": str(n)}, "output": {"recommendedItems": [str(n)] * 20}}) + "\n"


def write_lines(stream, mib: int) -> int:
    """Write lines until ``mib`` MiB are written; returns how many lines."""
    n = size = 0
    while size < mib << 20:
        line = line_of(n)
        stream.write(line)
        n, size = n + 1, size + len(line)
    return n


def test_s3_writer_streams_a_multipart_upload(s3):
    """20 MiB of lines become one object uploaded in 8 MiB parts (a multipart ETag ends "-N")."""
    from batch.s3stream import s3_text_writer

    with s3_text_writer(s3, "exports", "big.jsonl") as stream:
        lines = write_lines(stream, 20)
    head = s3.head_object(Bucket="exports", Key="big.jsonl")
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] >= 20 << 20
    body = s3.get_object(Bucket="exports", Key="big.jsonl")["Body"]
    assert sum(1 for _ in body.iter_lines()) == lines
    assert objects(s3) == (["big.jsonl"], [])


@pytest.mark.parametrize("mib", [1, 20])  # a failure before the first part, and after two parts
def test_s3_writer_failing_midway_leaves_no_object(s3, mib):
    from batch.s3stream import s3_text_writer

    s3.put_object(Bucket="exports", Key="keep.jsonl", Body=b"yesterday's\n")
    with pytest.raises(RuntimeError, match="database went away"):
        with s3_text_writer(s3, "exports", "keep.jsonl") as stream:
            write_lines(stream, mib)
            raise RuntimeError("database went away")
    # the previous object is untouched, and no multipart upload is left open (or billed)
    assert objects(s3) == (["keep.jsonl"], [])
    assert s3.get_object(Bucket="exports", Key="keep.jsonl")["Body"].read() == b"yesterday's\n"


@pytest.mark.parametrize("mib", [1, 20])
def test_s3_writer_says_when_s3_refuses_and_hides_credentials(s3, mib):
    from batch.s3stream import UploadFailedError, s3_text_writer

    with pytest.raises(UploadFailedError, match=r"s3://no-such-bucket/x.jsonl \(NoSuchBucket") as caught:
        with s3_text_writer(s3, "no-such-bucket", "x.jsonl") as stream:
            write_lines(stream, mib)  # the writer is not left blocked on a pipe nobody reads
    assert "s3cret-key-value" not in str(caught.value)


def test_cli_export_to_s3_and_stdout(db_url, tmp_path, cli, s3):
    publish_two(db_url)
    code, summary, _ = cli("export", "--top", "2", "--format", "jsonl", "--out", "s3://exports/a/b.jsonl",
                           "--database-url", db_url)
    assert code == 0 and summary["rows"] == 12 and summary["out"] == "s3://exports/a/b.jsonl"
    lines = s3.get_object(Bucket="exports", Key="a/b.jsonl")["Body"].read().decode().splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["output"]["recommendedItems"] == ["109", "112"]

    # --out -: the export alone on stdout, the summary on stderr
    code, summary, err = cli("export", "--top", "2", "--format", "jsonl", "--out", "-", "--database-url", db_url)
    assert code == 0 and summary["input"] == {"userId": "9"}  # the last line of stdout is the last user
    assert json.loads(err.strip().splitlines()[-1])["rows"] == 12

    code, summary, err = cli("export", "--top", "2", "--out", "s3://no-such-bucket/x.csv", "--database-url", db_url)
    assert code == 1 and summary is None and "could not write s3://no-such-bucket/x.csv (NoSuchBucket" in err
    assert "s3cret-key-value" not in err
