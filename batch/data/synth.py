"""The embedded default data set: synthetic interactions with a planted truth.

Generative story (all of it drawn from ``seed``; see :func:`plant`):

1. Users and items get latent taste vectors ``p_u``, ``q_i`` (k=16, affinity ``p_u·q_i`` ~ N(0, 1)).
2. Item popularity is a power law over a random ranking of the items.
3. Each user has a heavy-tailed number of interactions ``n_u`` (at least ``holdout + 10``). The
   user is *exposed* to ``POOL × n_u`` items drawn by popularity (plus a little uniform
   exploration) and *chooses* ``n_u`` distinct ones among them by ``TASTE × affinity`` plus
   Gumbel noise. So both popularity and taste decide what a user rates: popularity is a strong
   baseline, but a model that learns tastes beats it.
4. A rating 1-5 is the true affinity plus an item bias (compared with the user's other
   items), plus a user bias and noise, cut at fixed thresholds; items chosen for taste rather
   than popularity get higher ratings.
5. Each user is active over a window; the order of their interactions follows a drift direction
   in taste space, so their latest interactions differ from their earlier ones.
6. Age, gender, occupation and zip are drawn from the user's latent vector; genres from the
   item's, so side features carry real (noisy) taste signal.

Users are generated chunk by chunk (each chunk about ``CHUNK_INTERACTIONS`` interactions, with
its own random stream), so memory stays bounded at 25M interactions and the bytes written
depend only on the arguments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from batch import storage
from batch.data import synth_files as files
from batch.errors import ConfigError
from batch.log import log, progress

FACTORS = 16
TASTE = 2.0  # weight of affinity against Gumbel(0, 1) noise when choosing among exposed items
POOL = 3.0  # items drawn for exposure per chosen item
EXPLORE = 0.05  # share of exposure drawn uniformly rather than by popularity
POP_EXPONENT = 1.0
POP_OFFSET = 0.003  # popularity ∝ (rank + POP_OFFSET × items)^-POP_EXPONENT; flattens the head
COUNT_SIGMA = 1.1  # lognormal spread of interactions per user (ml-100k: median 65, mean 106)
MAX_USER_SHARE = 0.5  # no user rates more than half the catalogue
RATING_CUTS = np.array([-1.75, -1.07, -0.16, 0.93])  # give ml-100k's shares 6/11/27/34/21%
T0 = 874_724_710  # 1997-09-20, the first ml-100k timestamp
SPAN = 2 * 365 * 86_400
CHUNK_INTERACTIONS = 250_000

INTERACTION_FILES = ("u.data", "ua.base", "ua.test")


@dataclass(frozen=True)
class Planted:
    """The hidden truth behind a synthetic data set (internal 0-based indices).

    ``user_factors`` (users, k) and ``item_factors`` (items, k): float64 latent tastes;
    ``exposure`` (items,): float64 probabilities (sum 1) of drawing each item for exposure;
    ``counts`` (users,): int64 interactions per user; ``user_bias`` (users,), ``item_bias``
    (items,): float64 rating offsets; ``trend`` (k,): float64 common drift direction (unit).
    Unit directions in taste space that side features are drawn along, float64:
    ``occupation_directions`` (21, k), ``region_directions`` (10, k) (zip code's first digit),
    ``genre_directions`` (19, k).
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    exposure: np.ndarray
    counts: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    trend: np.ndarray
    occupation_directions: np.ndarray
    region_directions: np.ndarray
    genre_directions: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_factors)

    @property
    def n_items(self) -> int:
        return len(self.item_factors)

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True affinity ``p_u·q_i`` of each (users[j], items[j]) pair: float64 (n,)."""
        return np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Oracle ranking scores, float64 (len(users), items): the log-probability that the
        generative process makes each user interact with each item. Higher means more likely.

        P = P(exposed) × P(chosen | exposed), where P(exposed) = 1 - (1 - e_i)^draws and an
        exposed item is chosen when ``TASTE × affinity + Gumbel`` beats the user's cut τ_u,
        i.e. with probability 1 - exp(-exp(TASTE × affinity - τ_u)); τ_u is solved by
        bisection so that the expected number chosen equals ``counts[u]``.
        """
        draws = np.ceil(POOL * self.counts[users])[:, None]
        exposed = -np.expm1(draws * np.log1p(-self.exposure)[None, :])
        strength = np.exp(TASTE * (self.user_factors[users] @ self.item_factors.T))
        lo, hi = np.full((len(users), 1), -50.0), np.full((len(users), 1), 50.0)
        for _ in range(40):  # 100 / 2**40: far finer than any score gap
            tau = (lo + hi) / 2
            chosen = (exposed * -np.expm1(-strength * np.exp(-tau))).sum(axis=1, keepdims=True)
            too_many = chosen > self.counts[users][:, None]
            lo, hi = np.where(too_many, tau, lo), np.where(too_many, hi, tau)
        return np.log(exposed) + np.log(-np.expm1(-strength * np.exp(-(lo + hi) / 2)))


