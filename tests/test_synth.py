"""The synthetic data set: MovieLens-100k layout, determinism, and the planted signal.

The files are parsed here with plain regexes and numpy (not with topx's reader), so this test
pins the layout independently of the ingest code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from batch import cli
from batch.data import synth
from batch.data.synth_files import GENRES, OCCUPATIONS, format_rows
from batch.errors import ConfigError

USERS, ITEMS, N, HOLDOUT = 943, 1682, 100_000, 10
ROW = re.compile(rb"[1-9]\d*\t[1-9]\d*\t[1-5]\t\d{9,10}")
ALL_FILES = {"u.data", "ua.base", "ua.test", "u.user", "u.item", "u.genre", "u.occupation",
             "README"}


@pytest.fixture(scope="module")
def ml(tmp_path_factory) -> Path:
    """A default-sized data set, generated in several chunks so chunk seams are exercised."""
    out = tmp_path_factory.mktemp("synth") / "ml"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synth, "CHUNK_INTERACTIONS", 20_000)
        synth.generate(out, users=USERS, items=ITEMS, interactions=N, seed=0, holdout=HOLDOUT)
    return out


def rows(path: Path) -> np.ndarray:
    """(n, 4) int64 of user, item, rating, timestamp; every line must match the ml-100k form."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    bad = [line for line in data[:-1].split(b"\n") if not ROW.fullmatch(line)]
    assert not bad, f"{path.name}: malformed lines {bad[:3]}"
    return np.loadtxt(path, dtype=np.int64, delimiter="\t").reshape(-1, 4)


def pairs(r: np.ndarray) -> np.ndarray:
    return r[:, 0] * (ITEMS + 1) + r[:, 1]


def test_writes_exactly_the_movielens_files(ml):
    assert {p.name for p in ml.iterdir()} == ALL_FILES
    assert "SYNTHETIC" in (ml / "README").read_text()


def test_interaction_files_partition_u_data(ml):
    data, base, test = rows(ml / "u.data"), rows(ml / "ua.base"), rows(ml / "ua.test")
    assert len(data) == N and len(base) + len(test) == N
    assert len(np.unique(pairs(data))) == N  # no repeated (user, item)
    both = np.concatenate([base, test])
    np.testing.assert_array_equal(np.sort(pairs(both)), np.sort(pairs(data)))
    assert not np.intersect1d(pairs(base), pairs(test)).size
    by_pair = lambda r: r[np.argsort(pairs(r))]  # noqa: E731
    np.testing.assert_array_equal(by_pair(both), by_pair(data))  # same rating and time per pair


def test_ids_ratings_and_orders(ml):
    data, base, test = rows(ml / "u.data"), rows(ml / "ua.base"), rows(ml / "ua.test")
    assert set(np.unique(data[:, 0])) == set(range(1, USERS + 1))
    assert data[:, 1].min() >= 1 and data[:, 1].max() <= ITEMS
    assert set(np.unique(data[:, 2])) == {1, 2, 3, 4, 5}
    for r in (base, test):  # ua.* sorted by user then item, like the real files
        assert np.all(np.diff(pairs(r)) > 0)
    key = data[:, 0] * 10**10 + data[:, 3]
    assert np.all(np.diff(key) >= 0)  # u.data: by user, then time


def test_every_user_has_exactly_holdout_test_ratings(ml):
    test, data = rows(ml / "ua.test"), rows(ml / "u.data")
    np.testing.assert_array_equal(np.bincount(test[:, 0], minlength=USERS + 1)[1:], HOLDOUT)
    per_user = np.bincount(data[:, 0], minlength=USERS + 1)[1:]
    assert per_user.min() >= HOLDOUT + 10
    assert per_user.max() > 4 * np.median(per_user)  # heavy tail


