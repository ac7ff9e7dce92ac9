"""Serving commands on a run directory: recommend, score, evaluate, publish."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from batch.cli.common import add_config_options, config_from_args
from batch.errors import ConfigError
from batch.rundir import RunDir


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recommend", help="top-x lists for every user of a run directory",
                              description="Search every user's best X items (the FM's top candidates re-ranked "
                                          "when the run's settings re-rank, as topx run does); writes RUNDIR/lists.npz "
                                          "(and --out CSV with external ids).")
    _run_dir(p)
    add_config_options(p, "--top", "--method")
    p.add_argument("--allow", dest="cfg_search__allow", metavar="FILE", help="only these item ids (one per line)")
    p.add_argument("--deny", dest="cfg_search__deny", metavar="FILE", help="never these item ids (one per line)")
    p.add_argument("--suppress", dest="cfg_search__suppress", metavar="FILE",
                   help="never these user_id,item_id[,until] pairs (CSV)")
    p.add_argument("--include-seen", dest="cfg_search__exclude_seen", action="store_const", const=False,
                   help="also list items the user already interacted with")
    p.add_argument("--out", metavar="FILE.csv", help="also write the lists as CSV")
    p.set_defaults(handler=_recommend)

    p = subparsers.add_parser("score", help="the FM prediction for user-item pairs (offline endpoint predict)",
                              description="Print the trained FM's score (and, for a binary classifier, the "
                                          "probability) of one user with each given item, as SageMaker's endpoint "
                                          "would predict them; the scores equal those the lists are ranked by.")
    _run_dir(p)
    p.add_argument("--user", required=True, help="external user id")
    p.add_argument("--item", required=True, action="append", help="external item id (repeatable)")
    p.set_defaults(handler=_score)

    p = subparsers.add_parser("evaluate", help="ranking metrics on the held-out split, next to popularity",
                              description="Rank every test user's unseen items with the run's model (training "
                                          "items excluded) and report precision, recall, NDCG, MAP and hit rate at "
                                          "--k and beyond-accuracy figures, next to the popularity list; stored in "
                                          "RUNDIR/metrics.json.")
    _run_dir(p)
    add_config_options(p, "--k")
    p.set_defaults(handler=_evaluate)

    p = subparsers.add_parser("similar", help="each item's most similar items, from a run directory's item factors",
                              description="Every item's top X most similar items (cosine of the item factors by "
                                          "default); writes RUNDIR/similar.npz, which topx publish publishes with "
                                          "the run, and --out CSV. --item prints one item's list.")
    _run_dir(p)
    p.add_argument("--top", dest="cfg_similar__top", type=int, metavar="X", help="similar items per item (default 10)")
    p.add_argument("--metric", dest="cfg_similar__metric", choices=["cosine", "inner_product"])
    p.add_argument("--item", help="external item id whose list to print")
    p.add_argument("--out", metavar="FILE.csv", help="also write every list as CSV")
    add_config_options(p, "--search-backend")
    p.set_defaults(handler=_similar)

    p = subparsers.add_parser("audience", help="for each given item, the users most likely to want it",
                              description="For each item id in FILE (one per line; '*' for every item), the N "
                                          "users with the highest predicted score who have not interacted with "
                                          "it; writes RUNDIR/audiences.npz, which topx publish publishes with the "
                                          "run, and --out CSV for email tools.")
    _run_dir(p)
    p.add_argument("--items", dest="cfg_audience__items", metavar="FILE", help="item ids, one per line ('*': all)")
    p.add_argument("--size", dest="cfg_audience__size", type=int, metavar="N", help="users per item (default 1000)")
    p.add_argument("--out", metavar="FILE.csv", help="also write the audiences as CSV")
    add_config_options(p, "--search-backend")
    p.set_defaults(handler=_audience)

    p = subparsers.add_parser("publish", help="publish a run directory's lists to the database",
                              description="Load RUNDIR/lists.npz (topx recommend) into the database as one run and "
                                          "make it current in one transaction, if it passes the publish gate; "
                                          "the previous run stays current otherwise.")
    _run_dir(p)
    add_config_options(p, "--database-url", "--workdir", "--allow-regression")
    p.add_argument("--run-id", metavar="R", help="run id to publish as (default: the run directory's name)")
    p.set_defaults(handler=_publish)


def _run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="RUNDIR", help="a run directory (topx train --out)")


def _run_config(args: argparse.Namespace):
    """The run directory and its settings: those it was trained with (config.json, whose publish
    section is not reused: it is stored with credentials redacted), overridden by --config,
    TOPX_* variables and this command's options."""
    run = RunDir(args.run)
    run.require()  # the directory exists
    saved = {k: v for k, v in run.read_json("config.json").items() if k != "publish"}
    return run, config_from_args(args, base=saved)


