"""The package structure: no import cycle between the stage packages, heavy engines imported lazily,
the emulator a tool of its own that says which extra it needs."""

from __future__ import annotations

import argparse
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import batch
from batch.cli import aws as aws_cli
from batch.errors import MissingDependencyError

ROOT = Path(batch.__file__).parent
PACKAGES = ("aws", "train", "serve", "emulator", "publish", "data", "features", "artifact")


def imported_packages(package: str) -> set[str]:
    """The ``batch`` sub-packages any module of ``package`` imports, at the top or inside a function."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found |= {n.split(".")[1] for n in names if n.startswith("batch.") and n.count(".") >= 1}
    return found - {package}


def test_no_import_cycle_between_the_stage_packages():
    graph = {p: imported_packages(p) & set(PACKAGES) for p in PACKAGES}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert not [p for p in PACKAGES if reaches(p, p, set())], graph
    assert not graph["aws"] & {"train", "serve", "emulator"}
    assert "serve" not in graph["publish"]  # the lists they hand over live in batch.lists


def test_importing_the_aws_formats_loads_neither_torch_nor_moto():
    modules = [f"batch.aws.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "aws")])]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(n for n in ('torch', 'moto', 'faiss') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_emulator_command_names_its_extra_when_moto_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "moto.server", None)  # import moto.server now raises ImportError
    parser = argparse.ArgumentParser()
    aws_cli.register(parser.add_subparsers())
    args = parser.parse_args(["sagemaker-emulator", "--port", "0"])
    with pytest.raises(MissingDependencyError, match=r"pip install 'topx\[emulator\]'"):
        args.handler(args)


def test_every_test_that_needs_postgresql_is_marked_postgres():
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "postgres",
                          "tests/test_publish_migrations.py", "tests/test_publish_schema.py"],
                         capture_output=True, text=True, cwd=ROOT.parent)
    selected = [line for line in out.stdout.splitlines() if "::" in line]
    assert selected and all("[postgres]" in line or "pg_url" in line or "test_publish_schema.py" in line
                            for line in selected), out.stdout
    assert not [line for line in selected if "[sqlite]" in line]
    assert any("test_schema_sql_builds_the_database_the_models_build" in line for line in selected)  # pg_url
