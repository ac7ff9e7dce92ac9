"""Side virtualenvs holding real third-party libraries we test our formats against.

``mxnet==1.9.1`` (which imports only with ``numpy<1.24``) and the SageMaker SDK v2 are never
runtime dependencies of topx; they live in cached virtualenvs under ``.cache/oracles`` and the
tests run small scripts there. If a side virtualenv cannot be built the test fails, it never skips.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("TOPX_ORACLE_CACHE", ROOT / ".cache" / "oracles"))

ORACLES: dict[str, list[str]] = {
    "mxnet": ["mxnet==1.9.1", "numpy==1.23.5"],
    "sagemaker": ["sagemaker==2.257.7", "scipy"],
}


def oracle_python(name: str) -> Path:
    """The python executable of the side virtualenv ``name``, built on first use."""
    reqs = ORACLES[name]
    digest = hashlib.sha256(json.dumps(reqs).encode()).hexdigest()[:10]
    home = CACHE / f"{name}-{digest}"
    python = home / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers build it once
        if not (home / ".complete").exists():
            _build(home, reqs)
    return python


def _build(home: Path, reqs: list[str]) -> None:
    venv.EnvBuilder(clear=True, with_pip=True).create(home)
    done = subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot build the oracle virtualenv {home.name} ({' '.join(reqs)}):\n{done.stderr[-3000:]}")
    (home / ".complete").write_text(" ".join(reqs))


def run_oracle(name: str, script: str, *args: str, cwd: str | os.PathLike | None = None) -> str:
    """Run ``script`` with the oracle's python; returns its stdout, fails the test on error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["SAGEMAKER_SUPPRESS_V2_WARNING"] = "1"
    done = subprocess.run([str(oracle_python(name)), "-c", script, *args], capture_output=True,
                          text=True, cwd=cwd, env=env)
    if done.returncode != 0:
        pytest.fail(f"oracle {name} script failed:\n{done.stderr[-4000:]}")
    return done.stdout


if __name__ == "__main__":  # `python tests/oracles.py` pre-builds every oracle (used by make)
    for oracle in ORACLES:
        print(oracle, oracle_python(oracle), file=sys.stderr)