def test_popularity_is_skewed_and_ratings_look_like_movielens(ml):
    data = rows(ml / "u.data")
    counts = np.sort(np.bincount(data[:, 1], minlength=ITEMS + 1)[1:])[::-1]
    assert counts[: ITEMS // 10].sum() > 0.25 * N  # uniform would give 10%
    share = np.bincount(data[:, 2], minlength=6)[1:] / N
    assert np.all(share > 0.03) and 3.3 < data[:, 2].mean() < 3.8  # ml-100k: mean 3.53


def test_user_file(ml):
    lines = (ml / "u.user").read_text(encoding="ascii").splitlines()
    assert len(lines) == USERS
    occupations = set((ml / "u.occupation").read_text().split())
    assert occupations == set(OCCUPATIONS)
    for k, line in enumerate(lines, start=1):
        uid, age, gender, occupation, zipcode = line.split("|")
        assert int(uid) == k and 7 <= int(age) <= 73
        assert gender in ("M", "F") and occupation in occupations
        assert re.fullmatch(r"\d{5}", zipcode)


def test_item_file_is_latin1_with_genre_flags(ml):
    raw = (ml / "u.item").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # it is latin-1, like ml-100k's u.item
    lines = raw.decode("latin-1").splitlines()
    assert len(lines) == ITEMS and any("é" in line for line in lines)
    date = re.compile(r"\d\d-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{4}")
    for k, line in enumerate(lines, start=1):
        fields = line.split("|")
        assert len(fields) == 5 + 19 and int(fields[0]) == k
        assert date.fullmatch(fields[2]) and fields[3] == ""
        assert set(fields[5:]) <= {"0", "1"} and "1" in fields[5:]
    genre_lines = (ml / "u.genre").read_text().splitlines()
    assert genre_lines[-1] == "" and genre_lines[:-1] == [f"{g}|{k}" for k, g in enumerate(GENRES)]


def test_same_arguments_same_bytes(tmp_path):
    args = dict(users=120, items=300, interactions=6_000, seed=7, holdout=5)
    synth.generate(tmp_path / "a", **args)
    synth.generate(tmp_path / "b", **args)
    synth.generate(tmp_path / "c", **{**args, "seed": 8})
    for name in ALL_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "u.data").read_bytes() != (tmp_path / "c" / "u.data").read_bytes()
    assert len(rows(tmp_path / "a" / "ua.test")) == 120 * 5


