"""The report's sections, each from :class:`RunFacts` to an HTML fragment. A section whose data
the run does not have says so instead of drawing an empty plot."""

from __future__ import annotations

from typing import Any

import numpy as np

from batch.lists import SOURCE_MODEL, SOURCE_POPULARITY, SOURCE_RERANKED
from batch.report import page, plots
from batch.report.facts import RunFacts

SAMPLE_USERS = 5  # users whose history is shown next to their list
SHOWN = 10  # history rows and list rows per sample user
ACCURACY = ("precision", "recall", "ndcg", "map", "hit_rate")
BEYOND = ("catalogue_coverage", "gini", "novelty", "ild", "ild_genre", "top1pct_share")


def overview(facts: RunFacts) -> str:
    ev, figures = facts.evaluate, _figures(facts)
    k, x = ev.get("k"), ev.get("x")
    shown = ((f"NDCG@{k}", "ndcg_at_k"), (f"popularity NDCG@{k}", "popularity_ndcg_at_k"),
             (f"precision@{k}", "precision_at_k"), (f"coverage@{k}", "catalogue_coverage_at_k"),
             (f"coverage@{x}", "catalogue_coverage_at_x"), (f"Gini@{x}", "gini_at_x"))
    items = [(label, figures.get(name)) for label, name in shown]
    churn = facts.metrics.get("churn") or {}
    if figures.get("jaccard_at_k") is not None:
        items.append((f"Jaccard@{churn.get('k')} vs the previous run", figures["jaccard_at_k"]))
    counts = facts.state.get("stages", {}).get("ingest", {}).get("summary", {})
    facts_line = ", ".join(f"{name} {page.fmt(counts[name])}" for name in ("users", "items", "train", "test")
                           if name in counts)
    stages = facts.state.get("stages", {})  # the report stage runs after publish, before the run is marked done
    status = "published" if "publish" in stages else facts.state.get("status", "not recorded")
    return (f"<h1>topx run {page.esc(facts.run_id)}</h1>\n"
            + page.note(f"status {status}; started {facts.state.get('started_at', '–')}; {facts_line}")
            + page.headline(items))


def training(facts: RunFacts) -> str:
    engine = (facts.metrics.get("train") or {}).get("engine") or {}
    history = engine.get("history") or []
    if not history:
        return page.section("Training", page.note("This engine recorded no loss per epoch."), anchor="training")
    test = (facts.metrics.get("train") or {}).get("test") or {}
    return page.section(
        "Training", page.plot(plots.loss_per_epoch(history), "Training loss per epoch", "loss"),
        page.table(["held-out measure", "value"], sorted(test.items())), anchor="training")


def accuracy(facts: RunFacts) -> str:
    ev = facts.evaluate
    if "model" not in ev:
        return page.section("Accuracy", page.note(ev.get("skipped", "The run was not evaluated.")), anchor="accuracy")
    ks = ev.get("ks") or [ev["k"]]
    lists = [name for name in ("model", "reranked", "popularity") if name in ev]
    rows = [[name, list_name] + [ev[list_name].get(f"{name}@{k}") for k in ks]
            for name in ACCURACY for list_name in lists]
    caption = f"Held-out accuracy at k for {ev['model'].get('users_evaluated')} users ({ev.get('relevance')})"
    plot = plots.metrics_vs_k(ev["model"], ev["popularity"], ks, reranked=ev.get("reranked"))
    return page.section("Accuracy at k: model" + (", re-ranked" if "reranked" in ev else "") + " and popularity list",
                        page.plot(plot, caption, "metrics-vs-k"),
                        page.table(["metric", "list"] + [f"@{k}" for k in ks], rows), *_sampled(ev),
                        anchor="accuracy")


