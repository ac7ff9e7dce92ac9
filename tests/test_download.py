"""`topx data download`: against a local HTTP server serving zips built here.

The real GroupLens digests cannot match these zips, so each test hands in an :class:`Archive`
pinned to the zip it serves (or, for the CLI, replaces the registry entry).
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from batch import cli
from batch.data import download as dl
from batch.data.download import Archive, download
from batch.errors import DownloadError

FILES = {"ml-100k/u.data": b"1\t2\t5\t881250949\n",
         "ml-100k/u.item": "1|Café (1995)|\n".encode("latin-1"),
         "ml-100k/README": b"readme\n"}


def make_zip(members: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/", b"")
        for name, data in members.items():
            zf.writestr(name, data)
        for name in links:  # a symlink member: mode bits S_IFLNK in the high word
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def pinned(data: bytes, name: str = "ml-100k") -> Archive:
    return Archive(name, hashlib.sha256(data).hexdigest(), len(data))


class Server:
    """Serves ``routes`` (path → bytes) over HTTP on 127.0.0.1; 404 for anything else."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.cut: int | None = None  # send only this many bytes of a body, then close
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:server.cut])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/movielens"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def serve(self, data: bytes, name: str = "ml-100k") -> None:
        self.routes[f"/movielens/{name}.zip"] = data


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_downloads_verifies_and_unpacks(server, tmp_path):
    data = make_zip(FILES)
    server.serve(data)
    result = download("ml-100k", tmp_path / "out", base_url=server.url, archive=pinned(data))
    target = tmp_path / "out" / "ml-100k"
    assert result == {"dataset": "ml-100k", "path": str(target), "sha256": pinned(data).sha256,
                      "bytes": len(data), "files": 3, "skipped": False}
    for name, content in FILES.items():
        assert (tmp_path / "out" / name).read_bytes() == content
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ml-100k"]  # no temp folders
    manifest = json.loads((target / dl.MANIFEST).read_text())
    assert manifest["sha256"] == pinned(data).sha256 and set(manifest["files"]) == {
        "u.data", "u.item", "README"}


def test_already_present_and_intact_is_skipped(server, tmp_path):
    data = make_zip(FILES)
    server.serve(data)
    download("ml-100k", tmp_path, base_url=server.url, archive=pinned(data))
    again = download("ml-100k", tmp_path, base_url=server.url, archive=pinned(data))
    assert again["skipped"] is True and again["files"] == 3
    assert len(server.hits) == 1


def test_a_modified_copy_is_downloaded_again(server, tmp_path):
    data = make_zip(FILES)
    server.serve(data)
    download("ml-100k", tmp_path, base_url=server.url, archive=pinned(data))
    (tmp_path / "ml-100k" / "u.data").write_bytes(b"tampered\n")
    result = download("ml-100k", tmp_path, base_url=server.url, archive=pinned(data))
    assert result["skipped"] is False and len(server.hits) == 2
    assert (tmp_path / "ml-100k" / "u.data").read_bytes() == FILES["ml-100k/u.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k"]


def test_checksum_mismatch_names_both_digests_and_leaves_nothing(server, tmp_path):
    data = make_zip(FILES)
    server.serve(data)
    wrong = Archive("ml-100k", "0" * 64, None)
    with pytest.raises(DownloadError) as err:
        download("ml-100k", tmp_path / "out", base_url=server.url, archive=wrong)
    assert "0" * 64 in str(err.value) and pinned(data).sha256 in str(err.value)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("members, links", [
    ({"ml-100k/../evil.txt": b"x"}, ()),
    ({"/tmp/evil.txt": b"x"}, ()),
    ({"ml-100k/a/../../evil.txt": b"x"}, ()),
    ({"ml-100k\\..\\evil.txt": b"x"}, ()),
    ({"other/u.data": b"x"}, ()),
    ({"evil.txt": b"x"}, ()),
    ({}, ("ml-100k/u.link",)),
], ids=["dotdot", "absolute", "nested-dotdot", "backslash", "other-folder", "top-level", "symlink"])
def test_unsafe_members_are_refused_and_nothing_is_written(server, tmp_path, members, links):
    data = make_zip({**FILES, **members}, links=links)
    server.serve(data)
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="unsafe|outside|link"):
        download("ml-100k", out, base_url=server.url, archive=pinned(data))
    assert leftovers(tmp_path) == []


def test_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("ml-100k", tmp_path / "out", base_url=server.url,
                 archive=Archive("ml-100k", "0" * 64))
    assert leftovers(tmp_path) == []


def test_not_a_zip(server, tmp_path):
    page = b"<html>moved</html>"
    server.serve(page)
    with pytest.raises(DownloadError, match="not a valid zip"):
        download("ml-100k", tmp_path, base_url=server.url, archive=pinned(page))
    assert leftovers(tmp_path) == []


def test_more_bytes_than_pinned_are_refused(server, tmp_path):
    data = make_zip(FILES)
    server.serve(data)
    short = Archive("ml-100k", hashlib.sha256(data).hexdigest(), len(data) - 1)
    with pytest.raises(DownloadError, match="more than"):
        download("ml-100k", tmp_path, base_url=server.url, archive=short)
    assert leftovers(tmp_path) == []


def test_a_folder_topx_did_not_download_is_left_alone(server, tmp_path):
    data = make_zip(FILES)
    server.serve(data)
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "mine.txt").write_text("keep")
    with pytest.raises(DownloadError, match="not downloaded by topx"):
        download("ml-100k", tmp_path, base_url=server.url, archive=pinned(data))
    assert leftovers(tmp_path) == ["ml-100k", "ml-100k/mine.txt"] and server.hits == []


def test_unknown_data_set_and_non_http_urls(tmp_path):
    with pytest.raises(DownloadError, match="unknown data set"):
        download("ml-7", tmp_path)
    with pytest.raises(DownloadError, match="http"):
        download("ml-100k", tmp_path, base_url=f"file://{tmp_path}")


def test_cli_download(server, tmp_path, capsys, monkeypatch):
    data = make_zip(FILES)
    server.serve(data)
    monkeypatch.setitem(dl.ARCHIVES, "ml-100k", pinned(data))
    args = ["data", "download", "ml-100k", "--url", server.url, "--out"]
    assert cli.main([*args, str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["command"] == "data download" and summary["path"] == str(tmp_path / "ml-100k")
    monkeypatch.setitem(dl.ARCHIVES, "ml-100k", Archive("ml-100k", "f" * 64))
    assert cli.main([*args, str(tmp_path / "x")]) == 1
    assert "checksum mismatch" in capsys.readouterr().err


def test_a_truncated_body_is_a_temporary_failure_saying_so(server, tmp_path, capsys, monkeypatch):
    data = make_zip(FILES)
    server.serve(data)
    server.cut = len(data) // 2
    monkeypatch.setitem(dl.ARCHIVES, "ml-100k", pinned(data))
    code = cli.main(["data", "download", "ml-100k", "--url", server.url, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 75 and "ended early" in err and f"{len(data) // 2} of {len(data)} bytes" in err
    assert "checksum" not in err and leftovers(tmp_path) == []


def test_a_dns_failure_is_a_temporary_failure_saying_so(tmp_path, capsys):
    code = cli.main(["data", "download", "ml-100k", "--url", "http://topx-no-such-host.invalid/movielens",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 75 and "cannot reach http://topx-no-such-host.invalid/movielens/ml-100k.zip" in err
    assert "Traceback" not in err
