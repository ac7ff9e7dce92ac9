"""List quality on real data: topx's default next to the methods a user would pick instead.

    python bench/quality.py ../shared/data/ml-latest-small [--protocol last|random] [--holdout 10] [--seed 0]
    python bench/quality.py ../shared/data/ml-latest-small --protocol random --seeds 0,1,2

One split (per user, the ``holdout`` latest or random interactions held out), one metric code
(:mod:`batch.offline`: relevant = any held-out item, training items excluded, top 10) for every
system: topx through ``topx run``'s own pipeline with its default settings, the same with its
NeuMF re-ranker on (``topx+ncf``: the FM's top 200 per user re-ranked), popularity, EASE and
implicit's ALS and BPR (the ``bench`` extra). The peers' settings are chosen on a validation
split carved the same way from the training part (never the test split); topx runs as it ships.
Prints one JSON line: each system's NDCG/precision/recall/MAP/hit rate@10, coverage@10 and
training seconds, best NDCG first. With ``--seeds`` the whole benchmark runs once per seed
(another random split each, the peers tuned again on each) and the table holds each system's
mean over the splits, each split's NDCG@10 beside it, and every split's own table under
``runs``: one split of a few hundred users moves a lead by several percent.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import FITS, Scorer, fit_popularity  # noqa: E402

from batch.config import DataConfig, JobConfig, load_config  # noqa: E402
from batch.data import load_dataset  # noqa: E402
from batch.data.interactions import Dataset  # noqa: E402
from batch.offline import RELEVANCE, eval_users, fm_top, list_metrics, top_k, validation_split  # noqa: E402

K = 10
SYSTEMS = ("topx", "topx+ncf", "popularity", "ease", "als", "bpr")
# topx's own rows: its default, and the same run with the NeuMF re-ranker ([rerank] model = "ncf")
OWN = {"topx": {}, "topx+ncf": {"rerank.model": "ncf"}}


def load_split(data: str, protocol: str, holdout: int, seed: int) -> Dataset:
    """The data set at ``data`` split as ``topx run --config`` splits it with these settings."""
    return load_dataset(DataConfig(path=data, split=protocol, holdout=holdout, seed=seed))


def score_lists(scorer: Scorer, dataset: Dataset) -> dict[str, float]:
    """The metrics of ``scorer``'s top-10 lists for the users with held-out items."""
    users = eval_users(dataset)
    seen = dataset.train.matrix(dataset.n_users, dataset.n_items)
    return list_metrics(top_k(scorer, users, seen, K), users, dataset, K)


def grid(settings: dict[str, tuple]) -> list[dict[str, Any]]:
    """Every combination of a grid's settings."""
    return [dict(zip(settings, values, strict=True)) for values in itertools.product(*settings.values())]


