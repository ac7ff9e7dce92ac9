"""The topx log handler follows sys.stderr instead of holding on to the stream of its set-up."""

import io
import sys

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
