"""Read a Dockerfile and replay a target's build without Docker, for tests.

:func:`parse` turns the file into stages of instructions. :class:`Replay` walks a target's stages
the way ``docker build --target`` would, inside a scratch folder standing in for the image's
file system: container paths (``/opt/topx``, ``/src``) map below it, ``COPY`` copies from the
build context through ``.dockerignore``, ``ENV``/``ARG``/``WORKDIR`` are tracked, and each
``RUN`` that installs Python packages runs in bash. The base image's ``python`` is stood in for
by this interpreter's base Python, so the replay uses the host's Python 3.11, not the image's.
``RUN`` steps that change the host system (adding users) are not replayed: they are listed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# RUN steps replayed: the ones that build the Python environment. Any other is skipped, and listed.
REPLAYED = re.compile(r"^(python|pip)\s")
# Folders that belong to the base image (or the host): paths below them are not mapped.
SYSTEM = ("/usr/", "/bin", "/sbin", "/lib", "/etc", "/tmp", "/dev", "/proc", "/var")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARGs before the first FROM
    stages: dict[str, Stage]

    def stage(self, name: str) -> Stage:
        return self.stages[name]


def logical_lines(text: str) -> list[str]:
    """Lines with comments dropped and backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def parse(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage = None
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else f"stage{len(stages)}"
            stage = stages[name] = Stage(name, parts[0])
        elif stage is None:
            assert keyword == "ARG", f"{keyword} before FROM"
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stage.instructions.append((keyword, rest))
    return Dockerfile(args, stages)


def exec_form(text: str) -> list[str]:
    """ENTRYPOINT/CMD in JSON (exec) form; shell form is refused: it breaks signal handling."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` excludes ``path`` (relative, /-separated): the last pattern that
    matches the path or one of its parent folders decides; ``!`` patterns re-include."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if _glob(body.strip("/"), prefixes):
            verdict = not negate
    return verdict


def _glob(pattern: str, prefixes: list[str]) -> bool:
    # ** spans folders; * and ? stay within one path component, as in Go's filepath.Match.
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return any(re.fullmatch(regex, prefix) for prefix in prefixes)


def dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@dataclass
class Image:
    """What a replayed target left: its environment (container view), entrypoint, command, user,
    working directory, and the RUN steps that were not replayed."""

    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    user: str
    workdir: str
    skipped: list[str]
    root: Path

    def host(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")


class Replay:
    """Replay ``docker build --target`` of one Dockerfile below ``root``."""

    BASE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"  # python images' PATH

    def __init__(self, dockerfile: Path, context: Path, root: Path, build_args: dict[str, str] | None = None):
        self.file, self.context, self.root = parse(dockerfile), context, root
        self.build_args = build_args or {}
        self.patterns = dockerignore(context)
        self.shim = root / ".base-image-bin"  # stands in for the base image's python
        self.shim.mkdir(parents=True, exist_ok=True)
        (self.shim / "python").symlink_to(Path(sys._base_executable).resolve())
        self.done: dict[str, Image] = {}

    def build(self, target: str) -> Image:
        if target in self.done:
            return self.done[target]
        stage = self.file.stage(target)
        if stage.base in self.file.stages:
            parent = self.build(stage.base)
            image = Image(dict(parent.env), parent.entrypoint, parent.cmd, parent.user, parent.workdir,
                          list(parent.skipped), self.root)
        else:
            image = Image({"PATH": self.BASE_PATH}, [], [], "root", "/", [], self.root)
        args: dict[str, str] = {}
        for keyword, rest in stage.instructions:
            self._apply(image, args, keyword, rest)
        self.done[target] = image
        return image

    def _apply(self, image: Image, args: dict[str, str], keyword: str, rest: str) -> None:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                image.env[key] = self._expand(value, {**args, **image.env})
        elif keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = self.build_args.get(key, default)
        elif keyword == "WORKDIR":
            image.workdir = self._expand(rest, {**args, **image.env})
            image.host(image.workdir).mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            self._copy(image, shlex.split(rest))
        elif keyword == "RUN":
            self._run(image, args, rest)
        elif keyword == "USER":
            image.user = rest
        elif keyword == "ENTRYPOINT":
            image.entrypoint, image.cmd = exec_form(rest), []  # a new ENTRYPOINT resets CMD
        elif keyword == "CMD":
            image.cmd = exec_form(rest)
        else:
            raise AssertionError(f"instruction {keyword} is not replayed")

    @staticmethod
    def _expand(text: str, env: dict[str, str]) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), text)

    def _copy(self, image: Image, words: list[str]) -> None:
        source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        *sources, dest = [w for w in words if not w.startswith("--")]
        target = image.host(dest if dest.startswith("/") else f"{image.workdir}/{dest}")
        if source_stage is not None:  # all stages share one root here: the files are in place
            self.build(source_stage)
            assert all(image.host(s).exists() for s in sources), words
            assert all(image.host(s) == target for s in sources), "a cross-stage COPY that moves files"
            return
        for source in sources:
            self._copy_from_context(source, target / Path(source).name if len(sources) > 1 or dest.endswith("/")
                                    else target)

    def _copy_from_context(self, source: str, target: Path) -> None:
        origin = self.context / source
        files = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
        sent = [f for f in files if not ignored(f.relative_to(self.context).as_posix(), self.patterns)]
        assert sent, f"COPY {source}: nothing in the build context (missing or .dockerignore'd)"
        for file in sent:
            dest = target if origin.is_file() else target / file.relative_to(origin)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, dest)

    def _run(self, image: Image, args: dict[str, str], command: str) -> None:
        if not REPLAYED.match(command):
            image.skipped.append(command)
            return
        subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=image.host(image.workdir),
                       env=self.host_env(image, args), check=True)

    def host_env(self, image: Image, args: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a RUN or the entrypoint sees: the image's, container paths mapped
        below the root, the base image's bin folders in front of the host's PATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TOPX_"))}
        for key, value in {**(args or {}), **image.env}.items():
            env[key] = ":".join(map(self._map_path, value.split(":"))) if key == "PATH" else self._map_path(value)
        env["PATH"] = env["PATH"].replace(self.BASE_PATH, f"{self.shim}:{os.environ['PATH']}")
        env["PYTHONNOUSERSITE"] = "1"
        return env

    def _map_path(self, value: str) -> str:
        inside = value.startswith("/") and not value.startswith(SYSTEM)
        return str(self.root / value.lstrip("/")) if inside else value

    def start(self, image: Image, *argv: str, entrypoint: list[str] | None = None) -> subprocess.CompletedProcess:
        """Run the image's entrypoint (or another command) with ``argv`` in its working directory."""
        command = (entrypoint if entrypoint is not None else image.entrypoint) + list(argv)
        return subprocess.run(command, cwd=image.host(image.workdir), env=self.host_env(image),
                              capture_output=True, text=True, timeout=300)

