"""The topx log handler follows sys.stderr instead of holding on to the stream of its set-up."""

import io
import sys

import pytest

from batch.log import log, setup_logging


def test_logs_go_to_the_current_stderr_even_after_the_old_one_closed(monkeypatch, capsys):
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    setup_logging("INFO")  # while stderr is the swapped stream, as inside a test's capture
    log.info("first line")
    assert "first line" in swapped.getvalue()
    swapped.close()  # what a finished capture does
    monkeypatch.undo()
    log.info("second line")  # no "--- Logging error ---": the handler writes to today's stderr
    err = capsys.readouterr().err
    assert "second line" in err and "Logging error" not in err


def test_sigterm_while_a_line_is_written_stops_the_work(monkeypatch):
    """SIGTERM's handler raises TerminatedError wherever the main thread is; inside a log write,
    logging used to print it as a "Logging error" and the job went on to exit 0."""
    import pytest

    from batch.errors import TerminatedError

    class Interrupted(io.StringIO):
        signalled = False

        def write(self, text):
            if not self.signalled:  # the signal arrives once, during the first write
                self.signalled = True
                raise TerminatedError("stopped by SIGTERM")
            return super().write(text)

    stream = Interrupted()
    monkeypatch.setattr(sys, "stderr", stream)
    setup_logging("INFO")
    with pytest.raises(TerminatedError):
        log.info("a line")
    assert "Logging error" not in stream.getvalue()


def test_progress_without_a_terminal_logs_rate_and_time_left_every_ten_seconds(monkeypatch, caplog):
    from batch import log as log_module

    clock = iter(float(t) for t in range(0, 1000, 4))  # each item takes 4 s
    monkeypatch.setattr(log_module.time, "monotonic", lambda: next(clock))
    monkeypatch.setenv("TOPX_PROGRESS", "log")
    with caplog.at_level("INFO", logger="topx"):
        assert list(log_module.progress(range(10), total=10, desc="epoch 1", unit="batch")) == list(range(10))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1")]
    assert lines[0] == "epoch 1: 3/10 batch, 0.25 batch/s, about 28s left"
    assert len(lines) == 3  # at 12 s, 24 s and 36 s of 40


def test_progress_mode_follows_topx_progress_and_refuses_others(monkeypatch):
    from batch.errors import ConfigError
    from batch.log import progress_mode

    for given, mode in (("1", "bar"), ("bar", "bar"), ("0", "off"), ("LOG", "log")):
        monkeypatch.setenv("TOPX_PROGRESS", given)
        assert progress_mode() == mode
    monkeypatch.delenv("TOPX_PROGRESS")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert progress_mode() == "log"
    monkeypatch.setenv("TOPX_PROGRESS", "sometimes")
    with pytest.raises(ConfigError, match="TOPX_PROGRESS"):
        progress_mode()
