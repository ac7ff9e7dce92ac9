"""bench/scale.py's measuring: per-stage peak RSS cut at the "stage … finished" log lines, and
the scaled sizes (not timing)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scale  # noqa: E402

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    print("INFO topx.run: stage ingest finished in 0.1 s", file=sys.stderr, flush=True)
    time.sleep(0.4)
    big = np.ones(96 << 17)  # 96 MiB, held while "train" runs
    time.sleep(0.6)
    print("INFO topx.run: stage train finished in 1.0 s", file=sys.stderr, flush=True)
    del big
    time.sleep(0.4)
    print("INFO topx.run: stage search finished in 0.4 s", file=sys.stderr, flush=True)
    print(json.dumps({"seconds": {"ingest": 0.1, "train": 1.0, "search": 0.4, "total": 1.5}}))
""")


def test_peak_rss_is_cut_per_stage():
    summary, peaks = scale.run_measured([sys.executable, "-c", CHILD], "start", dict(os.environ))
    assert summary["seconds"]["train"] == 1.0
    assert set(peaks) >= {"ingest", "train", "search"}
    assert peaks["train"] >= peaks["ingest"] + 80
    assert peaks["search"] < peaks["train"] - 50


def test_a_failing_command_stops_the_benchmark():
    with pytest.raises(SystemExit, match="exit status 3"):
        scale.run_measured([sys.executable, "-c", "import sys; sys.exit(3)"], "start", dict(os.environ))


def test_scaled_sizes_keep_the_catalogue():
    assert scale.size_for(1.0) == {"users": 162_000, "items": 59_000, "interactions": 25_000_000}
    assert scale.size_for(0.04) == {"users": 6480, "items": 59_000, "interactions": 1_000_000}
