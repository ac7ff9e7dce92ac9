"""Input mistakes at the command line end in a usage or input error (exit 2) without a traceback;
a closed stdout and a SIGTERM while logging end quietly."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import batch.cli

REPO = Path(__file__).resolve().parents[1]


def test_an_unknown_log_level_option_is_a_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        batch.cli.main(["--log-level", "verbose", "runs"])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and "usage: topx" in err and "invalid choice: 'VERBOSE'" in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_an_unknown_log_level_variable_is_a_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOPX_LOG_LEVEL", "quiet")
    assert batch.cli.main(["runs"]) == 2
    err = capsys.readouterr().err
    assert "usage: topx" in err and "TOPX_LOG_LEVEL must be one of" in err and "'quiet'" in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_log_level_is_case_insensitive(capsys, tmp_path):
    assert batch.cli.main(["--log-level", "debug", "schema", "--out", str(tmp_path / "s.sql")]) == 0


@pytest.mark.parametrize("command", [["recommend"], ["score", "--user", "1", "--item", "2"], ["evaluate"],
                                     ["publish"], ["report"]])
def test_a_run_directory_that_does_not_exist_is_an_input_error(command, topx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, summary, err = topx(*command, "--run", "nope")
    assert code == 2 and summary is None and "no run directory nope" in err and "Traceback" not in err


def test_a_closed_stdout_ends_quietly(tmp_path):
    child = subprocess.Popen([sys.executable, "-m", "batch", "schema", "--out", str(tmp_path / "s.sql")],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # like `| head -n 0`: the reader is gone before topx prints its summary
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


class _TermOnWrite:
    """stderr that sends this process SIGTERM from inside the first log record's write."""

    def __init__(self, real):
        self.real, self.sent = real, False

    def write(self, text):
        if not self.sent and " INFO " in text:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return self.real.write(text)

    def flush(self):
        self.real.flush()

    def isatty(self):
        return False


def test_sigterm_while_a_record_is_written_stops_the_job_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stderr", _TermOnWrite(sys.stderr))
    code = batch.cli.main(["data", "synth", "--out", str(tmp_path / "d"), "--users", "30", "--items", "80",
                           "--interactions", "1000", "--seed", "1"])
    err = capsys.readouterr().err
    assert sys.stderr.sent
    assert code == 75 and "stopped by SIGTERM" in err
    assert "Logging error" not in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