def plant(users: int, items: int, interactions: int, seed: int = 0, holdout: int = 10) -> Planted:
    """The planted truth for these arguments, exactly as :func:`generate` draws it."""
    low, high = _count_bounds(users, items, interactions, seed, holdout)
    rng = _rng(seed, 0)
    scale = FACTORS ** -0.25  # so that p·q has unit variance
    user_factors = rng.normal(0.0, scale, (users, FACTORS))
    item_factors = rng.normal(0.0, scale, (items, FACTORS))
    exposure = _exposure(rng, items)
    counts = _counts(rng, users, interactions, low, high)
    log_pop = np.log(exposure)
    # Popular items are rated a little higher, as on real data.
    item_bias = 0.3 * (log_pop - log_pop.mean()) / log_pop.std() + rng.normal(0, 0.35, items)
    user_bias = rng.normal(0, 0.35, users)
    trend, occupation, region, genre = (_unit(rng, n) for n in (1, len(files.OCCUPATIONS), 10,
                                                                  len(files.GENRES)))
    return Planted(user_factors, item_factors, exposure, counts, user_bias, item_bias, trend[0],
                   occupation, region, genre)


def generate(out_dir: str | Path, *, users: int = 943, items: int = 1682,
             interactions: int = 100_000, seed: int = 0, holdout: int = 10) -> dict:
    """Write a synthetic data set in the MovieLens-100k layout to ``out_dir``.

    Writes u.data (user, then time order), ua.base / ua.test (user, then item order; ua.test
    holds exactly ``holdout`` random ratings per user), u.user, u.item, u.genre, u.occupation
    and README. Same arguments, same bytes. Returns a summary dict for the CLI.
    """
    started = time.monotonic()
    if storage.is_s3(out_dir):
        raise ConfigError(f"synthetic data is written to a local directory; got {out_dir}")
    truth = plant(users, items, interactions, seed, holdout)
    out = Path(out_dir)
    bounds = _chunks(truth.counts)
    names = INTERACTION_FILES + ("u.user",)
    n_test = 0
    with files.atomic_files(out, names) as handles:
        for c, (u0, u1) in enumerate(progress(bounds, desc="synth", unit="chunk")):
            n_test += _write_chunk(handles, truth, _rng(seed, 1, c), u0, u1, holdout)
            handles["u.user"].write(_user_chunk(truth, _rng(seed, 2, c), u0, u1))
    summary = {"out": str(out), "users": users, "items": items, "interactions": interactions,
               "base": interactions - n_test, "test": n_test, "seed": seed, "holdout": holdout}
    _write_catalogue(out, truth, seed, summary)
    summary["seconds"] = round(time.monotonic() - started, 3)
    log.info("wrote synthetic data set: %d users, %d items, %d interactions to %s",
             users, items, interactions, out)
    return summary


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random unit vectors in taste space: float64 (n, k)."""
    v = rng.normal(size=(n, FACTORS))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _count_bounds(users: int, items: int, interactions: int, seed: int,
                  holdout: int) -> tuple[int, int]:
    """Smallest and largest interactions per user; checks the arguments can be satisfied."""
    for name, value in (("users", users), ("items", items), ("interactions", interactions)):
        if value <= 0:
            raise ConfigError(f"synthetic data: {name} must be > 0; got {value}")
    if seed < 0 or holdout < 1:
        raise ConfigError(f"synthetic data: seed must be ≥ 0 and holdout ≥ 1; got {seed}, "
                          f"{holdout}")
    low, high = holdout + 10, int(MAX_USER_SHARE * items)
    if not users * low <= interactions <= users * high:
        raise ConfigError(
            f"synthetic data: {interactions} interactions cannot give {users} users between "
            f"{low} and {high} items each (at least {holdout} held out + 10, at most half of "
            f"{items} items)")
    return low, high


def _exposure(rng: np.random.Generator, items: int) -> np.ndarray:
    """Exposure probabilities (items,) float64: a power law over a random item ranking, mixed
    with a uniform share so every item can be found."""
    rank = rng.permutation(items)
    pop = (rank + 1.0 + POP_OFFSET * items) ** -POP_EXPONENT
    return (1.0 - EXPLORE) * pop / pop.sum() + EXPLORE / items


def _counts(rng: np.random.Generator, users: int, total: int, low: int, high: int) -> np.ndarray:
    """Heavy-tailed interactions per user: int64 (users,), each in [low, high], summing to total.

    Lognormal weights share out the interactions above ``low``; users at ``high`` stop taking,
    and what remains after rounding down goes one each to the heaviest users with room.
    """
    weights = rng.lognormal(0.0, COUNT_SIGMA, users)
    counts = np.full(users, low, dtype=np.int64)
    left = total - users * low
    while left > 0:
        room = high - counts
        w = np.where(room > 0, weights, 0.0)
        add = np.minimum(np.floor(w / w.sum() * left).astype(np.int64), room)
        if not add.any():
            add[np.argsort(-w, kind="stable")[:left]] = 1
        counts += add
        left -= int(add.sum())
    return counts


def _chunks(counts: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive user ranges [u0, u1) of about CHUNK_INTERACTIONS interactions each."""
    chunk_of = (np.cumsum(counts) - counts) // CHUNK_INTERACTIONS
    starts = np.flatnonzero(np.diff(chunk_of, prepend=-1))
    return list(zip(starts.tolist(), np.append(starts[1:], len(counts)).tolist(), strict=True))


