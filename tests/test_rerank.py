"""The NeuMF re-ranker in a run: re-ranking keeps the candidates, ``topx run --rerank ncf``
publishes re-ranked lists, evaluation reports them, lineage and resume hold."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import sqlalchemy as sa
from test_pipeline import config

from batch import lineage
from batch.config import load_config
from batch.data.interactions import Dataset
from batch.errors import ConfigError, StaleArtifactError
from batch.lists import SOURCE_MODEL, SOURCE_POPULARITY, SOURCE_RERANKED, TopLists
from batch.pipeline import fingerprint, run_job
from batch.publish import make_engine
from batch.rerank import ncf
from batch.rerank.protocol import sampled_negatives, sampled_ranking
from batch.rerank.rerank import rerank
from batch.rerank.train import training_pairs
from batch.rundir import RunDir
from batch.shardplan import check_sharded
from batch.stages import Stages

RERANK = {"rerank.model": "ncf", "rerank.candidates": 30, "rerank.ncf.epochs": 2, "rerank.ncf.batch_size": 512}


def _candidates(users, depth, n_items, source=SOURCE_MODEL, seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for u in users:
        items = rng.choice(n_items, depth, replace=False)
        parts.append(TopLists(np.full(depth, u, np.int32), np.arange(1, depth + 1, dtype=np.int32),
                              items.astype(np.int32), np.linspace(2, 1, depth).astype(np.float32),
                              np.full(depth, 0.5, np.float32), np.full(depth, source, np.uint8)))
    return TopLists.concat(parts)


def _model(n_users=6, n_items=30):
    model = ncf.NeuMF(n_users, n_items, ncf.NCFSettings(factors=4, layers=(8, 4), dropout=0.0))
    for p in model.parameters():  # spread the scores: the default init makes them nearly equal
        p.data.normal_(0, 1, generator=__import__("torch").Generator().manual_seed(p.numel()))
    return model


def test_reranking_keeps_exactly_the_candidates_ordered_by_neumf():
    model = _model()
    cand = _candidates([0, 1, 2], 12, 30)
    everyone, all_items = np.ones(6, bool), np.ones(30, bool)
    out = rerank(cand, model, 12, everyone, all_items)
    for u in (0, 1, 2):
        mine, theirs = out.take(out.user == u), cand.take(cand.user == u)
        assert sorted(mine.item) == sorted(theirs.item)  # the same set, nothing added or lost
        np.testing.assert_array_equal(mine.rank, np.arange(1, 13))
        expected = ncf.predict(model, np.full(12, u), mine.item)
        np.testing.assert_allclose(mine.score, expected, rtol=1e-6)
        assert (np.diff(mine.score) <= 0).all() and (mine.source == SOURCE_RERANKED).all()
        np.testing.assert_array_equal(mine.probability, mine.score)
    cut = rerank(cand, model, 5, everyone, all_items)
    assert len(cut) == 15 and set(cut.item[cut.user == 1]) <= set(cand.item[cand.user == 1])
    np.testing.assert_array_equal(cut.item[cut.user == 1], out.item[out.user == 1][:5])


def test_unknown_users_keep_their_list_and_unknown_items_follow():
    model = _model()
    cand = TopLists.concat([_candidates([0], 10, 30), _candidates([4], 10, 30, SOURCE_POPULARITY, seed=1)])
    users = np.array([True, False, False, False, False, False])  # user 4 has no training interaction
    items = np.ones(30, bool)
    stranger = cand.item[(cand.user == 0) & (cand.rank == 2)][0]
    items[stranger] = False
    out = rerank(cand, model, 10, users, items)
    kept = out.take(out.user == 4)
    np.testing.assert_array_equal(kept.item, cand.item[cand.user == 4])
    assert (kept.source == SOURCE_POPULARITY).all() and (kept.score == cand.score[cand.user == 4]).all()
    mine = out.take(out.user == 0)
    assert mine.item[-1] == stranger and (mine.source == SOURCE_RERANKED).all()


def test_sampled_protocol_on_a_known_answer():
    # 3 users, 8 items; the scorer ranks item i by i: held-out item 7 beats every sampled one
    seen = np.unique(np.array([0 * 8 + 7, 1 * 8 + 0, 2 * 8 + 3, 0 * 8 + 1]))
    users, items = np.array([0, 1, 2]), np.array([7, 0, 3])
    result = sampled_ranking({"by_index": lambda u, i: i.astype(float)}, users, items, seen, 8, np.arange(8),
                             negatives=5, k=1, seed=0)
    figures = result["by_index"]
    # user 0: rank 1 (hit, gain 1); user 1: item 0 loses to everything (ties too); user 2: depends on the draw
    assert result["pairs"] == 3 and 1 / 3 <= figures["hit_rate@1"] <= 2 / 3
    assert figures["ndcg@1"] == pytest.approx(figures["hit_rate@1"])


def test_sampled_negatives_are_distinct_unseen_items_drawn_uniformly():
    # 90 items, user 0 has seen 0..9 (train or held out); 4,000 pairs of user 0, 2,000 of user 1 (nothing seen)
    users = np.repeat([0, 1], [4000, 2000])
    seen = np.arange(10, dtype=np.int64)
    drawn, valid = sampled_negatives(users, seen, 90, np.arange(90), 40, seed=3)
    assert valid.all() and drawn.shape == (6000, 40)
    assert all(len(np.unique(row)) == 40 for row in drawn)  # without replacement
    assert not np.isin(drawn[users == 0], seen).any()
    # every unseen item of user 0 is drawn in 40 of 80 rows on average: 2,000 ± 32 (σ) per item
    counts = np.bincount(drawn[users == 0].ravel(), minlength=90)
    assert (counts[:10] == 0).all() and np.abs(counts[10:] - 2000).max() < 200
    again, _ = sampled_negatives(users, seen, 90, np.arange(90), 40, seed=3)
    np.testing.assert_array_equal(again, drawn)  # seeded


def test_sampled_protocol_ranks_against_every_unseen_item_when_fewer_than_negatives():
    # 12 items in the pool; user 0 has seen 8 of them (one held out: item 11), user 1 only item 0
    seen = np.unique(np.r_[np.arange(7), 11, 12 * 1 + 0])
    drawn, valid = sampled_negatives(np.array([0, 1]), seen, 12, np.arange(12), 10, seed=0)
    assert sorted(drawn[0][valid[0]]) == [7, 8, 9, 10] and valid[1].all()
    assert len(np.unique(drawn[1])) == 10 and not np.isin(drawn[1], [0]).any()  # 10 of its 11 unseen items
    result = sampled_ranking({"by_index": lambda u, i: i.astype(float)}, np.array([0, 1]), np.array([11, 0]), seen,
                             12, np.arange(12), negatives=10, k=1, seed=0)
    # user 0's item 11 beats its 4 unseen items (hit); user 1's item 0 loses to all 10
    assert result["short_pairs"] == 1 and result["by_index"]["hit_rate@1"] == 0.5


def test_sampled_protocol_scores_in_bounded_chunks_with_the_same_figures(monkeypatch):
    # 40 pairs over 100 items, each user has seen only its held-out item; item 99 beats every draw (hit at
    # rank 1), item 0 loses to all
    import batch.rerank.protocol as protocol

    users, items = np.arange(40), np.where(np.arange(40) % 4 == 0, 99, 0)
    calls = []

    def by_index(u, i):
        calls.append(len(u))
        return i.astype(float)

    monkeypatch.setattr(protocol, "CHUNK_PAIRS", 3)
    seen = np.sort(users * 100 + items)
    result = sampled_ranking({"by_index": by_index}, users, items, seen, 100, np.arange(100), negatives=20, k=1,
                             seed=5)
    assert max(calls) == 3 * 21 and sum(calls) == 40 * 21  # every pair and negative scored, 3 pairs at a time
    assert result["pairs"] == 40 and result["by_index"]["hit_rate@1"] == 0.25 and result["short_pairs"] == 0
    again = sampled_ranking({"by_index": by_index}, users, items, seen, 100, np.arange(100), negatives=20, k=1,
                            seed=5)
    assert again == result


def test_sampled_protocol_gives_each_user_its_own_scores():
    # user u likes item 3u best and item 3u + 1 least; its held-out item is one of them, so the
    # pairs of even users rank first and those of odd users last, wherever the draws fall
    users = np.arange(12)
    items = np.where(users % 2 == 0, 3 * users, 3 * users + 1)

    def per_user(u, i):
        return np.where(i == 3 * u, 2.0, np.where(i == 3 * u + 1, -2.0, 0.0))

    seen = np.sort(users * 40 + items)
    result = sampled_ranking({"per_user": per_user}, users, items, seen, 40, np.arange(40), negatives=10, k=1)
    assert result["per_user"]["hit_rate@1"] == 0.5 and result["per_user"]["ndcg@1"] == 0.5


def test_sampled_protocol_ranks_a_seeded_sample_of_at_most_sampled_pairs(monkeypatch):
    from blocks import blocks_dataset

    import batch.serve.evaluate as evaluate

    dataset = blocks_dataset(n_users=40, n_items=40, per_user=8, test_every=2)  # 4 held out per user
    users = np.arange(40)
    scorer = {"by_index": lambda u, i: i.astype(float)}
    whole = evaluate.sampled_protocol(dataset, dataset.test, users, scorer, 10, seed=1)
    assert whole["pairs"] == whole["eligible_pairs"] > 100  # every pair with a trained item
    monkeypatch.setattr(evaluate, "SAMPLED_PAIRS", 25)
    part = evaluate.sampled_protocol(dataset, dataset.test, users, scorer, 10, seed=1)
    assert part["pairs"] == 25 and part["eligible_pairs"] == whole["pairs"]
    assert part == evaluate.sampled_protocol(dataset, dataset.test, users, scorer, 10, seed=1)  # seeded


@pytest.mark.parametrize("ratio", [0, 2])  # 0: always gathered; 2: the users' whole rows (4 × 50 ≤ 2 × 1,000)
def test_vectors_score_pairs_in_bounded_slices(monkeypatch, ratio):
    import batch.serve.repackage as repackage

    monkeypatch.setattr(repackage, "WHOLE_ROWS_RATIO", ratio)
    rng = np.random.default_rng(0)
    vectors = SimpleNamespace(users=rng.normal(size=(30, 4)).astype(np.float32), user_const=rng.normal(size=30),
                              items=rng.normal(size=(50, 4)).astype(np.float32))
    users, items = rng.choice([27, 3, 14, 9], 1000), rng.integers(0, 50, 1000)  # a few users, unsorted
    calls = []
    vectors._from_whole_rows = lambda *a: calls.append(1) or repackage.Vectors._from_whole_rows(vectors, *a)
    whole = repackage.Vectors.scores(vectors, users, items)
    assert len(calls) == (ratio > 0)
    monkeypatch.setattr(repackage, "SCORE_CELLS", 7)  # one pair, or one user's row one item at a time, per slice
    np.testing.assert_allclose(repackage.Vectors.scores(vectors, users, items), whole, rtol=1e-7)
    expected = (vectors.users[users].astype(np.float64) * vectors.items[items]).sum(1) + vectors.user_const[users]
    np.testing.assert_allclose(whole, expected, rtol=1e-6)
    assert repackage.Vectors.scores(vectors, users[:0], items[:0]).shape == (0,)


def test_fingerprint_ignores_rerank_settings_while_it_is_off(tmp_path):
    base = config(tmp_path, "sqlite://")
    assert fingerprint(base) == fingerprint(config(tmp_path, "sqlite://", **{"rerank.ncf.epochs": 3}))
    assert fingerprint(base) != fingerprint(config(tmp_path, "sqlite://", **RERANK))
    with pytest.raises(ConfigError, match="without --shards"):
        check_sharded(config(tmp_path, "sqlite://", **RERANK), 2)
    with pytest.raises(ConfigError, match="rerank.ncf.layers"):
        load_config(base={"rerank": {"ncf": {"layers": "63,8"}}}, env={})


def test_run_publishes_reranked_lists_and_evaluates_them(tmp_path, db_url, monkeypatch):
    cfg = config(tmp_path, db_url, **RERANK)
    summary = run_job(cfg)
    run = RunDir(tmp_path / "work" / "runs" / summary["run_id"])
    lists, dataset = TopLists.load(run.file("lists.npz")), Dataset.load(run.path)
    assert summary["seconds"]["rerank"] > 0 and run.file("rerank/model.tar.gz").exists()
    assert lineage.recorded(run.file("lists.npz"), lineage.RERANK_KEY) == lineage.model_digest(
        run.file("rerank/model.tar.gz"))
    trained = np.unique(dataset.train.user)
    assert set(np.unique(lists.user[lists.source == SOURCE_RERANKED])) == set(trained)
    assert np.bincount(lists.user).max() == 15
    # the NeuMF in the run directory gives the published scores
    model, _ = ncf.load_artifact(run.file("rerank/model.tar.gz"))
    rows = lists.source == SOURCE_RERANKED
    np.testing.assert_allclose(lists.score[rows], ncf.predict(model, lists.user[rows], lists.item[rows]), rtol=1e-6)
    # and it is the model train_ncf makes from the run's training pairs (what the SageMaker entry point trains on)
    again = ncf.train_ncf(*training_pairs(dataset), dataset.n_users, dataset.n_items, model.settings)
    assert all((a == b).all() for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))
    engine = make_engine(db_url)
    with engine.connect() as conn:
        sources = dict(conn.execute(sa.text("SELECT source, COUNT(*) FROM current_recommendations "
                                            "GROUP BY source")).fetchall())
    engine.dispose()
    assert sources.get(SOURCE_RERANKED) == rows.sum() and sum(sources.values()) == len(lists)
    evaluated = json.loads(run.metrics.read_text())["evaluate"]
    assert set(evaluated["reranked"]) == set(evaluated["model"])
    assert {"model", "reranked"} <= set(evaluated["sampled"]) and evaluated["sampled"]["negatives"] == 100
    assert 0 <= evaluated["sampled"]["reranked"]["hit_rate@10"] <= 1 and "reranked_ndcg@10" in summary["metrics"]
    report = run.file("report.html").read_text(encoding="utf-8")
    assert "Accuracy at k: model, re-ranked and popularity list" in report and "The NCF paper" in report

    # lineage: lists re-ranked by another NeuMF are refused at publish
    other = ncf.train_ncf(*training_pairs(dataset), dataset.n_users, dataset.n_items,
                          ncf.NCFSettings(epochs=1, seed=5))
    ncf.save_artifact(other, other.settings, tmp_path / "other")
    run.file("rerank/model.tar.gz").write_bytes(ncf.pack_artifact(tmp_path / "other"))
    with pytest.raises(StaleArtifactError, match="another model"):
        Stages(cfg, run, summary["run_id"]).publish()


def test_recommend_and_publish_on_a_reranked_run_directory(tmp_path, topx, monkeypatch):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    summary = run_job(config(tmp_path, db, **RERANK))
    run = RunDir(tmp_path / "work" / "runs" / summary["run_id"])
    published, digest = TopLists.load(run.file("lists.npz")), lineage.model_digest(run.file("rerank/model.tar.gz"))
    # topx recommend --run re-ranks as the search stage did: the same lists, recording the same re-ranker
    code, out, err = topx("recommend", "--run", str(run.path))
    assert code == 0, err
    again = TopLists.load(run.file("lists.npz"))
    np.testing.assert_array_equal(again.item, published.item)
    np.testing.assert_array_equal(again.source, published.source)
    np.testing.assert_allclose(again.score, published.score, rtol=1e-6)
    assert lineage.recorded(run.file("lists.npz"), lineage.RERANK_KEY) == digest and out["reranked_users"] > 0
    code, out, err = topx("publish", "--run", str(run.path), "--database-url", db, "--run-id", "again")
    assert code == 0, err
    # the FM's lists (made with the re-ranker switched off) are not published as the re-ranked run's
    monkeypatch.setenv("TOPX_RERANK_MODEL", "none")
    code, out, err = topx("recommend", "--run", str(run.path))
    assert code == 0, err
    assert lineage.recorded(run.file("lists.npz"), lineage.RERANK_KEY) is None
    monkeypatch.delenv("TOPX_RERANK_MODEL")
    code, _, err = topx("publish", "--run", str(run.path), "--database-url", db, "--run-id", "fm")
    assert code == 2 and "is not re-ranked but the run's settings re-rank" in err
    # nor judged on the re-ranked evaluation when publish itself is told not to re-rank
    monkeypatch.setenv("TOPX_RERANK_MODEL", "none")
    code, _, err = topx("publish", "--run", str(run.path), "--database-url", db, "--run-id", "fm")
    assert code == 2 and "judges re-ranked lists (evaluate.reranked)" in err
    engine = make_engine(db)
    with engine.connect() as conn:
        runs = dict(conn.execute(sa.text("SELECT id, status FROM runs")).fetchall())
        sources = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT source FROM current_recommendations"))}
    engine.dispose()
    assert runs == {summary["run_id"]: "superseded", "again": "current"} and SOURCE_RERANKED in sources


def test_a_failed_reranked_run_resumes_without_retraining(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = config(tmp_path, db, **RERANK)
    monkeypatch.setattr(Stages, "search", lambda self: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        run_job(cfg)
    monkeypatch.undo()
    monkeypatch.setattr(Stages, "rerank", lambda self: pytest.fail("the re-ranker trained again"))
    resumed = run_job(cfg)
    assert resumed["resumed"] is True and resumed["status"] == "published"


def test_resuming_with_the_reranker_retrains_a_rerank_stage_that_made_none_or_lost_its_model(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    # a run made without the re-ranker dies in search; it is resumed with --rerank ncf
    monkeypatch.setattr(Stages, "search", lambda self: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        run_job(config(tmp_path, db), run_id="r")
    monkeypatch.undo()
    run = RunDir(tmp_path / "work" / "runs" / "r")
    assert json.loads(run.file("run.json").read_text())["stages"]["rerank"]["summary"] == {"model": "none"}
    cfg = config(tmp_path, db, **RERANK)
    resumed = run_job(cfg, resume="r")
    stages = json.loads(run.file("run.json").read_text())["stages"]
    assert resumed["status"] == "published" and stages["rerank"]["summary"]["model"] == "ncf"
    assert lineage.recorded(run.file("lists.npz"), lineage.RERANK_KEY) == lineage.model_digest(
        run.file("rerank/model.tar.gz"))
    # its model lost after publishing: resuming trains it again (and searches again) instead of pointing at itself
    run.file("rerank/model.tar.gz").unlink()
    monkeypatch.setattr(Stages, "train", lambda self: pytest.fail("train ran again"))
    again = run_job(cfg, resume="r")
    assert again["status"] == "published" and run.file("rerank/model.tar.gz").exists()
    assert lineage.recorded(run.file("lists.npz"), lineage.RERANK_KEY) == lineage.model_digest(
        run.file("rerank/model.tar.gz"))


def test_an_old_run_directory_without_the_rerank_stage_resumes(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = config(tmp_path, db)
    monkeypatch.setattr(Stages, "evaluate", lambda self: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        run_job(cfg, run_id="old")
    state_file = tmp_path / "work" / "runs" / "old" / "run.json"
    state = json.loads(state_file.read_text())
    del state["stages"]["rerank"]  # as a topx from before the re-ranker left it
    state_file.write_text(json.dumps(state))
    monkeypatch.undo()
    monkeypatch.setattr(Stages, "train", lambda self: pytest.fail("train ran again"))
    resumed = run_job(cfg)
    assert resumed["run_id"] == "old" and resumed["resumed"] is True


@pytest.mark.slow
def test_cli_run_rerank_on_the_embedded_default(tmp_path, topx, monkeypatch):
    monkeypatch.setenv("TOPX_RERANK_NCF_EPOCHS", "1")
    monkeypatch.setenv("TOPX_RERANK_NCF_BATCH_SIZE", "4096")
    code, summary, err = topx("run", "--rerank", "ncf", "--candidates", "150", "--workdir", str(tmp_path / "w"),
                              "--epochs", "2", "--allow-regression")
    assert code == 0, err
    lists = TopLists.load(tmp_path / "w" / "runs" / summary["run_id"] / "lists.npz")
    assert summary["rows"] == 943 * 100 and (lists.source == SOURCE_RERANKED).all()
