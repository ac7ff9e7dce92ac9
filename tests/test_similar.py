"""Similar items and audiences: the exact answers on small vectors, publishing with the run on
SQLite and PostgreSQL (views, dashboard SQL, replace, prune), the CLI, and neighbours a film fan
recognises on MovieLens latest-small."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from test_publish_support import id_maps, make_lists, query, run_info, titles_for

from batch.config import SimilarConfig
from batch.data.interactions import IdMap
from batch.errors import DataError
from batch.lists import KeyedLists
from batch.publish import publish_run
from batch.serve.repackage import COLD, FEATURES_ONLY, TRAINED, Vectors
from batch.serve.similar import audience_items, audiences, item_factors, similar_items

SQL = Path(__file__).resolve().parents[1] / "sql"
MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def make_vectors(seed: int = 0, n_users: int = 30, n_items: int = 40, k: int = 6) -> Vectors:
    rng = np.random.default_rng(seed)
    item_status = np.full(n_items, TRAINED, np.uint8)
    item_status[[3, 17]] = FEATURES_ONLY  # features, no interactions: listed and searched
    item_status[[5, 21]] = COLD
    user_status = np.full(n_users, TRAINED, np.uint8)
    user_status[[2, 9]] = COLD
    return Vectors(users=np.hstack([rng.normal(size=(n_users, k)), np.ones((n_users, 1))]).astype(np.float32),
                   user_const=rng.normal(size=n_users).astype(np.float32),
                   items=rng.normal(size=(n_items, k + 1)).astype(np.float32), user_status=user_status,
                   item_status=item_status, popularity=np.arange(n_items, dtype=np.int64),
                   predictor_type="binary_classifier")


def brute_force(scores: np.ndarray, allowed: np.ndarray, top: int) -> list[list[int]]:
    """Per row, the ``top`` allowed columns by score desc, ties to the smaller column."""
    out = []
    for row, ok in zip(scores, allowed, strict=True):
        order = sorted(np.flatnonzero(ok).tolist(), key=lambda j: (-row[j], j))
        out.append(order[:top])
    return out


@pytest.mark.parametrize("metric", ["cosine", "inner_product"])
def test_similar_items_are_the_nearest_known_items_but_the_item_itself(metric):
    vectors = make_vectors()
    found = similar_items(vectors, SimilarConfig(top=5, metric=metric))
    p = vectors.items[:, :-1].astype(np.float64)
    if metric == "cosine":
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
    known = vectors.item_status != COLD
    queries = np.flatnonzero(known)
    allowed = np.tile(known, (len(queries), 1))
    allowed[np.arange(len(queries)), queries] = False
    expected = brute_force(p[queries] @ p.T, allowed, 5)
    assert sorted(set(found.key.tolist())) == queries.tolist()  # features-only items 3 and 17 included
    for q, want in zip(queries, expected, strict=True):
        mine = found.of(q)
        assert mine.value.tolist() == want and mine.rank.tolist() == [1, 2, 3, 4, 5]
        assert np.allclose(mine.score, (p[q] @ p[want].T), atol=1e-5)
    assert not np.isin(found.value, [5, 21]).any()


def test_similar_items_ties_go_to_the_smaller_index_and_repeat_exactly():
    vectors = make_vectors()
    items = vectors.items.copy()
    items[[30, 12, 25]] = items[7]  # three copies of item 7: equal cosine 1 with it
    vectors = Vectors(vectors.users, vectors.user_const, items, vectors.user_status, vectors.item_status,
                      vectors.popularity, vectors.predictor_type)
    first = similar_items(vectors, SimilarConfig(top=3))
    assert first.of(7).value.tolist() == [12, 25, 30]
    again = similar_items(vectors, SimilarConfig(top=3, batch_size=1))
    assert all(np.array_equal(a, b) for a, b in zip(first.columns(), again.columns(), strict=True))


def test_item_factors_drop_the_linear_column_and_keep_zero_vectors_zero():
    vectors = make_vectors()
    vectors.items[4, :-1] = 0
    factors = item_factors(vectors, "cosine")
    assert factors.shape == (40, 6) and not factors[4].any()
    assert np.allclose(np.linalg.norm(np.delete(factors, 4, 0), axis=1), 1, atol=1e-6)


def test_audiences_are_the_users_with_the_highest_prediction_who_have_not_seen_the_item():
    vectors = make_vectors()
    rng = np.random.default_rng(3)
    seen = sp.csr_matrix(rng.random((30, 40)) < 0.2)
    items = np.array([0, 3, 11, 39])
    found = audiences(vectors, items, 7, seen)
    scores = vectors.users.astype(np.float64) @ vectors.items[items].astype(np.float64).T + vectors.user_const[:, None]
    allowed = (~seen.toarray()[:, items].T) & (vectors.user_status != COLD)
    expected = brute_force(scores.T, allowed, 7)
    for item, want in zip(items, expected, strict=True):
        mine = found.of(item)
        assert mine.value.tolist() == want
        assert np.allclose(mine.score, vectors.scores(np.array(want), np.full(7, item)), atol=1e-4)


def test_keyed_rows_from_full_and_part_filled_slots():
    """KeyedLists.from_slots: one row per filled slot (rank = slot + 1), the same columns whether
    every slot is filled (the fast path) or some are empty (-1)."""
    value = np.array([[4, 2, 7], [1, 0, 3]], np.int32)
    score = np.array([[0.5, 0.25, 0.125], [2.0, 1.0, -1.0]], np.float32)
    full = KeyedLists.from_slots(np.array([8, 9]), value, score)
    assert [c.dtype for c in full.columns()] == [np.int32, np.int32, np.int32, np.float32]
    assert full.key.tolist() == [8, 8, 8, 9, 9, 9] and full.rank.tolist() == [1, 2, 3, 1, 2, 3]
    assert full.value.tolist() == [4, 2, 7, 1, 0, 3] and full.score.tolist() == score.ravel().tolist()
    value[0, 2], value[1, 1:] = -1, -1
    part = KeyedLists.from_slots(np.array([8, 9]), value, score)
    assert part.key.tolist() == [8, 8, 9] and part.rank.tolist() == [1, 2, 1] and part.value.tolist() == [4, 2, 1]
    assert part.score.tolist() == [0.5, 0.25, 2.0] and full.value[2] == 7  # full's columns are its own


def test_audience_items_name_unknown_ids_by_file_and_line(tmp_path):
    items = IdMap(np.array([10, 20, 30], dtype=np.int64))
    path = tmp_path / "campaign.txt"
    path.write_text("# spring campaign\n20\n\n99\n10\nabc\n")
    with pytest.raises(DataError) as err:
        audience_items(str(path), items)
    assert f"{path}:4: '99'" in str(err.value) and f"{path}:6: 'abc'" in str(err.value)
    path.write_text("30\n10\n")
    assert audience_items(str(path), items).tolist() == [0, 2]
    assert audience_items("*", items).tolist() == [0, 1, 2]


def keyed(shift: float = 0.0) -> tuple[KeyedLists, KeyedLists]:
    """Similar items: item i → i+1, i+2 (of 10); audiences of items 0 and 4: users 5, 3."""
    key = np.repeat(np.arange(10, dtype=np.int32), 2)
    similar = KeyedLists(key, np.tile(np.array([1, 2], np.int32), 10), ((key + np.tile([1, 2], 10)) % 10)
                         .astype(np.int32), np.tile(np.array([0.9, 0.8], np.float32), 10) + np.float32(shift))
    audience = KeyedLists(np.array([0, 0, 4, 4], np.int32), np.array([1, 2, 1, 2], np.int32),
                          np.array([5, 3, 5, 3], np.int32), np.array([2.5, 1.5, 0.5, 0.25], np.float32))
    return similar, audience


def test_similar_items_and_audiences_are_published_with_the_run(db_url):
    users, items = id_maps()
    similar, audience = keyed()
    summary = publish_run(db_url, run_info("r1"), make_lists(), users, items, item_titles=titles_for(items),
                          similar=similar, audiences=audience)
    assert summary["similar_items"] == 20 and summary["audiences"] == 4
    rows = query(db_url, (SQL / "dashboard_similar_items.sql").read_text(), item_id="103")
    assert [(r, i, t, run) for r, i, t, _, run in rows] == [
        (1, "106", "Title of 106, \"quoted\"", "r1"), (2, "109", "Title of 109, \"quoted\"", "r1")]
    assert rows[0][3] == pytest.approx(0.9)
    rows = query(db_url, (SQL / "export_audience.sql").read_text(), item_id="112")
    assert [(r, u, s, t) for r, u, s, t, _ in rows] == [(1, "12", 0.5, "Title of 112, \"quoted\""),
                                                        (2, "10", 0.25, "Title of 112, \"quoted\"")]

    # a second run without audiences: the view shows its similar items only, r1's rows stay stored
    publish_run(db_url, run_info("r2"), make_lists(shift=1), users, items, similar=keyed(shift=0.05)[0])
    assert query(db_url, "SELECT COUNT(*), MIN(run_id), MAX(score) FROM current_similar_items")[0][:2] == (20, "r2")
    assert query(db_url, "SELECT COUNT(*) FROM current_audiences") == [(0,)]
    assert query(db_url, "SELECT COUNT(*) FROM audiences WHERE run_id = 'r1'") == [(4,)]

    # re-publishing r2 replaces its rows; pruning r1 deletes its rows
    publish_run(db_url, run_info("r2"), make_lists(shift=1), users, items, similar=similar, keep_runs=1)
    assert query(db_url, "SELECT run_id, COUNT(*) FROM similar_items GROUP BY run_id") == [("r2", 20)]
    assert query(db_url, "SELECT COUNT(*) FROM audiences") == [(0,)]


def test_a_run_whose_keyed_lists_are_broken_publishes_nothing(db_url):
    from batch.errors import PublishError

    users, items = id_maps()
    similar, _ = keyed()
    publish_run(db_url, run_info("r1"), make_lists(), users, items, similar=similar)
    broken = KeyedLists(similar.key, similar.rank, similar.value, similar.score.copy())
    broken.score[3] = np.nan
    with pytest.raises(PublishError, match="similar_items"):
        publish_run(db_url, run_info("r2"), make_lists(shift=1), users, items, similar=broken)
    assert query(db_url, "SELECT run_id, COUNT(*) FROM current_similar_items GROUP BY run_id") == [("r1", 20)]
    assert query(db_url, "SELECT id FROM runs") == [("r1",)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    from batch.cli import main

    root = tmp_path_factory.mktemp("similar")
    assert main(["data", "synth", "--out", str(root / "synth"), "--users", "60", "--items", "90",
                 "--interactions", "2400", "--seed", "2"]) == 0
    assert main(["train", "--data", str(root / "synth"), "--out", str(root / "run"), "--epochs", "3",
                 "--num-factors", "8"]) == 0
    return str(root / "run")


def test_cli_similar_and_audience_write_csv_and_publish_with_the_run(run_dir, tmp_path, topx, sqlite_url):
    code, summary, err = topx("similar", "--run", run_dir, "--top", "4", "--out", str(tmp_path / "similar.csv"))
    assert code == 0, err
    assert summary["rows"] == 4 * summary["items"] and summary["metric"] == "cosine"
    with open(tmp_path / "similar.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["rows"] and not [r for r in rows if r["item_id"] == r["similar_item_id"]]
    first = rows[0]["item_id"]
    code, one, _ = topx("similar", "--run", run_dir, "--top", "4", "--item", first)
    assert [s["item"] for s in one["similar"]] == [r["similar_item_id"] for r in rows if r["item_id"] == first]

    campaign = tmp_path / "campaign.txt"
    campaign.write_text(f"{first}\n")
    code, summary, err = topx("audience", "--run", run_dir, "--items", str(campaign), "--size", "5",
                              "--out", str(tmp_path / "audience.csv"))
    assert code == 0, err
    with open(tmp_path / "audience.csv", newline="") as f:
        audience = list(csv.DictReader(f))
    assert [r["rank"] for r in audience] == ["1", "2", "3", "4", "5"] and {r["item_id"] for r in audience} == {first}

    campaign.write_text(f"{first}\nno-such-item\n")
    code, _, err = topx("audience", "--run", run_dir, "--items", str(campaign))
    assert code == 2 and f"{campaign}:2: 'no-such-item'" in err

    code, summary, err = topx("recommend", "--run", run_dir, "--top", "5")
    code, summary, err = topx("publish", "--run", run_dir, "--database-url", sqlite_url, "--allow-regression")
    assert code == 0, err
    assert summary["similar_items"] == len(rows) and summary["audiences"] == 5
    assert query(sqlite_url, "SELECT COUNT(*) FROM current_audiences") == [(5,)]


def test_topx_run_publishes_similar_items_and_the_configured_audiences(tmp_path, topx):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    campaign = tmp_path / "campaign.txt"
    campaign.write_text("1\n2\n")
    job = tmp_path / "job.toml"
    job.write_text(f'workdir = "{tmp_path / "work"}"\n[data.synth]\nusers = 80\nitems = 120\ninteractions = 2000\n'
                   f'[train.hyperparameters]\nepochs = 3\nnum_factors = 8\n[search]\ntop = 5\n'
                   f'[similar]\ntop = 3\n[audience]\nitems = "{campaign}"\nsize = 4\n'
                   f'[publish]\ndatabase_url = "{db}"\n[publish.gate]\nallow_regression = true\n')
    code, summary, err = topx("run", "--config", str(job))
    assert code == 0, err
    n_similar = query(db, "SELECT COUNT(*), COUNT(DISTINCT item_id), MAX(rank) FROM current_similar_items")[0]
    assert n_similar[0] == 3 * n_similar[1] and n_similar[2] == 3
    assert query(db, "SELECT item_id, COUNT(*) FROM current_audiences GROUP BY item_id ORDER BY item_id") == [
        ("1", 4), ("2", 4)]


@pytest.mark.slow
@pytest.mark.skipif(not MOVIELENS.is_dir(), reason="needs ../shared/data/ml-latest-small")
def test_toy_storys_nearest_neighbour_on_movielens_is_its_sequel(tmp_path, topx):
    code, _, err = topx("train", "--data", str(MOVIELENS), "--out", str(tmp_path / "run"))
    assert code == 0, err
    code, summary, err = topx("similar", "--run", str(tmp_path / "run"), "--item", "1")  # Toy Story (1995)
    assert code == 0, err
    titles = [s["title"] for s in summary["similar"]]
    assert "Toy Story 2 (1999)" in titles[:3], titles


def test_suppression_pairs_in_force_are_read_and_unknown_ids_reported_by_line(tmp_path):
    from datetime import UTC, datetime

    from batch.serve.suppress import read_suppression

    users, items = IdMap(np.array([1, 2, 3], np.int64)), IdMap(np.array([10, 20], np.int64))
    path = tmp_path / "suppress.csv"
    path.write_text("# emailed last week\n1,10\n2,20,2030-01-01\n3,10,2020-01-01\n9,10\n1,99,2030-01-01T00:00Z\n")
    pairs, report = read_suppression(str(path), users, items, now=datetime(2026, 12, 1, tzinfo=UTC))
    assert sorted(zip(*pairs.nonzero(), strict=True)) == [(0, 0), (1, 1)]
    assert report == {"suppress_pairs": 2, "suppress_expired": 1, "suppress_unknown": 2,
                      "suppress_unknown_lines": [5, 6]}
    for bad, where in (("1,10\n2\n", (2, None)), ("1,10,next week\n", (1, 3))):
        path.write_text(bad)
        with pytest.raises(DataError) as err:
            read_suppression(str(path), users, items)
        assert (err.value.line, err.value.column) == where and err.value.file == str(path)


def test_recommend_and_audience_never_list_a_suppressed_pair_and_lists_stay_full(run_dir, tmp_path, topx):
    out = tmp_path / "plain.csv"
    code, _, err = topx("recommend", "--run", run_dir, "--top", "5", "--out", str(out))
    assert code == 0, err
    with open(out, newline="") as f:
        plain = list(csv.DictReader(f))
    firsts = [(r["user_id"], r["item_id"]) for r in plain if r["rank"] == "1"][:10]
    suppress = tmp_path / "suppress.csv"
    suppress.write_text("".join(f"{u},{i}\n" for u, i in firsts) + "no-such-user,1\n")
    code, summary, err = topx("recommend", "--run", run_dir, "--top", "5", "--suppress", str(suppress),
                              "--out", str(out))
    assert code == 0, err
    assert summary["suppress_pairs"] == 10 and summary["suppress_unknown_lines"] == [11]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(plain) and not {(r["user_id"], r["item_id"]) for r in rows} & set(firsts)

    user, item = firsts[0]
    campaign = tmp_path / "campaign.txt"
    campaign.write_text(f"{item}\n")
    code, _, err = topx("audience", "--run", run_dir, "--items", str(campaign), "--size", "60",
                        "--out", str(tmp_path / "audience.csv"))
    with open(tmp_path / "audience.csv", newline="") as f:
        assert user in {r["user_id"] for r in csv.DictReader(f)}
    job = tmp_path / "job.toml"
    job.write_text(f'[search]\nsuppress = "{suppress}"\n')
    code, _, err = topx("audience", "--run", run_dir, "--items", str(campaign), "--size", "60",
                        "--config", str(job), "--out", str(tmp_path / "audience.csv"))
    assert code == 0, err
    with open(tmp_path / "audience.csv", newline="") as f:
        assert user not in {r["user_id"] for r in csv.DictReader(f)}


def with_feature(run_dir: str, column: str) -> set[str]:
    from batch.rundir import RunDir

    dataset = RunDir(run_dir).load_dataset()
    j = dataset.item_features.columns.index(column)
    return set(dataset.items.ids[dataset.item_features.matrix[:, j].toarray().ravel() != 0].astype(str).tolist())


def test_attribute_rules_keep_lists_full_in_recommend_similar_and_audience(run_dir, tmp_path, topx):
    from batch.rundir import RunDir

    features = RunDir(run_dir).load_dataset().item_features
    counts = np.asarray((features.matrix != 0).sum(axis=0)).ravel()
    common = features.columns[int(np.argmax(counts))]  # the most frequent genre: it is in many lists
    job = tmp_path / "job.toml"
    job.write_text(f'[search]\nexclude_attributes = "{common}"\n')
    out = tmp_path / "lists.csv"
    code, summary, err = topx("recommend", "--run", run_dir, "--top", "5", "--config", str(job), "--out", str(out))
    assert code == 0, err
    assert summary["exclude_attributes_items"] == counts.max()
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 * 5 and not {r["item_id"] for r in rows} & with_feature(run_dir, common)

    code, summary, err = topx("similar", "--run", run_dir, "--top", "3", "--config", str(job),
                              "--out", str(tmp_path / "similar.csv"))
    assert code == 0, err
    with open(tmp_path / "similar.csv", newline="") as f:
        assert not {r["similar_item_id"] for r in csv.DictReader(f)} & with_feature(run_dir, common)

    job.write_text(f'[search]\ninclude_attributes = "{common}"\n')
    code, summary, err = topx("recommend", "--run", run_dir, "--top", "5", "--config", str(job), "--out", str(out))
    with open(out, newline="") as f:
        assert {r["item_id"] for r in csv.DictReader(f)} <= with_feature(run_dir, common)
    campaign = tmp_path / "campaign.txt"
    outside = sorted(set(RunDir(run_dir).load_dataset().items.ids.astype(str).tolist()) - with_feature(run_dir, common))
    campaign.write_text(f"{outside[0]}\n{sorted(with_feature(run_dir, common))[0]}\n")
    code, summary, err = topx("audience", "--run", run_dir, "--items", str(campaign), "--size", "3",
                              "--config", str(job))
    assert code == 0 and summary["items"] == 1 and "1 listed item(s) get no audience" in err


def test_attribute_rules_that_name_no_feature_or_leave_no_item_stop_with_a_named_error(run_dir, tmp_path, topx):
    job = tmp_path / "job.toml"
    job.write_text('[search]\ninclude_attributes = "genre=Polka"\n')
    code, _, err = topx("recommend", "--run", run_dir, "--config", str(job))
    assert code == 2 and "search.include_attributes: no item feature 'genre=Polka'" in err
    job.write_text('[search]\ninclude_attributes = "genre=Action"\nexclude_attributes = "genre=Action"\n')
    code, _, err = topx("recommend", "--run", run_dir, "--config", str(job))
    assert code == 2 and "no item is left to recommend" in err and "genre=Action removed" in err


def greedy_brute(scores: np.ndarray, allowed: np.ndarray, categories: np.ndarray, cap: int, k: int) -> list[list[int]]:
    out = []
    for row, ok in zip(scores, allowed, strict=True):
        counts, picked = np.zeros(categories.shape[1], int), []
        for j in sorted(np.flatnonzero(ok).tolist(), key=lambda j: (-row[j], j)):
            if len(picked) == k:
                break
            if not (counts[categories[j]] >= cap).any():
                picked.append(j)
                counts[categories[j]] += 1
        out.append(picked)
    return out


def test_a_category_cap_gives_the_greedy_capped_list_of_the_exact_ranking():
    from batch.serve.capped import capped_order, capped_topk

    rng = np.random.default_rng(5)
    queries, items = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    categories = rng.random((300, 4)) < 0.3  # items in 0, 1 or several categories
    categories[:, 0] |= np.arange(300) % 2 == 0  # half the items share category 0: rows must widen
    seen = sp.csr_matrix(rng.random((40, 300)) < 0.1)
    allowed = np.arange(300) % 7 != 0
    item, inner = capped_topk(queries, items, 10, categories, 2, exclude=seen, candidates=allowed)
    expected = greedy_brute(queries.astype(np.float64) @ items.T.astype(np.float64),
                            ~seen.toarray() & allowed, categories, 2, 10)
    assert [row[row >= 0].tolist() for row in item] == expected
    assert all((categories[row[row >= 0]].sum(0) <= 2).all() for row in item)

    order = np.argsort(-np.arange(300) % 11, kind="stable")
    from batch.serve.recommend import top_unseen

    chosen = capped_order(order, np.arange(40), 10, categories, 1, lambda u, d: top_unseen(order, u, d, seen))
    rank = np.empty(300)
    rank[order] = -np.arange(300)
    assert [row[row >= 0].tolist() for row in chosen] == greedy_brute(
        np.tile(rank, (40, 1)), ~seen.toarray(), categories, 1, 10)


def test_a_category_cap_keeps_user_and_similar_lists_full_within_it(run_dir, tmp_path, topx):
    from batch.rundir import RunDir

    dataset = RunDir(run_dir).load_dataset()
    genres = [j for j, name in enumerate(dataset.item_features.columns) if name.startswith("genre=")]
    member = dataset.item_features.matrix[:, genres].toarray() != 0
    by_id = {str(i): member[k] for k, i in enumerate(dataset.items.ids.tolist())}
    job = tmp_path / "job.toml"
    job.write_text("[search]\nmax_per_category = 1\n")
    out = tmp_path / "lists.csv"
    code, summary, err = topx("recommend", "--run", run_dir, "--top", "5", "--config", str(job), "--out", str(out))
    assert code == 0, err
    assert summary["max_per_category"] == 1
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 * 5
    for user in {r["user_id"] for r in rows}:
        assert (sum(by_id[r["item_id"]] for r in rows if r["user_id"] == user) <= 1).all()
    code, _, err = topx("similar", "--run", run_dir, "--top", "4", "--config", str(job),
                        "--out", str(tmp_path / "similar.csv"))
    assert code == 0, err
    with open(tmp_path / "similar.csv", newline="") as f:
        similar = list(csv.DictReader(f))
    for item in {r["item_id"] for r in similar}:
        assert (sum(by_id[r["similar_item_id"]] for r in similar if r["item_id"] == item) <= 1).all()

    job.write_text('[search]\nmax_per_category = 1\nmethod = "hnsw"\n')
    code, _, err = topx("recommend", "--run", run_dir, "--config", str(job))
    assert code == 2 and "search.max_per_category needs the local exact search" in err


def test_postgres_loads_keyed_rows_by_copy_with_any_text_and_all_or_nothing(pg_url, monkeypatch):
    """Similar items, audiences and item attributes reach PostgreSQL by binary COPY, never an
    INSERT; ids and values with quotes, tabs, line breaks, backslashes and non-ASCII come back
    as they were, attributes over several COPYs; a COPY that fails leaves the previous run's rows."""
    import sqlalchemy as sa

    from batch.errors import PublishError
    from batch.publish import keyed as keyed_module
    from batch.publish import make_engine

    texts = ["a\tb", 'quo"te', "line\nbreak", "back\\slash", "Ünïcödé 映画", "comma,semi;", "x" * 300, "plain"]
    items = IdMap(np.array(texts + [f"i{n}" for n in range(2)]))
    users = IdMap(np.array(["ü1", "u\t2", "u3", "u4", "u5", "u6"]))
    n = len(items)
    similar = KeyedLists(np.repeat(np.arange(n, dtype=np.int32), 2), np.tile(np.array([1, 2], np.int32), n),
                         ((np.repeat(np.arange(n), 2) + np.tile([1, 2], n)) % n).astype(np.int32),
                         np.linspace(1, 0, 2 * n).astype(np.float32))
    audience = KeyedLists(np.array([0, 0, 4], np.int32), np.array([1, 2, 1], np.int32),
                          np.array([1, 0, 2], np.int32), np.array([2.5, -1.5, 0.125], np.float32))
    attributes = {"genres": np.array(texts[::-1] + ["", None], dtype=object),
                  "price": np.array([f"{p:.2f}" for p in range(n)], dtype=object)}
    monkeypatch.setattr(keyed_module, "CHUNK_ROWS", 7)  # 18 attribute rows: three COPYs

    engine = make_engine(pg_url)
    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *a: statements.append(statement))
    publish_run(pg_url, run_info("r1"), make_lists(), users, items, similar=similar, audiences=audience,
                item_attributes=attributes, engine=engine)
    assert [s for s in statements if "INSERT INTO" in s and any(
        t in s for t in ("similar_items", "audiences", "item_attributes"))] == []

    got = [(k, r, v, np.float32(s)) for k, r, v, s in query(pg_url, "SELECT item_id, rank, similar_item_id, score "
                                                               "FROM similar_items ORDER BY item_id, rank")]
    want = sorted((str(items.ids[k]), int(r), str(items.ids[v]), s) for k, r, v, s in
                  zip(similar.key, similar.rank, similar.value, similar.score, strict=True))
    assert got == want
    assert query(pg_url, "SELECT item_id, rank, user_id, score FROM audiences ORDER BY item_id, rank") == [
        ("a\tb", 1, "u\t2", 2.5), ("a\tb", 2, "ü1", -1.5), ("Ünïcödé 映画", 1, "u3", 0.125)]
    got = query(pg_url, "SELECT item_id, name, value FROM item_attributes WHERE run_id = 'r1'")
    want = [(str(items.ids[i]), name, str(v)) for name, column in attributes.items() for i, v in enumerate(column)
            if v not in ("", None)]
    assert sorted(got) == sorted(want) and len(got) == 18

    bad = {"genres": np.array(["fine"] * (n - 1) + ["nul\x00byte"], dtype=object)}  # the second COPY fails
    with pytest.raises(PublishError, match="previous run stays current.*0x00"):
        publish_run(pg_url, run_info("r2"), make_lists(shift=1), users, items, similar=similar,
                    item_attributes=bad, engine=engine)
    assert query(pg_url, "SELECT run_id, COUNT(*) FROM item_attributes GROUP BY run_id") == [("r1", 18)]
    assert query(pg_url, "SELECT id FROM runs WHERE status = 'current'") == [("r1",)]
    engine.dispose()
