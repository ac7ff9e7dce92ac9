"""k-NN batch-transform output: order, filtering, trimming, validation with file and line."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse as sp

from batch.aws import knn_output
from batch.aws.knn_output import KnnOutputError, knn_k, parse_knn_output
from batch.errors import ConfigError, DataError


def line(pairs: list[tuple[int, float]]) -> str:
    """A verbose k-NN line as SageMaker writes it: ascending by distance, float labels."""
    pairs = sorted(pairs, key=lambda p: p[1])
    return json.dumps({"predicted_label": 0.0, "distances": [d for _, d in pairs],
                       "labels": [float(i) for i, _ in pairs]}) + "\n"


def parse(lines, *, top=10, seen=None, deny=None, n_items=10, first_user=0, file="out/a.rec.out"):
    return parse_knn_output(lines, file=file, first_user=first_user, top=top, seen=seen,
                            deny=deny, n_items=n_items)


def rows(result) -> list[tuple[int, int, int, float]]:
    return [(int(u), int(r), int(i), float(s)) for u, r, i, s in zip(*result, strict=True)]


def test_best_inner_product_comes_first_although_sagemaker_lists_it_last():
    result = parse([line([(2, 0.1), (0, 0.5), (1, 0.9)])])
    assert rows(result) == [(0, 1, 1, pytest.approx(0.9)), (0, 2, 0, 0.5),
                            (0, 3, 2, pytest.approx(0.1))]
    user, rank, item, score = result
    assert (user.dtype, rank.dtype, item.dtype, score.dtype) == (np.int32, np.int32, np.int32,
                                                                 np.float32)


def test_seen_and_denied_items_are_dropped_and_lists_trimmed_to_top():
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]], np.float32))
    deny = np.zeros(6, bool)
    deny[3] = True
    lines = [line([(i, float(i)) for i in range(6)])] * 2
    got = rows(parse(lines, top=3, seen=seen, deny=deny, n_items=6))
    assert [(u, r, i) for u, r, i, _ in got] == [(0, 1, 4), (0, 2, 2), (0, 3, 0),
                                                 (1, 1, 5), (1, 2, 4), (1, 3, 2)]


def test_a_user_left_with_fewer_items_gets_what_exists():
    seen = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 0, 0, 0]]))
    got = rows(parse([line([(0, 3.0), (1, 2.0), (3, 1.0)]), line([(2, 1.0)])], top=3,
                     seen=seen, n_items=4))
    assert [(u, r, i) for u, r, i, _ in got] == [(0, 1, 3), (1, 1, 2)]


def test_users_with_no_items_left_have_no_rows_but_keep_later_users_aligned():
    got = rows(parse([line([(1, 1.0)]), line([]), line([(2, 5.0)])], seen=None,
                     deny=np.array([False, True, False, False]), n_items=4))
    assert [(u, r, i) for u, r, i, _ in got] == [(2, 1, 2)]


def test_ties_go_to_the_smaller_item_whatever_the_input_order():
    raw = json.dumps({"distances": [1.0, 1.0, 1.0, 0.5], "labels": [7.0, 2.0, 5.0, 9.0]})
    got = rows(parse([raw]))
    assert [i for _, _, i, _ in got] == [2, 5, 7, 9]


def test_scores_tie_at_float32_precision_and_are_published_as_float32():
    # different float64 values, one float32 value: a tie, so the smaller item wins
    raw = json.dumps({"distances": [0.1000000001, 0.1000000002], "labels": [4.0, 3.0]})
    got = parse([raw])
    assert got[2].tolist() == [3, 4] and got[3][0] == got[3][1] == np.float32(0.1)


@pytest.mark.parametrize("label, reason", [
    (2.5, "not an item index"), (-1.0, "not an item index"), (10.0, "not an item index"),
    (float(2**24), "below 16777216"),
])
def test_labels_must_be_item_indices(label, reason):
    lines = [line([(1, 1.0)]), json.dumps({"distances": [0.5], "labels": [label]})]
    with pytest.raises(KnnOutputError, match=reason) as caught:
        parse(lines, n_items=10 if label != 2**24 else 2**25)
    assert caught.value.line == 2 and caught.value.file == "out/a.rec.out"


def test_a_label_twice_in_a_line_is_an_error():
    with pytest.raises(KnnOutputError, match="item 3 is listed twice") as caught:
        parse([line([(1, 1.0)]), json.dumps({"distances": [0.1, 0.2], "labels": [3.0, 3.0]})])
    assert caught.value.line == 2


MALFORMED = [
    ("{not json", "not a JSON line"),
    ('[1, 2]', '"distances" and "labels"'),
    ('{"labels": [1.0]}', '"distances" and "labels"'),
    ('{"distances": [1.0]}', '"distances" and "labels"'),
    ('{"distances": 1.0, "labels": 1.0}', "must be lists"),
    ('{"distances": [1.0, 2.0], "labels": [1.0]}', "2 distances but 1 labels"),
    ('{"distances": ["1.0"], "labels": [1.0]}', '"distances" holds a value that is not a number'),
    ('{"distances": [true], "labels": [1.0]}', '"distances" holds a value'),
    ('{"distances": [1.0], "labels": [null]}', '"labels" holds a value'),
    ('{"distances": [[1.0]], "labels": [1.0]}', '"distances" holds a value'),
    ('{"distances": [1e999999999999], "labels": [1.0]}', "not a finite float32"),
    ('{"distances": [1e39], "labels": [1.0]}', "not a finite float32"),
    ('{"distances": [NaN], "labels": [1.0]}', "not a finite float32"),
    ('{"distances": [1.0], "labels": [NaN]}', "not an item index"),
    ('{"distances": [1.0], "labels": [' + "9" * 400 + "]}", '"labels" holds a value'),
]


@pytest.mark.parametrize("bad, reason", MALFORMED)
def test_malformed_lines_name_file_and_line(bad, reason):
    lines = [line([(1, 1.0)]), line([(2, 1.0)]), bad + "\n", line([(3, 1.0)])]
    with pytest.raises(KnnOutputError, match=reason) as caught:
        parse(lines, file="s3://bucket/run/users-0.rec.out")
    assert isinstance(caught.value, DataError)
    assert caught.value.file == "s3://bucket/run/users-0.rec.out" and caught.value.line == 3
    assert str(caught.value).startswith("s3://bucket/run/users-0.rec.out, line 3: ")


def test_errors_keep_their_line_across_chunks(monkeypatch):
    monkeypatch.setattr(knn_output, "_CHUNK_LINES", 4)
    lines = [line([(1, 1.0)])] * 9 + ['{"distances": [1.0], "labels": [1.0, 2.0]}']
    with pytest.raises(KnnOutputError) as caught:
        parse(lines)
    assert caught.value.line == 10


def test_a_blank_line_inside_the_file_is_an_error_but_trailing_ones_are_not():
    with pytest.raises(KnnOutputError, match="empty line") as caught:
        parse([line([(1, 1.0)]), "\n", line([(2, 1.0)])])
    assert caught.value.line == 2
    assert rows(parse([line([(1, 1.0)]), "\n", "  \n"])) == [(0, 1, 1, 1.0)]


def test_more_lines_than_users_is_an_error():
    seen = sp.csr_matrix((3, 10))
    lines = [line([(1, 1.0)])] * 3
    assert len(rows(parse(lines, seen=seen))) == 3
    with pytest.raises(KnnOutputError, match="only 3 users") as caught:
        parse(lines, seen=seen, first_user=1)
    assert caught.value.line == 3


def test_several_out_files_with_first_user_offsets_equal_one_file(monkeypatch):
    rng = np.random.default_rng(5)
    lines = [line([(int(i), float(s)) for i, s in zip(rng.choice(50, 8, replace=False),
                                                      rng.normal(size=8), strict=True)])
             for _ in range(30)]
    seen = sp.random(30, 50, density=0.1, format="csr", random_state=1)
    whole = parse(lines, top=5, seen=seen, n_items=50)
    monkeypatch.setattr(knn_output, "_CHUNK_LINES", 7)  # chunk borders must not show either
    parts = [parse(io.BytesIO("".join(lines[a:b]).encode()), top=5, seen=seen, n_items=50,
                   first_user=a, file=f"users-{a}.out") for a, b in ((0, 12), (12, 30))]
    for column, (x, y) in enumerate(zip(whole, parts[0], strict=True)):
        assert np.array_equal(np.concatenate([y, parts[1][column]]), x)
    assert set(parts[1][0].tolist()) <= set(range(12, 30))


def test_matches_a_plain_python_ranking_on_random_lists():
    rng = np.random.default_rng(11)
    n_users, n_items, top = 40, 30, 6
    seen = sp.random(n_users, n_items, density=0.15, format="csr", random_state=2)
    deny = rng.random(n_items) < 0.1
    lines, expected = [], []
    for user in range(n_users):
        items = rng.choice(n_items, 12, replace=False)
        scores = np.round(rng.normal(size=12), 1).astype(np.float32)  # rounding makes ties
        lines.append(line(list(zip(items.tolist(), scores.tolist(), strict=True))))
        kept = [(float(s), int(i)) for i, s in zip(items, scores, strict=True)
                if not deny[i] and seen[user, i] == 0]
        best = sorted(kept, key=lambda p: (-p[0], p[1]))[:top]
        expected += [(user, r + 1, i, s) for r, (s, i) in enumerate(best)]
    assert rows(parse(lines, top=top, seen=seen, deny=deny, n_items=n_items)) == expected


def test_empty_input_gives_empty_columns():
    user, rank, item, score = parse([])
    assert user.size == rank.size == item.size == score.size == 0 and score.dtype == np.float32


# ---------------------------------------------------------------------------- knn_k


def test_knn_k_adds_the_most_items_any_user_would_lose():
    seen = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]))
    assert knn_k(10, seen) == 13
    assert knn_k(10, None) == 10
    deny = np.array([False, False, True, True, False])
    assert knn_k(10, seen, deny=deny) == 14  # user 1: 3 seen + 1 more denied (item 2 overlaps)
    assert knn_k(10, seen, n_items=5) == 5


def test_knn_k_caps_at_1024_and_refuses_a_larger_top():
    seen = sp.csr_matrix(np.ones((2, 2000)))
    assert knn_k(100, seen) == 1024
    with pytest.raises(ConfigError, match="1024"):
        knn_k(1025, None)
    with pytest.raises(ConfigError):
        knn_k(0, None)
