"""``topx tune``: search the training settings within a time budget (see :mod:`batch.tune`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from batch.cli.common import add_config_options, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune", help="search the training settings on a validation split, write the best as a job file",
        description="Search the FM training settings with optuna within a time budget, on a validation split "
                    "carved from the training part (each user's --protocol latest or random --holdout training "
                    "interactions; the test split is never used). Scores lists as bench/quality.py does: "
                    "relevant = any held-out item, seen items excluded, top k. Writes OUT/best.toml, a job file "
                    "for `topx run --config`, and OUT/trials.csv.")
    add_config_options(p, "--data", "--format", "--split", "--holdout", "--mode", "--k", "--workdir")
    p.add_argument("--budget", default="10m", help="time budget: 90s, 10m, 1h (default 10m); no trial starts "
                                                   "when less is left than the median trial took")
    p.add_argument("--trials", type=int, metavar="N", help="stop after N trials (default: when the budget ends)")
    p.add_argument("--protocol", choices=["random", "last"],
                   help="how the validation split is carved (default: data.split when it is random or last, "
                        "else random)")
    p.add_argument("--out", default="topx-tune", metavar="DIR", help="where best.toml and trials.csv go")
    p.set_defaults(handler=_tune)


def _tune(args: argparse.Namespace) -> dict[str, Any]:
    from batch.data import load_dataset
    from batch.data.default import resolve_data
    from batch.errors import ConfigError
    from batch.tune import parse_budget, require_optuna, tune

    require_optuna()  # before reading the data
    cfg = config_from_args(args)
    budget = parse_budget(args.budget)
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials must be ≥ 1; got {args.trials}")
    protocol = args.protocol or (cfg.data.split if cfg.data.split in ("random", "last") else "random")
    dataset = load_dataset(resolve_data(cfg.data, Path(cfg.workdir)))
    result = tune(cfg, dataset, args.out, budget_s=budget, trials=args.trials, protocol=protocol)
    k = cfg.evaluate.k
    return {"best": result.best, f"validation_ndcg@{k}": round(result.best_value, 6), "trials": len(result.trials),
            "protocol": protocol, **result.files}