@pytest.mark.parametrize("kwargs", [
    dict(users=100, items=500, interactions=1_999),  # fewer than 20 per user
    dict(users=10, items=30, interactions=300),  # half the catalogue is less than 20
    dict(users=0, items=30, interactions=300),
    dict(users=10, items=300, interactions=300, seed=-1),
])
def test_impossible_sizes_are_refused(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        synth.generate(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_s3_destinations_are_refused():
    with pytest.raises(ConfigError, match="local directory"):
        synth.generate("s3://bucket/synth", users=10, items=100, interactions=300)


def hit_rate(scores: np.ndarray, seen: np.ndarray, test: np.ndarray, k: int = 10) -> float:
    """Share of users with at least one test item among their top k unseen items."""
    top = np.argpartition(-np.where(seen, -np.inf, scores), k, axis=1)[:, :k]
    return float((np.take_along_axis(test, top, axis=1).sum(axis=1) > 0).mean())


def test_planted_tastes_beat_popularity_which_beats_random(ml):
    base, test = rows(ml / "ua.base") - [1, 1, 0, 0], rows(ml / "ua.test") - [1, 1, 0, 0]
    seen, held = np.zeros((USERS, ITEMS), bool), np.zeros((USERS, ITEMS), bool)
    seen[base[:, 0], base[:, 1]] = True
    held[test[:, 0], test[:, 1]] = True
    truth = synth.plant(USERS, ITEMS, N, seed=0, holdout=HOLDOUT)
    oracle = hit_rate(truth.scores(np.arange(USERS)), seen, held)
    counts = np.bincount(base[:, 1], minlength=ITEMS)
    popular = hit_rate(np.broadcast_to(counts, (USERS, ITEMS)), seen, held)
    chance = hit_rate(np.random.default_rng(0).random((USERS, ITEMS)), seen, held)
    assert oracle > popular + 0.1, (oracle, popular)
    assert popular > 4 * chance, (popular, chance)


def test_features_correlate_with_tastes(ml):
    truth = synth.plant(USERS, ITEMS, N, seed=0, holdout=HOLDOUT)
    z = truth.user_factors * synth.FACTORS**0.25
    users = [line.split("|") for line in (ml / "u.user").read_text().splitlines()]
    age = np.array([int(u[1]) for u in users])
    male = np.array([u[2] == "M" for u in users])
    assert np.corrcoef(age, z[:, 0])[0, 1] > 0.5
    assert male[z[:, 1] > 0].mean() - male[z[:, 1] < 0].mean() > 0.15
    occupation = np.array([u[3] for u in users])
    assert _grouping_gain(z, occupation) > 0.08  # shuffled labels: about ±0.01
    items = (ml / "u.item").read_text(encoding="latin-1").splitlines()
    genres = np.array([[f == "1" for f in line.split("|")[5:]] for line in items])
    q = truth.item_factors * synth.FACTORS**0.25
    for g in (1, 5, 8, 14, 16):  # Action, Comedy, Drama, Romance, Thriller
        assert _grouping_gain(q, genres[:, g]) > 0.04, GENRES[g]  # shuffled: ±0.01


def _grouping_gain(x: np.ndarray, group: np.ndarray) -> float:
    """How much closer rows are to their own group's mean direction than under a random
    relabelling of the groups (which keeps the small-group bias out of the comparison)."""
    shuffled = np.random.default_rng(0).permutation(group)
    return _closeness_to_group(x, group) - _closeness_to_group(x, shuffled)


def _closeness_to_group(x: np.ndarray, group: np.ndarray) -> float:
    """Mean cosine similarity of each row to its group's mean direction."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    closeness = np.empty(len(x))
    for g in np.unique(group):
        members = group == g
        centre = unit[members].mean(axis=0)
        closeness[members] = unit[members] @ centre / np.linalg.norm(centre)
    return float(closeness.mean())


def test_later_interactions_drift_along_the_trend(ml):
    data = rows(ml / "u.data") - [1, 1, 0, 0]  # by user, then time
    truth = synth.plant(USERS, ITEMS, N, seed=0, holdout=HOLDOUT)
    along = truth.item_factors[data[:, 1]] @ truth.trend
    sizes = np.bincount(data[:, 0], minlength=USERS)
    position = np.arange(N) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    late = position >= np.repeat(sizes, sizes) / 2
    assert along[late].mean() - along[~late].mean() > 0.1


def test_format_rows_matches_python_formatting():
    rng = np.random.default_rng(1)
    cols = [rng.integers(0, 10**k, 500) for k in (1, 3, 10)] + [np.array([0, 9, 10] + [99] * 497)]
    expected = "".join("\t".join(map(str, r)) + "\n" for r in zip(*(c.tolist() for c in cols),
                                                                   strict=True))
    assert format_rows(cols) == expected.encode()
    assert format_rows([np.array([], np.int64)]) == b""


def test_cli_synth_writes_the_data_set_and_a_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOPX_DATA_SYNTH_ITEMS", "400")  # config applies, options override it
    assert cli.main(["data", "synth", "--out", str(tmp_path / "d"), "--users", "60",
                     "--interactions", "3000", "--seed", "4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["command"] == "data synth"
    assert (summary["users"], summary["items"], summary["interactions"]) == (60, 400, 3000)
    assert summary["test"] == 60 * 10
    synth.generate(tmp_path / "lib", users=60, items=400, interactions=3000, seed=4)
    assert (tmp_path / "d" / "u.data").read_bytes() == (tmp_path / "lib" / "u.data").read_bytes()


def test_cli_synth_reports_impossible_sizes(tmp_path, capsys):
    code = cli.main(["data", "synth", "--out", str(tmp_path), "--users", "100",
                     "--interactions", "100"])
    assert code == 2
    assert "cannot give 100 users" in capsys.readouterr().err
