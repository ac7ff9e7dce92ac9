"""Fetching public MovieLens data sets: streamed, checked against a pinned SHA-256, unpacked safely.

``download("ml-100k", "data")`` leaves ``data/ml-100k/`` (u.data, ua.base, u.item, ...) exactly
as the GroupLens zip holds it, plus a ``.topx-download.json`` manifest used to skip the work
next time. Every failure raises :class:`DownloadError` and leaves nothing behind: the archive
is fetched and unpacked inside a temporary folder next to the destination, and only a fully
verified folder is renamed into place.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from batch import __version__
from batch.errors import DownloadError, DownloadUnavailableError
from batch.log import log, progress

BASE_URL = "https://files.grouplens.org/datasets/movielens"
CHUNK = 1 << 20
MAX_ARCHIVE_BYTES = 64 << 20  # when no size is pinned
MAX_UNPACKED_BYTES = 512 << 20  # ml-1m unpacks to about 24 MB
MAX_MEMBERS = 1000
MANIFEST = ".topx-download.json"


@dataclass(frozen=True)
class Archive:
    """A pinned zip archive ``<name>.zip`` whose members all lie under the folder ``<name>/``.

    ``sha256``: lowercase hex digest of the zip; ``size``: its length in bytes, or None when
    not pinned (then at most ``MAX_ARCHIVE_BYTES`` are accepted).
    """

    name: str
    sha256: str
    size: int | None = None


# Digests and sizes as pinned by tensorflow/datasets, tensorflow_datasets/url_checksums/
# movielens.txt (commit 1c076ac3c19c8ea83e1d1a75e0623c9a699e0d7c). Cross-checked: ankane/disco-cli
# src/download.rs pins both digests; tensorflow/examples lite/examples/recommendation/ml/data/
# example_generation_movielens.py pins the ml-1m one (MOVIELENS_ZIP_HASH).
ARCHIVES: dict[str, Archive] = {
    "ml-100k": Archive(
        "ml-100k", "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229", 4_924_029),
    "ml-1m": Archive(
        "ml-1m", "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", 5_917_549),
}


def download(name: str, out_dir: str | os.PathLike = ".", *, base_url: str = BASE_URL,
             archive: Archive | None = None, timeout: float = 60.0) -> dict:
    """Fetch ``<base_url>/<name>.zip``, verify it and unpack it to ``out_dir/<name>/``.

    ``archive`` overrides the pinned :data:`ARCHIVES` entry (tests serve their own zip).
    Skips the download when ``out_dir/<name>`` was already downloaded and still matches its
    manifest; refuses to replace a folder of that name that topx did not download. Returns a
    summary dict: dataset, path, sha256, bytes (None when skipped), files, skipped.
    """
    spec = archive or ARCHIVES.get(name)
    if spec is None:
        raise DownloadError(f"unknown data set {name!r}; choose one of {', '.join(ARCHIVES)}")
    out, url = Path(out_dir), f"{base_url.rstrip('/')}/{spec.name}.zip"
    target = out / spec.name
    manifest = _read_manifest(target)
    if manifest is not None and _intact(target, spec, manifest):
        log.info("%s already present and verified in %s", spec.name, target)
        return _summary(spec, target, None, len(manifest["files"]), skipped=True)
    if target.exists() and manifest is None:
        raise DownloadError(f"{target} exists and was not downloaded by topx; remove it or choose "
                            "another --out")
    created = not out.exists()
    try:
        size, files = _fetch_and_unpack(url, spec, out, timeout)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    log.info("downloaded %s (%d bytes, %d files) to %s", url, size, len(files), target)
    return _summary(spec, target, size, len(files), skipped=False)


def _summary(spec: Archive, target: Path, size: int | None, files: int, *, skipped: bool) -> dict:
    return {"dataset": spec.name, "path": str(target), "sha256": spec.sha256, "bytes": size,
            "files": files, "skipped": skipped}


def _fetch_and_unpack(url: str, spec: Archive, out: Path, timeout: float) -> tuple[int, dict]:
    """Download, verify and unpack inside a temporary folder in ``out``, then rename the
    result to ``out/<name>``. Returns (archive bytes, {member path: sha256})."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{spec.name}-") as tmp:
        zip_path = Path(tmp, f"{spec.name}.zip")
        digest, size = _fetch(url, zip_path, spec, timeout)
        if digest != spec.sha256:
            raise DownloadError(f"checksum mismatch for {url}: expected SHA-256 {spec.sha256}, "
                                f"got {digest}")
        staged = Path(tmp, "unpacked")
        files = _unpack(zip_path, staged, spec.name)
        _write_manifest(staged / spec.name, spec, url, files)
        _swap_in(staged / spec.name, out / spec.name, Path(tmp))
    return size, files


