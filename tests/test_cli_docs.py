"""Every CLI command is documented in the README with an example."""

import argparse
import re
from pathlib import Path

from batch.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def commands(parser: argparse.ArgumentParser, prefix: str = "topx"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                has_children = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                if has_children:
                    yield from commands(sub, f"{prefix} {name}")
                else:
                    yield f"{prefix} {name}"


def test_every_command_has_an_example_in_the_readme():
    found = list(commands(build_parser()))
    assert "topx run" in found and "topx data synth" in found
    missing = [c for c in found if not re.search(rf"^\s*{re.escape(c)}(\s|$)", README, re.M)]
    assert not missing, f"commands without an example line in README.md: {missing}"