def _write_chunk(handles: dict, truth: Planted, rng: np.random.Generator, u0: int, u1: int,
                 holdout: int) -> int:
    """Sample users [u0, u1) and append their rows to u.data, ua.base and ua.test; returns the
    number of test rows."""
    user, item = _choose(truth, rng, u0, u1)
    rating = _ratings(truth, rng, user, item)
    stamp = _timestamps(truth, rng, user, item, u0)
    test = _rank_in_user(user - u0, rng.random(len(user))) < holdout
    ids = (user + 1, item + 1, rating, stamp)
    by_time = np.argsort((user - u0) * (SPAN + 1) + (stamp - T0), kind="stable")
    handles["u.data"].write(files.format_rows([c[by_time] for c in ids]))
    handles["ua.base"].write(files.format_rows([c[~test] for c in ids]))
    handles["ua.test"].write(files.format_rows([c[test] for c in ids]))
    return int(test.sum())


def _choose(truth: Planted, rng: np.random.Generator, u0: int,
            u1: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct chosen items: (user, item) int64 arrays sorted by user then item.

    Exposure draws are deduplicated per user (topped up uniformly for a user left with fewer
    distinct items than they choose); then each user keeps their ``n_u`` best by
    ``TASTE × affinity + Gumbel`` noise, i.e. a Plackett-Luce sample over the exposed items.
    """
    n = truth.counts[u0:u1]
    local = np.repeat(np.arange(len(n)), np.ceil(POOL * n).astype(np.int64))
    drawn = np.searchsorted(np.cumsum(truth.exposure), rng.random(len(local)), side="right")
    keys = np.sort(local * truth.n_items + np.minimum(drawn, truth.n_items - 1))
    keys = _top_up(keys[np.diff(keys, prepend=-1) != 0], n, truth.n_items, rng)
    local, item = np.divmod(keys, truth.n_items)
    score = TASTE * truth.affinity(local + u0, item) + rng.gumbel(size=len(keys))
    keep = np.sort(np.flatnonzero(_rank_in_user(local, -score) < n[local]))
    return local[keep] + u0, item[keep]


def _top_up(keys: np.ndarray, n: np.ndarray, items: int, rng: np.random.Generator) -> np.ndarray:
    """Add uniform draws until every user has at least ``n`` distinct exposed items.

    ``keys``: sorted unique int64 ``user × items + item``; returns the same, extended."""
    while True:
        have = np.bincount(keys // items, minlength=len(n))
        short = np.flatnonzero(have < n)
        if not len(short):
            return keys
        user = np.repeat(short, 2 * (n[short] - have[short]))
        keys = np.union1d(keys, user * items + rng.integers(0, items, len(user)))


def _rank_in_user(local: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Rank (0 = smallest key) of each row among the rows of its user: int64 (n,).

    ``local``: sorted non-negative int64 user indices (small: chunk-local); ``key``: float64.
    One float sort instead of a two-key lexsort (several times faster): the key is squashed
    monotonically into (0.0005, 0.9995) and added to the user index.
    """
    order = np.argsort(local + 0.999 * (0.5 + np.arctan(key) / np.pi))
    sizes = np.bincount(local)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)  # start of each sorted row's user group
    rank = np.empty(len(local), dtype=np.int64)
    rank[order] = np.arange(len(local)) - first
    return rank