def _recommend(args: argparse.Namespace) -> dict[str, Any]:
    from batch.serve.recommend import write_csv
    from batch.stages import search_lists

    run, cfg = _run_config(args)
    lists, report = search_lists(cfg, run)  # re-ranked as the run's search stage does when it re-ranks
    if args.out:
        dataset = run.load_dataset()
        write_csv(lists, dataset.users, dataset.items, args.out)
    return {"run_dir": str(run.path), "users": lists.n_users, "rows": len(lists), "top": cfg.search.top,
            "out": args.out, **report}


def _similar(args: argparse.Namespace) -> dict[str, Any]:
    from batch.serve.search import make_keyed_searcher
    from batch.serve.similar import similar_for_run, write_csv
    from batch.stages import rules

    run, cfg = _run_config(args)
    if cfg.similar.top < 1:
        raise ConfigError("similar.top must be > 0 for topx similar")
    found = similar_for_run(cfg, run, searcher=make_keyed_searcher(cfg, "similar", run_id=run.path.name))
    run.save_derived("similar.npz", found, **rules(cfg, run))
    dataset = run.load_dataset()
    if args.out:
        write_csv(found, dataset.items, dataset.items, ("item_id", "similar_item_id"), args.out,
                  titles=dataset.item_titles)
    summary = {"run_dir": str(run.path), "items": int(len(np.unique(found.key))), "rows": len(found),
               "top": cfg.similar.top, "metric": cfg.similar.metric, "out": args.out}
    if args.item is not None:
        item = int(dataset.items.index([args.item], what="item")[0])
        mine = found.of(item)
        titles = dataset.item_titles
        summary["similar"] = [{"item": str(dataset.items.ids[j]), "score": float(s),
                               **({"title": titles[j]} if titles is not None else {})}
                              for j, s in zip(mine.value.tolist(), mine.score.tolist(), strict=True)]
    return summary


def _audience(args: argparse.Namespace) -> dict[str, Any]:
    from batch.serve.search import make_keyed_searcher
    from batch.serve.similar import audiences_for_run, write_csv
    from batch.stages import rules

    run, cfg = _run_config(args)
    if cfg.audience.items is None:
        raise ConfigError("topx audience needs --items FILE (or [audience] items in the job file)")
    found = audiences_for_run(cfg, run, searcher=make_keyed_searcher(cfg, "audience", run_id=run.path.name))
    run.save_derived("audiences.npz", found, **rules(cfg, run))
    if args.out:
        dataset = run.load_dataset()
        write_csv(found, dataset.items, dataset.users, ("item_id", "user_id"), args.out)
    return {"run_dir": str(run.path), "items": int(len(np.unique(found.key))), "rows": len(found),
            "size": cfg.audience.size, "out": args.out}


def _score(args: argparse.Namespace) -> dict[str, Any]:
    from batch.serve.repackage import entity_design

    run = RunDir(args.run)
    dataset, model = run.load_dataset(), run.load_model()
    design = entity_design(dataset, run.load_layout())
    user = dataset.users.index([args.user], what="user")
    items = dataset.items.index(args.item, what="item")
    X = design.pair_rows(np.repeat(user, len(items)), items)
    scores, predictions = model.decision(X), model.predict(X)
    binary = model.predictor_type == "binary_classifier"
    return {"user": args.user, "predictor_type": model.predictor_type, "scores": [
        {"item": item, "score": float(s), **({"probability": float(p)} if binary else {})}
        for item, s, p in zip(args.item, scores, predictions, strict=True)]}


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from batch.serve.evaluate import evaluate_run

    run, cfg = _run_config(args)
    result = evaluate_run(cfg, run)
    return {"run_dir": str(run.path), **{k: v for k, v in result.items() if k != "headline"}}


def _publish(args: argparse.Namespace) -> dict[str, Any]:
    from batch import lineage
    from batch.lists import TopLists
    from batch.metrics.since import record_churn
    from batch.publish import database_url, publish_run
    from batch.runinfo import run_info
    from batch.stages import keyed_lists

    run, cfg = _run_config(args)
    dataset = run.load_dataset()
    lists = run.load_derived("lists.npz", TopLists, f"run topx recommend --run {run.path} first")
    lineage.check_reranker(run, cfg.rerank.enabled, f"rerun topx recommend --run {run.path} with the run's [rerank] "
                                                    f"settings")
    run_id = args.run_id or run.path.resolve().name
    run.model_metrics(f"run topx evaluate --run {run.path} first")  # refused before touching the database
    lineage.check_evaluated(run, f"rerun topx evaluate --run {run.path} with the run's [rerank] settings")
    record_churn(database_url(cfg), run, run_id, lists, dataset, cfg.evaluate.k)
    return publish_run(database_url(cfg), run_info(cfg, run, run_id, dataset), lists, dataset.users, dataset.items,
                       item_titles=dataset.item_titles, item_attributes=dataset.item_attributes,
                       keep_runs=cfg.publish.keep_runs, gate=cfg.publish.gate,
                       **keyed_lists(run, lineage.recorded_rules(run.file("lists.npz"))))
