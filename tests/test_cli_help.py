"""The CLI explains itself: every option of `topx run` has help and shows its default, with no
internal names; choices come from the config's types; every command has a description."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from batch.cli import build_parser
from batch.cli.common import OPTIONS
from batch.config import describe


def help_of(*command: str) -> str:
    out = subprocess.run([sys.executable, "-m", "batch", *command, "--help"], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "200", "PATH": ""})
    return out.stdout


def option_entries(text: str) -> dict[str, str]:
    """Each option of a --help text and its help (what follows it up to the next option)."""
    body = text.split("options:", 1)[1]
    entries = re.split(r"\n  (?=-)", "\n" + body)
    found = {}
    for entry in entries[1:]:
        head, _, rest = entry.partition("  ")
        found[head.split()[0].rstrip(",")] = " ".join((rest or "").split())
    return found


def test_topx_run_help_shows_every_option_with_help_and_default_and_no_internal_names():
    text = help_of("run")
    assert "CFG_" not in text and "cfg_" not in text
    entries = option_entries(text)
    assert {"--num-factors", "--format", "--split", "--mode", "--workdir", "--search-backend"} <= set(entries)
    assert not [name for name, shown in entries.items() if not shown], entries
    settings = [name for name in entries if name in OPTIONS or name.startswith(("--num-", "--epochs", "--seed"))]
    assert settings and not [name for name in settings if "(default: " not in entries[name]]
    assert "(default: 64;" in entries["--num-factors"] and "(default: implicit;" in entries["--mode"]


def test_choices_come_from_the_config_types():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--split", "sideways"])
    _, default, allowed = describe("data.split")
    assert default == "auto" and "last" in allowed


@pytest.mark.parametrize("command", ["run", "train", "recommend", "score", "evaluate", "publish", "runs",
                                     "cleanup", "export", "schema", "shard", "finalize"])
def test_every_command_has_a_description(command):
    text = help_of(command)
    usage, _, rest = text.partition("\n\n")
    assert not rest.startswith("options:"), f"topx {command} --help has no description"


def test_an_unknown_option_shows_the_commands_own_usage():
    out = subprocess.run([sys.executable, "-m", "batch", "runs", "--frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("usage: topx runs ") and "topx runs: error: unrecognized arguments: --frobnicate" \
        in out.stderr