def _fetch(url: str, dest: Path, spec: Archive, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into ``dest``; returns (sha256 hex, bytes). Aborts past the size cap."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"only http(s) URLs can be downloaded; got {url}")
    cap = spec.size if spec.size is not None else MAX_ARCHIVE_BYTES
    request = urllib.request.Request(url, headers={"User-Agent": f"topx/{__version__}"})
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as sink:
            length = int(response.headers.get("Content-Length") or 0)
            if length > cap:
                raise DownloadError(f"{url} is {length} bytes, more than the {cap} expected")
            blocks = iter(lambda: response.read(CHUNK), b"")
            total = math.ceil(length / CHUNK) if length else None
            for block in progress(blocks, total=total, desc=f"download {spec.name}", unit="MiB"):
                size += len(block)
                if size > cap:
                    raise DownloadError(f"{url} sent more than the {cap} bytes expected")
                digest.update(block)
                sink.write(block)
    except urllib.error.HTTPError as exc:
        kind = DownloadUnavailableError if exc.code >= 500 or exc.code == 429 else DownloadError
        raise kind(f"HTTP {exc.code} {exc.reason} fetching {url}") from None
    except urllib.error.URLError as exc:  # DNS failure, refused, unreachable
        raise DownloadUnavailableError(f"cannot reach {url}: {exc.reason}") from None
    except http.client.IncompleteRead as exc:
        raise DownloadUnavailableError(f"the connection ended early: {url} sent {size + len(exc.partial)} of "
                                       f"{size + len(exc.partial) + (exc.expected or 0)} bytes") from None
    except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:  # resets, timeouts
        raise DownloadUnavailableError(f"download of {url} was interrupted after {size} bytes: {exc!r}") from None
    except OSError as exc:  # the local disk
        raise DownloadError(f"download of {url} failed: {exc!r}") from None
    expected = length or spec.size
    if expected and size < expected:
        raise DownloadUnavailableError(f"the connection ended early: {url} sent {size} of {expected} bytes")
    return digest.hexdigest(), size


def _unpack(zip_path: Path, dest: Path, top: str) -> dict[str, str]:
    """Extract every member of the zip under ``dest`` after checking all of them; returns
    {path relative to ``dest/top``: sha256} of the files written."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            _check_members(members, top)
            files = dict(_extract(zf, m, dest, top) for m in members if not m.is_dir())
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        raise DownloadError(f"{zip_path.name} is not a valid zip archive: {exc}") from None
    if not files:
        raise DownloadError(f"{zip_path.name} holds no files")
    return files


def _check_members(members: list[zipfile.ZipInfo], top: str) -> None:
    """Reject absolute or parent-relative names, links and special files, members outside
    ``top/``, duplicates, too many members and a too large total size."""
    if len(members) > MAX_MEMBERS:
        raise DownloadError(f"archive has {len(members)} members, more than {MAX_MEMBERS}")
    if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
        raise DownloadError(f"archive unpacks to more than {MAX_UNPACKED_BYTES} bytes")
    seen: set[str] = set()
    for m in members:
        name, kind = m.filename, stat.S_IFMT(m.external_attr >> 16)
        parts = name.rstrip("/").split("/")
        if (name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0]
                or any(p in ("", ".", "..") for p in parts)):
            raise DownloadError(f"unsafe member name in archive: {name!r}")
        if kind == stat.S_IFLNK or kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise DownloadError(f"archive member {name!r} is a link or special file")
        if parts[0] != top or (len(parts) == 1 and not m.is_dir()):
            raise DownloadError(f"archive member {name!r} lies outside the folder {top}/")
        if name in seen:
            raise DownloadError(f"archive member {name!r} appears twice")
        seen.add(name)


def _extract(zf: zipfile.ZipFile, member: zipfile.ZipInfo, dest: Path, top: str) -> tuple[str, str]:
    """Copy one checked file member below ``dest``, refusing more bytes than it declares."""
    path = dest.joinpath(*member.filename.split("/"))
    if not path.resolve().is_relative_to(dest.resolve()):  # defence in depth after the checks
        raise DownloadError(f"unsafe member name in archive: {member.filename!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    digest, written = hashlib.sha256(), 0
    with zf.open(member) as src, open(path, "xb") as sink:
        for block in iter(lambda: src.read(CHUNK), b""):
            written += len(block)
            if written > member.file_size:
                raise DownloadError(f"archive member {member.filename!r} is larger than declared")
            digest.update(block)
            sink.write(block)
    return path.relative_to(dest / top).as_posix(), digest.hexdigest()


def _write_manifest(folder: Path, spec: Archive, url: str, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"dataset": spec.name, "url": url, "sha256": spec.sha256, "files": files}
    (folder / MANIFEST).write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")


def _read_manifest(target: Path) -> dict | None:
    try:
        record = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None


def _intact(target: Path, spec: Archive, manifest: dict) -> bool:
    """Was ``target`` unpacked from this very archive, and is every file still unchanged?"""
    if manifest.get("sha256") != spec.sha256:
        return False
    for rel, expected in manifest["files"].items():
        path = target / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            return False
    return True


def _swap_in(staged: Path, target: Path, tmp: Path) -> None:
    """Rename ``staged`` to ``target``; a stale earlier download is first moved into ``tmp``,
    which is deleted afterwards. Both renames stay on one file system, so each is atomic."""
    if target.exists():
        os.replace(target, tmp / "stale")
    os.replace(staged, target)