def _ratings(truth: Planted, rng: np.random.Generator, user: np.ndarray,
             item: np.ndarray) -> np.ndarray:
    """Ratings 1-5 (int64), ``user`` sorted: affinity plus item bias, centred per user (users
    rate an item against the others they chose, so the rating scale does not drift with the
    catalogue size), plus the user's bias and noise, cut at RATING_CUTS."""
    core = 0.8 * truth.affinity(user, item) + truth.item_bias[item]
    local = user - user[0]
    core -= (np.bincount(local, core) / np.bincount(local))[local]
    z = core + truth.user_bias[user] + rng.normal(0.0, 0.7, len(user))
    return 1 + np.searchsorted(RATING_CUTS, z)


def _timestamps(truth: Planted, rng: np.random.Generator, user: np.ndarray, item: np.ndarray,
                u0: int) -> np.ndarray:
    """Unix seconds (int64): each user is active over a window starting within the first 80%
    of SPAN; their items are ordered along a per-user drift direction (the common trend plus a
    personal part) plus noise, so later items differ from earlier ones."""
    local = user - u0
    m = int(local[-1]) + 1
    start = T0 + rng.random(m) * SPAN * 0.8
    length = np.minimum(T0 + SPAN - start, 86_400 * rng.lognormal(np.log(60.0), 1.2, m))
    drift = truth.trend + rng.normal(0.0, 0.7 / np.sqrt(FACTORS), (m, FACTORS))
    drift /= np.linalg.norm(drift, axis=1, keepdims=True)
    along = np.einsum("ij,ij->i", drift[local], truth.item_factors[item]) * FACTORS ** 0.25
    slot = _rank_in_user(local, along + rng.normal(0.0, 1.0, len(user)))
    when = rng.random(len(user))
    when = np.sort(local + 0.999 * when)  # ascending inside each user's run of rows
    when = (when - local) / 0.999
    offset = when[np.searchsorted(local, local) + slot]  # the slot-th earliest time of the user
    return (start[local] + offset * length[local]).astype(np.int64)


def _user_chunk(truth: Planted, rng: np.random.Generator, u0: int, u1: int) -> bytes:
    """u.user lines for users [u0, u1), features drawn from each user's latent vector."""
    z = truth.user_factors[u0:u1] * FACTORS ** 0.25  # standard normal coordinates
    n = u1 - u0
    age = np.clip(np.rint(34 + 12 * (0.8 * z[:, 0] + 0.6 * rng.normal(size=n))), 7, 73)
    male = rng.random(n) < 1 / (1 + np.exp(-(0.9 + 1.0 * z[:, 1])))
    occ_logits = np.log(files.OCCUPATION_SHARE) + 1.5 * z @ truth.occupation_directions.T
    occupation = np.argmax(occ_logits + rng.gumbel(size=occ_logits.shape), axis=1)
    region = np.argmax(z @ truth.region_directions.T + rng.gumbel(size=(n, 10)), axis=1)
    zipcode = region * 10_000 + rng.integers(0, 10_000, n)
    ids = np.arange(u0 + 1, u1 + 1)
    return files.user_lines(ids, age.astype(np.int64), male, occupation, zipcode)


def _write_catalogue(out: Path, truth: Planted, seed: int, summary: dict) -> None:
    """u.item, u.genre, u.occupation and README (small: one item per line, no user data)."""
    rng = _rng(seed, 3)
    genres = _genres(truth, rng)
    ids = np.arange(1, truth.n_items + 1)
    # Release years skew recent (ml-100k is mostly 1990s films); days since 1970-01-01.
    years = np.clip(1998 - np.floor(rng.exponential(8.0, truth.n_items)), 1922, 1998).astype(int)
    jan1 = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    released = jan1 + rng.integers(0, 365, truth.n_items)
    titles = files.item_titles(rng, ids, years)
    contents = {"u.item": files.item_lines(ids, titles, released, genres),
                "u.genre": files.genre_file(), "u.occupation": files.occupation_file(),
                "README": files.readme(summary)}
    with files.atomic_files(out, tuple(contents)) as handles:
        for name, data in contents.items():
            handles[name].write(data)


def _genres(truth: Planted, rng: np.random.Generator) -> np.ndarray:
    """Multi-hot genres (items, 19) bool: genre g is set when the item's projection on a random
    direction h_g plus noise passes the cut giving ml-100k's share of g; at least one each."""
    proj = (truth.item_factors * FACTORS ** 0.25) @ truth.genre_directions.T
    noisy = proj + 0.7 * rng.normal(size=proj.shape)
    share = np.clip(np.array(files.GENRE_SHARE), 1e-9, None)
    cut = np.sqrt(1 + 0.7**2) * np.array([NormalDist().inv_cdf(1 - s) for s in share])
    flags = noisy > cut
    flags[:, 0] = False  # "unknown"
    none = ~flags.any(axis=1)
    flags[none, 1 + np.argmax(noisy[none, 1:], axis=1)] = True
    return flags
