"""Writing a synthetic data set in the MovieLens-100k file layout.

The vocabulary (genres, occupations) and line formats are those of the real ml-100k files, so
the MovieLens reader reads a synthetic directory exactly as it reads the real one. Interaction
rows are formatted with numpy (no per-row Python), which keeps 25M rows fast.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

# u.genre order; the share of ml-100k items flagged with each genre ("unknown" is never set here).
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
          "Sci-Fi", "Thriller", "War", "Western")
GENRE_SHARE = (0.0, 0.15, 0.08, 0.025, 0.073, 0.30, 0.065, 0.03, 0.43, 0.013, 0.014, 0.055,
               0.033, 0.036, 0.147, 0.06, 0.149, 0.042, 0.016)

# u.occupation order and the share of ml-100k users in each.
OCCUPATIONS = ("administrator", "artist", "doctor", "educator", "engineer", "entertainment",
               "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none",
               "other", "programmer", "retired", "salesman", "scientist", "student", "technician",
               "writer")
OCCUPATION_SHARE = (0.084, 0.03, 0.007, 0.1, 0.071, 0.019, 0.034, 0.017, 0.007, 0.013, 0.054,
                    0.028, 0.01, 0.111, 0.07, 0.015, 0.013, 0.033, 0.208, 0.029, 0.048)

# Title words; a few carry latin-1 letters so readers must decode u.item as latin-1, as for ml-100k.
_ADJECTIVES = ("Silent", "Last", "Crimson", "Lost", "Broken", "Golden", "Hidden", "Wild", "Frozen",
               "Secret", "Eternal", "Distant", "Señor", "Dernière", "Café", "Midnight")
_NOUNS = ("River", "Garden", "Empire", "Stranger", "Harbor", "Machine", "Summer", "Witness",
          "Kingdom", "Noël", "Rendez-vous", "Mirror", "Highway", "Crusade", "Déjà Vu", "Orchard")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_DIGITS = np.int64(10) ** np.arange(19, dtype=np.int64)


def format_rows(columns: Sequence[np.ndarray], sep: str = "\t") -> bytes:
    """ASCII lines of non-negative integers, one row per index: ``c0<sep>c1...\\n``.

    ``columns``: equal-length 1-D integer arrays (converted to int64). Equivalent to
    ``"".join(f"{a}\\t{b}...\\n")`` but vectorised: each digit position is one numpy pass.
    """
    cols = [np.asarray(c, dtype=np.int64) for c in columns]
    if not len(cols[0]):
        return b""
    if any(int(c.min()) < 0 for c in cols):
        raise ValueError("format_rows writes non-negative integers only")
    widths = [np.searchsorted(_DIGITS, c, side="right").clip(min=1) for c in cols]
    row_len = np.sum(widths, axis=0) + len(cols)  # one separator or newline per field
    ends = np.cumsum(row_len)
    out = np.full(int(ends[-1]), ord(sep), dtype=np.uint8)
    out[ends - 1] = ord("\n")
    start = ends - row_len
    for col, width in zip(cols, widths, strict=True):
        last = start + width - 1
        for d in range(int(width.max())):
            has = np.nonzero(width > d)[0]
            out[last[has] - d] = 48 + (col[has] // _DIGITS[d]) % 10
        start = start + width + 1
    return out.tobytes()


def user_lines(ids: np.ndarray, age: np.ndarray, male: np.ndarray, occupation: np.ndarray,
               zipcode: np.ndarray) -> bytes:
    """u.user lines ``id|age|gender|occupation|zip``. ``ids``, ``age``: int arrays; ``male``:
    bool; ``occupation``: indices into :data:`OCCUPATIONS`; ``zipcode``: ints < 100000."""
    rows = zip(ids.tolist(), age.tolist(), male.tolist(), occupation.tolist(), zipcode.tolist(),
               strict=True)
    lines = [f"{u}|{a}|{'M' if m else 'F'}|{OCCUPATIONS[o]}|{z:05d}\n" for u, a, m, o, z in rows]
    return "".join(lines).encode("ascii")


def item_titles(rng: np.random.Generator, ids: np.ndarray, years: np.ndarray) -> list[str]:
    """Made-up titles ``"<Adjective> <Noun> #<id> (<year>)"``, unique through the id."""
    adj = rng.integers(0, len(_ADJECTIVES), len(ids)).tolist()
    noun = rng.integers(0, len(_NOUNS), len(ids)).tolist()
    return [f"{_ADJECTIVES[a]} {_NOUNS[n]} #{i} ({y})"
            for a, n, i, y in zip(adj, noun, ids.tolist(), years.tolist(), strict=True)]


def item_lines(ids: np.ndarray, titles: list[str], released: np.ndarray,
               genres: np.ndarray) -> bytes:
    """u.item lines in latin-1: ``id|title|release date|video release date|url|`` + 19 flags.

    ``released``: days since 1970-01-01 (int), written like ml-100k as ``01-Jan-1995``;
    ``genres``: (n, 19) bool, columns in :data:`GENRES` order.
    """
    epoch = dt.date(1970, 1, 1)
    flags = ["|".join(row) for row in np.where(genres, "1", "0").tolist()]
    lines = []
    for i, title, day, flag in zip(ids.tolist(), titles, released.tolist(), flags, strict=True):
        d = epoch + dt.timedelta(days=day)
        date = f"{d.day:02d}-{_MONTHS[d.month - 1]}-{d.year}"
        lines.append(f"{i}|{title}|{date}||http://example.invalid/topx-synthetic/item/{i}|{flag}\n")
    return "".join(lines).encode("latin-1")


def genre_file() -> bytes:
    """u.genre: ``name|index`` lines and a trailing blank line, as in ml-100k."""
    return ("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n").encode("ascii")


def occupation_file() -> bytes:
    """u.occupation: one occupation name per line."""
    return "".join(f"{o}\n" for o in OCCUPATIONS).encode("ascii")


def readme(summary: dict) -> bytes:
    """A README saying what the directory is and how it was made."""
    keys = ("users", "items", "interactions", "seed", "holdout")
    params = ", ".join(f"{k}={summary[k]}" for k in keys)
    return (
        "SYNTHETIC DATA SET generated by topx (`topx data synth`); not real MovieLens data.\n\n"
        f"Parameters: {params}.\n\n"
        "Files follow the MovieLens 100k layout: u.data and ua.base/ua.test (tab-separated\n"
        "user, item, rating 1-5, unix timestamp; ua.test holds exactly `holdout` ratings per\n"
        "user), u.user (id|age|gender|occupation|zip), u.item (latin-1, id|title|release date|\n"
        "video release date|url| + 19 genre flags), u.genre and u.occupation.\n\n"
        "Users and items have planted latent taste vectors. Which items a user rates depends on\n"
        "a power-law item popularity and on taste; ratings come from the true affinity plus\n"
        "noise; ages, genders, occupations, zip codes and genres are drawn from the latent\n"
        "vectors, so they correlate with tastes. Later interactions of a user drift along a\n"
        "per-user direction, so a leave-last-N split is harder than a random one.\n"
    ).encode("ascii")


@contextmanager
def atomic_files(directory: Path, names: Sequence[str]) -> Iterator[dict[str, IO[bytes]]]:
    """Open ``directory/<name>.part`` for each name; on success rename every part into place,
    on any error delete them, so a failed run never leaves a half-written file behind."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = {name: directory / f"{name}.part" for name in names}
    handles: dict[str, IO[bytes]] = {}
    try:
        for name, part in parts.items():
            handles[name] = open(part, "wb")
        yield handles
        for handle in handles.values():
            handle.close()
        for name, part in parts.items():
            os.replace(part, directory / name)
    finally:
        for handle in handles.values():
            handle.close()
        for part in parts.values():
            part.unlink(missing_ok=True)
