"""The embedded default data set: a synthetic MovieLens-100k-sized data set, generated once into
the work directory and reused by later runs with the same settings."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from batch.config import DataConfig, SynthConfig

log = logging.getLogger("topx.data")


def synthetic_dir(workdir: str | Path, synth: SynthConfig) -> Path:
    name = f"synthetic-{synth.users}u-{synth.items}i-{synth.interactions}r-seed{synth.seed}"
    return Path(workdir) / "data" / name


def resolve_data(data: DataConfig, workdir: str | Path) -> DataConfig:
    """``data`` itself when it names a path; otherwise the same settings pointing at the
    synthetic data set, generated first if this work directory does not have it yet."""
    if data.path is not None:
        return data
    from batch.data.synth import generate

    target = synthetic_dir(workdir, data.synth)
    if not (target / ".complete").exists():
        log.info("generating the embedded synthetic data set in %s", target)
        shutil.rmtree(target, ignore_errors=True)
        s = data.synth
        generate(target, users=s.users, items=s.items, interactions=s.interactions, seed=s.seed)
        (target / ".complete").write_text("ok\n")
    return dataclasses.replace(data, path=str(target))