def _sampled(ev: dict) -> list[str]:
    """The NCF paper's protocol (evaluate's ``sampled``) as a table, when the run has it."""
    sampled = ev.get("sampled") or {}
    models = [name for name in ("model", "reranked") if name in sampled]
    if not models or not sampled.get("pairs"):
        return []
    k = sampled["k"]
    rows = [[name] + [sampled[name].get(f"{m}@{k}") for m in ("hit_rate", "ndcg")] for name in models]
    return [page.table(["scored by", f"HR@{k}", f"NDCG@{k}"], rows),
            page.note(f"The NCF paper's protocol: each of {sampled['pairs']} relevant held-out items ranked among "
                      f"{sampled['negatives']} sampled items the user never interacted with.")]


def beyond(facts: RunFacts) -> str:
    ev = facts.evaluate
    groups = ev.get("beyond") or {}
    if not groups:
        return page.section("Beyond accuracy", page.note("Not measured for this run."), anchor="beyond")
    k, x = ev["k"], ev["x"]
    columns = [(f"model@{k}", "model", k), (f"reranked@{k}", "reranked", k), (f"popularity@{k}", "popularity", k),
               (f"model@{x}", "model", x), (f"reranked@{x}", "reranked", x), (f"popularity@{x}", "popularity", x),
               (f"published@{x}", "published", x)]
    columns = [c for c in columns if c[1] in groups]
    rows = [[name] + [groups[g].get(f"{name}@{at}") for _, g, at in columns] for name in BEYOND
            if any(f"{name}@{at}" in groups[g] for _, g, at in columns)]
    return page.section(
        "Beyond accuracy", page.table(["metric"] + [c[0] for c in columns], rows),
        page.note("model, reranked and popularity: the evaluation users' lists (training items excluded); "
                  "published: every user's list as published. Coverage: share of candidate items listed at all; "
                  "Gini of how often each candidate is listed; novelty: mean −log2 of the share of users who know "
                  "an item (bits); ild: mean pairwise cosine distance of item factors (ild_genre: of genres); "
                  "top1pct_share: list slots taken by the 1% most popular items."), anchor="beyond")


def long_tail(facts: RunFacts) -> str:
    if facts.lists is None or facts.dataset is None:
        return page.section("Long tail", page.note("The run has no published lists."), anchor="long-tail")
    counts = np.bincount(facts.lists.item, minlength=facts.dataset.n_items)
    caption = "Times each item is recommended (published lists) against its training popularity"
    return page.section("Long tail", page.plot(plots.long_tail(facts.training_users(), counts), caption, "long-tail"),
                        anchor="long-tail")


def scores(facts: RunFacts) -> str:
    if facts.lists is None:
        return page.section("Scores", page.note("The run has no published lists."), anchor="scores")
    lists = facts.lists
    svg = plots.score_histograms(lists.score, lists.probability, lists.source != SOURCE_POPULARITY)
    return page.section("Scores and probabilities", page.plot(svg, "Published scores and probabilities", "scores"),
                        anchor="scores")


def churn(facts: RunFacts) -> str:
    c = facts.metrics.get("churn")
    if not c or not c.get("against") or c.get("same_run"):
        text = "Nothing was published before this run." if c else "Not measured (the run was not published)."
        return page.section("Change since the previous run", page.note(text), anchor="churn")
    k = c["k"]
    rows = [["compared against run", c["against"]], ["users compared", c["users_compared"]],
            ["users new to the lists", c["new_users"]], [f"mean Jaccard@{k} of the top-{k} sets", c[f"jaccard@{k}"]],
            [f"rank-biased overlap (p = {c['rbo_p']})", c["rbo"]], ["share of lists changed", c["changed_share"]],
            [f"share of top-{k} sets changed", c[f"changed_share@{k}"]]]
    moved = [page.table([f"{way} most lists", "lists"], [[e["title"] or e["item_id"], e["lists"]] for e in c[way]])
             if c[way] else page.note(f"No item {way} any list.") for way in ("entered", "left")]
    return page.section("Change since the previous run", page.table(["", ""], rows),
                        '<div class="pair">' + "".join(f"<div>{m}</div>" for m in moved) + "</div>", anchor="churn")


