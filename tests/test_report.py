"""The run report: written by topx run, rewritten by topx report, self-contained, and looked at
in headless Chromium; the metrics it shows are stored with every published run."""

from __future__ import annotations

import os
import re
import shutil
import sys

import numpy as np
import pytest
from browser import Browser, blank_share, chromium_path

from batch.config import load_config
from batch.errors import MissingDependencyError
from batch.pipeline import run_job
from batch.publish import list_runs
from batch.report import write_report
from batch.rundir import RunDir

SMALL = {"data": {"synth": {"users": 60, "items": 90, "interactions": 2400, "seed": 5}},
         "train": {"hyperparameters": {"epochs": 2, "num_factors": 8}}, "search": {"top": 12}}
PLOTS = {"loss", "metrics-vs-k", "long-tail", "scores", "trend"}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two published runs of the same data with different seeds: the second is compared with the first."""
    root = tmp_path_factory.mktemp("report")
    base = {**SMALL, "workdir": str(root / "work"), "publish": {"database_url": f"sqlite:///{root / 'topx.db'}",
                                                                "gate": {"allow_regression": True}}}  # tiny data
    first = run_job(load_config(base=base, env={}))
    base["train"] = {"hyperparameters": {**SMALL["train"]["hyperparameters"], "seed": 1}}
    second = run_job(load_config(base=base, env={}), fresh=True)
    return root, base["publish"]["database_url"], first, second


def test_topx_run_writes_the_report_and_points_at_it(two_runs):
    root, _, first, second = two_runs
    path = root / "work" / "runs" / second["run_id"] / "report.html"
    assert second["report"] == str(path.resolve()) and "report" in second["seconds"]
    text = path.read_text(encoding="utf-8")
    assert set(re.findall(r'data-plot="([^"]+)"', text)) == PLOTS
    for anchor in ("training", "accuracy", "beyond", "long-tail", "scores", "churn", "samples", "trend", "settings"):
        assert f'id="{anchor}"' in text
    assert f"compared against run</td><td>{first['run_id']}" in text
    before = (root / "work" / "runs" / first["run_id"] / "report.html").read_text()
    assert "Nothing was published before this run." in before


def test_the_report_is_self_contained(two_runs):
    root, _, _, second = two_runs
    text = (root / "work" / "runs" / second["run_id"] / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text
    references = re.findall(r'(?:src|href)="([^"]*)"', text) + re.findall(r"url\(([^)]*)\)", text)
    assert references and all(ref.startswith("data:") for ref in references)


def test_every_published_run_stores_its_figures(two_runs, topx):
    _, url, first, second = two_runs
    runs = {r["id"]: r["metrics"] for r in list_runs(url)}
    for run_id in (first["run_id"], second["run_id"]):
        metrics = runs[run_id]
        assert set(metrics["evaluate"]["beyond"]) == {"model", "popularity", "published"}
        assert {"ndcg@1", "ndcg@50", "ndcg@12", "precision@20"} <= set(metrics["evaluate"]["popularity"])
        for name in ("ndcg_at_k", "popularity_ndcg_at_k", "catalogue_coverage_at_k", "catalogue_coverage_at_x",
                     "gini_at_x", "novelty_at_x", "ild_at_x", "ild_genre_at_x", "top1pct_share_at_x"):
            assert np.isfinite(metrics["figures"][name]), name
    assert "jaccard_at_k" not in runs[first["run_id"]]["figures"]
    churn = runs[second["run_id"]]["churn"]
    assert churn["against"] == first["run_id"] and churn["users_compared"] == 60
    assert 0 <= churn["jaccard@10"] < 1 and 0 < churn["changed_share"] <= 1
    code, summary, _ = topx("runs", "--database-url", url)
    shown = {r["id"]: r["figures"] for r in summary["runs"]}
    assert code == 0 and shown[second["run_id"]]["rbo"] == churn["rbo"]


def test_topx_report_rewrites_a_run_report_and_writes_the_trend(two_runs, topx, tmp_path):
    root, url, first, second = two_runs
    work = str(root / "work")
    code, summary, _ = topx("report", "--run", first["run_id"], "--workdir", work, "--database-url", url,
                            "--out", str(tmp_path / "first.html"))
    assert code == 0 and summary["out"] == str(tmp_path / "first.html")
    assert f"topx run {first['run_id']}" in (tmp_path / "first.html").read_text()
    code, summary, _ = topx("report", "--runs", "1", "--database-url", url, "--out", str(tmp_path / "trend.html"))
    trend = (tmp_path / "trend.html").read_text()
    assert code == 0 and "Across the last 1 published runs" in trend and second["run_id"] in trend
    assert first["run_id"] not in trend
    assert topx("report", "--workdir", work)[0] == 2
    assert topx("report", "--run", "no-such-run", "--workdir", work)[0] == 2  # no such run: an input error


def test_a_run_directory_without_lists_reports_what_it_has(two_runs, tmp_path):
    root, _, first, _ = two_runs
    run = shutil.copytree(root / "work" / "runs" / first["run_id"], tmp_path / "trained")
    for name in ("lists.npz", "run.json"):
        (run / name).unlink()
    text = write_report(RunDir(run), database_url=None).read_text()
    assert text.count("The run has no published lists.") == 3 and "No database given" in text
    assert 'data-plot="loss"' in text and 'data-plot="long-tail"' not in text


def test_without_matplotlib_topx_run_stops_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(MissingDependencyError, match=r"topx\[report\]"):
        run_job(load_config(base={**SMALL, "workdir": str(tmp_path / "work")}, env={}))
    assert not (tmp_path / "work").exists()


def _browser():
    binary = chromium_path()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed (apt-get install chromium; .ci/run does it)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return Browser(binary)


@pytest.mark.browser
def test_the_report_renders_in_chromium_with_every_plot_drawn(two_runs, tmp_path):
    root, _, _, second = two_runs
    with _browser() as browser:
        shown = browser.render(root / "work" / "runs" / second["run_id"] / "report.html")
    shown.screenshot.save(tmp_path / "report.png")
    assert shown.errors == []
    assert {p["name"] for p in shown.plots} == PLOTS
    for plot in shown.plots:
        assert plot["loaded"] and plot["box"][2] > 300 and plot["box"][3] > 150, plot
        assert blank_share(shown.screenshot, plot["box"]) < 0.97, plot  # axes, lines and labels drawn
    assert shown.screenshot.height > max(p["box"][1] + p["box"][3] for p in shown.plots)


@pytest.mark.browser
def test_the_browser_check_catches_a_broken_plot_and_console_errors(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img class="plot" data-plot="empty" width="400" height="200" src="data:image/svg+xml;base64,'
                    'PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRoPSI0MDAiIGhlaWdodD0iMjAwIi8+">'
                    '<img class="plot" data-plot="corrupt" width="400" height="200" src="data:image/png;base64,AAAA">'
                    '<script>console.error("boom")</script></body></html>')
    with _browser() as browser:
        shown = browser.render(page)
    plots = {p["name"]: p for p in shown.plots}
    assert plots["empty"]["loaded"] and blank_share(shown.screenshot, plots["empty"]["box"]) > 0.99
    assert not plots["corrupt"]["loaded"]
    assert any("boom" in e for e in shown.errors)