def tune_peer(name: str, validation: Dataset, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point of peer ``name`` with the best validation NDCG@10, and every point tried."""
    fit, settings = FITS[name]
    X = validation.train.matrix(validation.n_users, validation.n_items)
    tried = []
    for point in grid(settings):
        extra = {} if name == "ease" else {"seed": seed}
        ndcg = score_lists(fit(X, **point, **extra), validation)[f"ndcg@{K}"]
        tried.append({**point, f"validation_ndcg@{K}": ndcg})
    best = max(tried, key=lambda row: row[f"validation_ndcg@{K}"])
    return {key: best[key] for key in settings}, tried


def run_peer(name: str, dataset: Dataset, protocol: str, holdout: int, seed: int) -> dict[str, Any]:
    """Tune a peer on the validation split, refit it on the whole training part, score the test split."""
    X = dataset.train.matrix(dataset.n_users, dataset.n_items)
    if name == "popularity":
        chosen, fit = {}, lambda: fit_popularity(X)
    else:
        chosen, _ = tune_peer(name, validation_split(dataset, protocol, holdout, seed), seed)
        extra = {} if name == "ease" else {"seed": seed}
        fit = lambda: FITS[name][0](X, **chosen, **extra)  # noqa: E731
    started = time.perf_counter()
    scorer = fit()
    seconds = time.perf_counter() - started
    return {**score_lists(scorer, dataset), "train_seconds": round(seconds, 2), "settings": chosen}


def run_topx(data: str, protocol: str, holdout: int, seed: int, dataset: Dataset,
             config: JobConfig | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """topx run with its default settings (and this split; ``extra``: settings on top, e.g. the
    re-ranker) in a temporary work directory; its lists for the held-out users scored with the
    same code as the peers'."""
    from batch.pipeline import run_job
    from batch.rundir import RunDir

    with tempfile.TemporaryDirectory(prefix="topx-quality-") as work:
        # the benchmark measures the lists whatever they are: the publish gate must not stop it
        overrides = {"workdir": work, "data.path": data, "data.split": protocol, "data.holdout": holdout,
                     "data.seed": seed, "search.top": K, "publish.gate.allow_regression": True, **(extra or {})}
        cfg = load_config(env={}, overrides=overrides, base=config.to_dict() if config else None)
        summary = run_job(cfg, fresh=True)
        run = RunDir(Path(work) / "runs" / summary["run_id"])
        _same_split(run.load_dataset(), dataset)
        users = eval_users(dataset)
        metrics = list_metrics(fm_top(cfg, run.path, users, K), users, dataset, K)
        stages = run.read_json("run.json")["stages"]
        seconds = stages["train"]["seconds"] + stages.get("rerank", {}).get("seconds", 0.0)
    return {**metrics, "train_seconds": round(seconds, 2), "settings": "defaults" if config is None else "config"}


def _same_split(ran: Dataset, expected: Dataset) -> None:
    for side in ("train", "test"):
        a, b = getattr(ran, side), getattr(expected, side)
        if not (np.array_equal(a.user, b.user) and np.array_equal(a.item, b.item)):
            raise RuntimeError(f"topx run's {side} split differs from the benchmark's")


def quality(data: str, protocol: str = "last", holdout: int = 10, seed: int = 0,
            systems: tuple[str, ...] = SYSTEMS, config: str | None = None) -> dict[str, Any]:
    """The whole benchmark: one row per system, best NDCG@10 first. ``config``: a TOML job file
    whose settings topx runs with instead of the defaults (e.g. one ``topx tune`` wrote)."""
    dataset = load_split(data, protocol, holdout, seed)
    job = load_config(config, env={}) if config else None
    rows = []
    for name in systems:
        started = time.perf_counter()
        result = run_topx(data, protocol, holdout, seed, dataset, job, OWN[name]) if name in OWN else \
            run_peer(name, dataset, protocol, holdout, seed)
        rows.append({"system": name, **result, "seconds": round(time.perf_counter() - started, 1)})
        print(f"{name}: ndcg@{K} {result[f'ndcg@{K}']:.4f}", file=sys.stderr, flush=True)
    rows.sort(key=lambda row: -row[f"ndcg@{K}"])
    return {"benchmark": "quality", **lead(rows), "data": data, "protocol": protocol, "holdout": holdout, "seed": seed,
            "relevance": RELEVANCE, "k": K, "users": dataset.n_users, "items": dataset.n_items,
            "train_interactions": len(dataset.train), "test_interactions": len(dataset.test), "table": rows}


def over_seeds(data: str, protocol: str = "random", holdout: int = 10, seeds: tuple[int, ...] = (0, 1, 2),
               systems: tuple[str, ...] = SYSTEMS, config: str | None = None) -> dict[str, Any]:
    """:func:`quality` once per seed; the table holds each system's mean of every figure but the
    wall seconds over the splits (``ndcg@10_by_seed``: each split's), best mean NDCG first, and
    ``runs`` each split's whole result."""
    runs = [quality(data, protocol, holdout, seed, systems, config) for seed in seeds]
    rows = []
    for name in systems:
        mine = [next(row for row in run["table"] if row["system"] == name) for run in runs]
        figures = [key for key, value in mine[0].items() if isinstance(value, int | float) and key != "seconds"]
        rows.append({"system": name, **{key: round(float(np.mean([row[key] for row in mine])), 6) for key in figures},
                     f"ndcg@{K}_by_seed": [row[f"ndcg@{K}"] for row in mine]})
    rows.sort(key=lambda row: -row[f"ndcg@{K}"])
    return {"benchmark": "quality", **lead(rows), "data": data, "protocol": protocol, "holdout": holdout,
            "seeds": list(seeds), "relevance": RELEVANCE, "k": K, "table": rows, "runs": runs}


def lead(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How far topx's NDCG@10 is above (or below, negative) the best peer's, in percent."""
    topx = [row for row in rows if row["system"] == "topx"]
    peers = [row for row in rows if row["system"] not in OWN]
    if not topx or not peers:
        return {}
    best = max(peers, key=lambda row: row[f"ndcg@{K}"])
    gain = 100 * (topx[0][f"ndcg@{K}"] / best[f"ndcg@{K}"] - 1) if best[f"ndcg@{K}"] else float("nan")
    return {"best_peer": best["system"], f"topx_vs_best_peer_ndcg@{K}_pct": round(gain, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a data directory or file topx reads, e.g. ../shared/data/ml-latest-small")
    parser.add_argument("--protocol", choices=("last", "random"), default="last")
    parser.add_argument("--holdout", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", help="comma-separated seeds: one split each, the table their mean (e.g. 0,1,2)")
    parser.add_argument("--config", help="a TOML job file for topx (default: topx's defaults)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    args = parser.parse_args(argv)
    systems = tuple(s for s in args.systems.split(",") if s)
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    if args.seeds:
        try:
            seeds = tuple(int(seed) for seed in args.seeds.split(","))
        except ValueError:
            parser.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
        if args.protocol != "random" or len(set(seeds)) != len(seeds):
            parser.error("--seeds takes distinct seeds and --protocol random (leave-last holds out the same "
                         "interactions whatever the seed)")
        print(json.dumps(over_seeds(args.data, args.protocol, args.holdout, seeds, systems, args.config)))
    else:
        print(json.dumps(quality(args.data, args.protocol, args.holdout, args.seed, systems, args.config)))


if __name__ == "__main__":
    main()
