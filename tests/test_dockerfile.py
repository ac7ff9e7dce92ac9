"""The Dockerfile, proven without a Docker engine.

Fast tests read the file: pinned base image, two targets, non-root user, exec-form entrypoint,
constraints on every install, a build context that sends what the image needs and nothing else.
The slow tests replay each target's install steps in a fresh virtualenv (tests/dockerbuild.py),
start the entrypoint, and check what got installed against constraints.txt.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from dockerbuild import SYSTEM, Replay, dockerignore, ignored, parse

from batch.cli import build_parser
from batch.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
TARGETS = ("sagemaker", "local")
# Where the replay gets CPU PyTorch: PyTorch's CPU index cannot be reached from here, but this
# machine's pip finds the same 2.13.0+cpu wheel locally. Set to test against another index.
TORCH_INDEX_URL = os.environ.get("TOPX_TEST_TORCH_INDEX_URL", "https://pypi.org/simple")


def installs(target: str) -> list[str]:
    """The pip install commands a target's image is built with, in order."""
    file, seen, stages = parse(DOCKERFILE), [], [target]
    while stages:
        stage = file.stage(stages.pop())
        seen += [rest for keyword, rest in stage.instructions if keyword == "RUN" and "pip install" in rest]
        stages += [stage.base] if stage.base in file.stages else []
        stages += [r.split("--from=")[1].split()[0] for k, r in stage.instructions if k == "COPY" and "--from=" in r]
    return seen


def test_base_image_is_a_pinned_slim_python_3_11():
    file = parse(DOCKERFILE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", file.args["PYTHON_IMAGE"])
    assert all(s.base in file.stages or s.base == "${PYTHON_IMAGE}" for s in file.stages.values())


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_topx_as_a_non_root_user(target):
    file = parse(DOCKERFILE)
    instructions = dict(file.stage(target).instructions)
    assert instructions["USER"].split(":")[0] not in ("root", "0")
    runtime = dict(file.stage(file.stage(target).base).instructions)
    assert json.loads(runtime["ENTRYPOINT"]) == ["python", "-m", "batch"]
    assert json.loads(runtime["CMD"]) == ["run"]
    assert "useradd" in runtime["RUN"] and "10001" in runtime["RUN"]


def test_default_command_is_a_topx_command():
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert "run" in commands


@pytest.mark.parametrize("target", TARGETS)
def test_every_install_is_constrained(target):
    steps = installs(target)
    assert steps and all("-c constraints.txt" in step for step in steps)


def test_light_image_installs_no_engine_and_defaults_to_sagemaker():
    assert not any("local" in step or "torch" in step for step in installs("sagemaker"))
    env = dict(parse(DOCKERFILE).stage("sagemaker").instructions)["ENV"]
    settings = dict(pair.split("=", 1) for pair in env.split())
    config = load_config(env=settings)
    assert config.train.backend == config.search.backend == "sagemaker"
    assert any("[local" in step and "TORCH_INDEX_URL" in step for step in installs("local"))


@pytest.mark.parametrize("path, sent", [
    ("pyproject.toml", True), ("constraints.txt", True), ("README.md", True), ("batch/cli/__init__.py", True),
    ("batch/py.typed", True), ("batch/cli/__pycache__/x.cpython-311.pyc", False), (".git/config", False),
    (".venv/bin/python", False), (".env", False), ("topx-work/topx.db", False), ("tests/test_x.py", False),
    ("deploy/batch-job-definition.json", False),
])
def test_build_context_sends_only_what_the_image_needs(path, sent):
    assert ignored(path, dockerignore(ROOT)) is not sent


@pytest.fixture(scope="module", params=TARGETS)
def image(request, tmp_path_factory):
    """The target replayed into a scratch root; returns (replay, image)."""
    replay = Replay(DOCKERFILE, ROOT, tmp_path_factory.mktemp(request.param),
                    build_args={"TORCH_INDEX_URL": TORCH_INDEX_URL})
    return request.param, replay, replay.build(request.param)


def python(replay, image, code: str):
    return replay.start(image, "-c", code, entrypoint=["python"])


@pytest.mark.slow
def test_replay_skips_only_the_user_creation(image):
    _, _, built = image
    assert len(built.skipped) == 1 and built.skipped[0].startswith("groupadd")
    assert built.user == "10001:10001" and not built.workdir.startswith(SYSTEM)


@pytest.mark.slow
def test_entrypoint_and_default_command_start(image):
    _, replay, built = image
    shown = replay.start(built, "--help")
    assert shown.returncode == 0, shown.stderr
    assert "run" in shown.stdout
    assert replay.start(built, *built.cmd, "--help").returncode == 0
    # The installed package answers, not the sources next to the tests.
    where = python(replay, built, "import batch; print(batch.__file__)")
    assert where.stdout.startswith(str(built.host("/opt/topx"))), where.stdout + where.stderr


@pytest.mark.slow
def test_every_command_starts_in_the_image(image):
    _, replay, built = image
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in commands:
        shown = replay.start(built, command, "--help")
        assert shown.returncode == 0, (command, shown.stderr)


@pytest.mark.slow
def test_engines_are_in_the_local_image_only(image):
    target, replay, built = image
    probe = python(replay, built, "import torch, faiss; print(torch.__version__, torch.version.cuda)")
    if target == "sagemaker":
        assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
        assert python(replay, built, "import faiss").returncode != 0
    else:
        assert probe.returncode == 0, probe.stderr
        version, cuda = probe.stdout.split()
        assert version == "2.13.0+cpu" and cuda == "None"  # the CPU build, not PyPI's CUDA one


@pytest.mark.slow
def test_every_installed_package_is_pinned(image):
    _, replay, built = image
    listed = python(replay, built, "import importlib.metadata as m, json; "
                                   "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    installed = {canonical(name): version.split("+")[0] for name, version in json.loads(listed.stdout).items()}
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    pins = {canonical(name): version for name, version in pins.items()}
    installed.pop("topx")
    for bundled in ("pip", "setuptools"):  # come with the virtualenv, not from constraints
        installed.pop(bundled, None)
    assert {name: v for name, v in installed.items() if pins.get(name) != v} == {}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
