"""``topx run`` end to end at MovieLens-25M scale: seconds and peak resident memory per stage.

    python bench/scale.py                  # 162,000 users × 59,000 items × 25M interactions
    python bench/scale.py --scale 0.04     # users and interactions × 0.04 (1M), the same catalogue
    python bench/scale.py --dir /tmp/scale # keep the data there (reused by the next run)

Generates the synthetic set with ``topx data synth`` (reused when DIR already holds it), then runs
``topx run --data … --fresh --allow-regression`` with the default settings in a fresh process (the
publish gate must not stop a measurement), sampling its resident
set size (RSS, /proc) every 0.1 s and cutting the samples at each stage's "stage … finished"
log line. Prints one JSON line: per stage seconds (as ``topx run`` reports them) and peak RSS
in MiB, the totals, and whether the targets (≤ 600 s, ≤ 8 GiB for the full set) were met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FULL = {"users": 162_000, "items": 59_000, "interactions": 25_000_000}
TARGETS = {"seconds": 600, "peak_rss_mib": 8 * 1024}
STAGE_DONE = re.compile(r"stage (\w+) finished in")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def size_for(scale: float) -> dict[str, int]:
    """Users and interactions scaled, the catalogue kept (search cost grows with it)."""
    return {"users": max(1, round(FULL["users"] * scale)), "items": FULL["items"],
            "interactions": max(1, round(FULL["interactions"] * scale))}


def topx_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "batch", *args]


class RssSampler:
    """Peak RSS (MiB) of a process, overall and per named phase, sampled from /proc every 0.1 s."""

    def __init__(self, pid: int, first_phase: str):
        self.pid, self.phase = pid, first_phase
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def next_phase(self, finished: str, following: str) -> None:
        self._sample()
        self.peaks[finished] = max(self.peaks.get(finished, 0.0), self.peaks.pop(self.phase, 0.0))
        self.phase = following

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def _sample(self) -> None:
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                rss_mib = int(f.read().split()[1]) * PAGE_KIB / 1024
        except (OSError, IndexError, ValueError):
            return
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss_mib)


def run_measured(command: list[str], first_phase: str, env: dict[str, str]) -> tuple[dict[str, Any], dict[str, float]]:
    """Run ``command``; return its JSON summary (last stdout line) and peak RSS per phase (phases
    cut at "stage X finished" lines on stderr; stderr is passed through)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = RssSampler(proc.pid, first_phase).start()
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    for line in proc.stderr:
        sys.stderr.write(line)
        if match := STAGE_DONE.search(line):
            sampler.next_phase(match.group(1), f"after {match.group(1)}")
    proc.wait()
    reader.join()
    sampler.stop()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command[2:])} failed with exit status {proc.returncode}")
    return json.loads(out[-1]), sampler.peaks


def synth(data: Path, size: dict[str, int], env: dict[str, str]) -> dict[str, Any]:
    """Generate the data set into ``data`` unless it is there already."""
    if (data / ".complete").exists():
        return {"seconds": 0.0, "reused": True}
    shutil.rmtree(data, ignore_errors=True)
    started = time.perf_counter()
    _, peaks = run_measured(topx_command("data", "synth", "--out", str(data), "--users", str(size["users"]),
                                         "--items", str(size["items"]), "--interactions",
                                         str(size["interactions"]), "--seed", "0"), "synth", env)
    (data / ".complete").write_text("ok\n")
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mib": round(max(peaks.values()), 1)}


def scale_run(directory: Path, scale: float) -> dict[str, Any]:
    size = size_for(scale)
    env = dict(os.environ)
    data = directory / f"synth-{size['interactions']}"
    generated = synth(data, size, env)
    work = directory / "work"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    summary, peaks = run_measured(topx_command("run", "--data", str(data), "--workdir", str(work), "--fresh",
                                               "--allow-regression"),
                                  "start", env)
    wall = time.perf_counter() - started
    stages = {name: {"seconds": seconds, "peak_rss_mib": round(peaks.get(name, 0.0), 1)}
              for name, seconds in summary["seconds"].items() if name != "total"}
    peak = max(peaks.values())
    full = scale >= 1
    return {"benchmark": "scale", "scale": scale, **size, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "synth": generated, "stages": stages, "run_seconds": round(wall, 1), "peak_rss_mib": round(peak, 1),
            "metrics": summary.get("metrics", {}), "targets": TARGETS,
            "met": {"seconds": wall <= TARGETS["seconds"], "peak_rss": peak <= TARGETS["peak_rss_mib"]} if full
            else "targets apply to the full set (--scale 1)"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the users and interactions")
    parser.add_argument("--dir", type=Path, help="where the data and the work directory go, kept afterwards "
                                                 "(default: a temporary directory, removed)")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    directory = args.dir or Path(tempfile.mkdtemp(prefix="topx-scale-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        result = scale_run(directory, args.scale)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
