"""Change since the current run: the new lists against those the database publishes now, on
SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
from test_publish_support import id_maps, make_lists, run_info

from batch.data.interactions import Dataset, IdMap, Interactions
from batch.lists import TopLists
from batch.metrics.since import record_churn, since_current
from batch.publish import publish_run
from batch.rundir import RunDir


def dataset(users: IdMap, items: IdMap) -> Dataset:
    titles = np.array([f"Film {i}" for i in items.ids.tolist()], dtype=object)
    return Dataset(Interactions.empty(), Interactions.empty(), users, items, item_titles=titles)


def test_nothing_published_means_nothing_to_compare(db_url):
    users, items = id_maps()
    assert since_current(db_url, "r1", make_lists(), dataset(users, items), 2) == {"against": None}


def test_churn_against_the_current_run(db_url):
    users, items = id_maps()  # 6 users, 10 items; user u's list holds items u, u+1, u+2, u+3
    publish_run(db_url, run_info("r1"), make_lists(), users, items)
    old = make_lists()
    item = old.item.copy()
    item[old.user == 0] = [9, 8, 7, 6]  # user 0: a new list; user 1: ranks 3, 4 swapped
    item[(old.user == 1) & (old.rank >= 3)] = item[(old.user == 1) & (old.rank >= 3)][::-1]
    new = TopLists(old.user, old.rank, item, old.score, old.probability, old.source)
    result = since_current(db_url, "r2", new, dataset(users, items), 2)
    assert result["against"] == "r1" and result["users_compared"] == 6 and result["new_users"] == 0
    assert result["jaccard@2"] == round(5 / 6, 6) and result["changed_share"] == round(2 / 6, 6)
    assert result["changed_share@2"] == round(1 / 6, 6)
    assert 4 / 6 < result["rbo"] < 5 / 6
    # user 0 gained items 6..9 (ids 118, 121, 124, 127) and lost 0..3 (ids 100..109)
    assert {e["item_id"] for e in result["entered"]} == {"118", "121", "124", "127"}
    assert {e["item_id"]: e["lists"] for e in result["left"]} == {"100": 1, "103": 1, "106": 1, "109": 1}
    assert result["entered"][0]["title"] == "Film 118"


def test_users_and_items_new_to_the_catalogue(db_url):
    users, items = id_maps()
    publish_run(db_url, run_info("r1"), make_lists(n_users=4), IdMap(users.ids[:4]), items)
    fewer_items = IdMap(items.ids[1:])  # item 100 is gone from the new catalogue
    lists = make_lists(n_items=9)
    result = since_current(db_url, "r2", lists, dataset(users, fewer_items), 4)
    assert result["users_compared"] == 4 and result["new_users"] == 2
    left = {e["item_id"]: e for e in result["left"]}
    assert left["100"]["lists"] == 1 and left["100"]["title"] is None


def test_republishing_keeps_the_comparison_made_before(db_url, tmp_path):
    users, items = id_maps()
    run = RunDir(tmp_path)
    publish_run(db_url, run_info("r1"), make_lists(), users, items)
    first = record_churn(db_url, run, "r2", make_lists(), dataset(users, items), 2)
    publish_run(db_url, run_info("r2"), make_lists(), users, items)
    again = record_churn(db_url, run, "r2", make_lists(), dataset(users, items), 2)
    assert first["against"] == "r1" and again == first == run.read_json("metrics.json")["churn"]
