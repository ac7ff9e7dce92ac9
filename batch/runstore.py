"""Where run directories live: the local work directory, or an ``s3://`` prefix.

With an S3 work directory (what AWS Batch jobs use) each run directory is mirrored: stages work
in a local scratch copy, and after every finished stage the changed files are uploaded. A retried
Batch job, or a shard job on another machine, pulls the run directory before it starts, so a
run can resume anywhere and shards share the model and data of the run they belong to.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from batch import storage
from batch.rundir import RunDir

log = logging.getLogger("topx.run")


class RunStore:
    """Run directories under ``<workdir>/runs/<run_id>/``.

    ``workdir``: a local directory or an ``s3://`` prefix. ``scratch``: the local directory S3
    runs are mirrored into (default: a folder in the system temp directory).
    """

    def __init__(self, workdir: str, scratch: str | None = None):
        self.workdir = str(workdir)
        self.remote = storage.is_s3(self.workdir)
        base = Path(scratch or Path(tempfile.gettempdir()) / "topx-scratch") if self.remote else Path(self.workdir)
        self.local_root = base

    @property
    def data_dir(self) -> Path:
        """A local directory for downloaded and generated data sets."""
        return self.local_root / "data"

    def run_ids(self) -> list[str]:
        """Every run id in the store, oldest first (run ids sort by time)."""
        if not self.remote:
            return sorted(p.parent.name for p in (self.local_root / "runs").glob("*/run.json"))
        prefix = storage.join(self.workdir, "runs")
        bucket, key = storage.split_s3(prefix)
        pages = storage.s3_client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=key.rstrip("/") + "/", Delimiter="/")
        ids = [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for page in pages for p in page.get("CommonPrefixes", [])]
        return sorted(ids)

    def location(self, run_id: str, name: str) -> str:
        """Where file ``name`` of run ``run_id`` lives in the store (a path, or an s3:// URI)."""
        if self.remote:
            return storage.join(self.workdir, "runs", run_id, name)
        return str((self.local_root / "runs" / run_id / name).resolve())

    def run_dir(self, run_id: str) -> RunDir:
        """The local run directory (created empty if new)."""
        path = self.local_root / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return RunDir(path)

    def state(self, run_id: str) -> dict:
        """The run's ``run.json`` straight from the store (no full pull)."""
        location = storage.join(self.workdir, "runs", run_id, "run.json")
        if not storage.exists(location):
            return {}
        return json.loads(storage.read_bytes(location).decode("utf-8"))

    def pull(self, run_id: str) -> RunDir:
        """The run directory with every file the store has for it."""
        run = self.run_dir(run_id)
        if self.remote:
            remote = storage.join(self.workdir, "runs", run_id)
            for name in storage.list_names(remote):
                storage.download_file(storage.join(remote, name), run.path / name)
            self._remember(run)
        return run

    def push(self, run: RunDir) -> None:
        """Upload the files that changed since the last pull or push (S3 work directories only)."""
        if not self.remote:
            return
        known = self._manifest(run)
        remote = storage.join(self.workdir, "runs", run.path.name)
        for path in sorted(run.path.iterdir()):
            if path.is_file() and not path.name.startswith(".") and known.get(path.name) != _stamp(path):
                storage.upload_file(path, storage.join(remote, path.name))
        self._remember(run)

    def _manifest(self, run: RunDir) -> dict[str, list]:
        path = run.path / ".pushed.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _remember(self, run: RunDir) -> None:
        stamps = {p.name: _stamp(p) for p in run.path.iterdir() if p.is_file() and not p.name.startswith(".")}
        (run.path / ".pushed.json").write_text(json.dumps(stamps))


def _stamp(path: Path) -> list:
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]