def samples(facts: RunFacts, seed: int = 0) -> str:
    if facts.lists is None or facts.dataset is None:
        return page.section("Sample users", page.note("The run has no published lists."), anchor="samples")
    users = np.unique(facts.lists.user)
    chosen = np.sort(np.random.default_rng(seed).choice(users, size=min(SAMPLE_USERS, len(users)), replace=False))
    return page.section("Sample users: history and list", *(_user(facts, int(u)) for u in chosen), anchor="samples")


def _user(facts: RunFacts, user: int) -> str:
    ds, lists = facts.dataset, facts.lists
    mine = ds.train.take(ds.train.user == user)
    recent = np.argsort(-mine.timestamp, kind="stable")[:SHOWN]
    history = [[facts.title(int(mine.item[i])), float(mine.rating[i])] for i in recent]
    rows = lists.take(np.flatnonzero(lists.user == user))
    listed = [[int(r), facts.title(int(i)), float(s)] for r, i, s in zip(rows.rank, rows.item, rows.score, strict=True)]
    source = {SOURCE_POPULARITY: "popularity fallback", SOURCE_RERANKED: "re-ranker"}.get(
        int(rows.source[0]) if len(rows) else SOURCE_MODEL, "model")
    return (f"<h3>user {page.esc(ds.users.ids[user])} ({len(mine)} training interactions; list from the {source})</h3>"
            f'<div class="pair"><div>{page.table(["latest in training", "rating"], history)}</div>'
            f'<div>{page.table(["rank", "recommended", "score"], listed[:SHOWN])}</div></div>')


def settings(facts: RunFacts) -> str:
    stages = facts.state.get("stages") or {}
    timings = [[name, info.get("seconds"), info.get("finished_at")] for name, info in stages.items()]
    flat = sorted(_flatten(facts.config).items())
    return page.section("Settings and stage timings",
                        page.table(["stage", "seconds", "finished at"], timings) if timings else
                        page.note("No stage timings recorded (not a topx run directory)."),
                        page.table(["setting", "value"], flat), anchor="settings")


def trend(runs: list[dict[str, Any]], note: str | None = None) -> str:
    """Figures of published runs (newest first, as ``runs`` rows) as a trend, oldest left."""
    runs = [r for r in reversed(runs) if (r.get("metrics") or {}).get("figures")]
    if len(runs) < 1:
        return page.section("Across runs", page.note(note or "No published run has figures yet."), anchor="trend")
    labels = [r["id"] for r in runs]
    figs = [r["metrics"]["figures"] for r in runs]
    series = {name: [f.get(name, np.nan) for f in figs] for name in
              ("ndcg_at_k", "popularity_ndcg_at_k", "precision_at_k", "catalogue_coverage_at_k",
               "catalogue_coverage_at_x", "gini_at_x", "top1pct_share_at_x")}
    churn = {name: [f.get(name, np.nan) for f in figs] for name in ("jaccard_at_k", "rbo", "changed_share")}
    rows = [[r["id"], r["status"], r.get("published_at")] + [f.get(n) for n in ("ndcg_at_k", "catalogue_coverage_at_x",
            "gini_at_x", "jaccard_at_k")] for r, f in zip(runs, figs, strict=True)]
    return page.section(f"Across the last {len(runs)} published runs",
                        page.plot(plots.trend(labels, series, churn), "Key figures of each published run", "trend"),
                        page.table(["run", "status", "published", "ndcg@k", "coverage@x", "gini@x", "jaccard@k"],
                                   rows[::-1]), note and page.note(note), anchor="trend")


def _figures(facts: RunFacts) -> dict[str, Any]:
    from batch.metrics.figures import figures

    return figures(facts.metrics)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = "" if value is None else value
    return out
