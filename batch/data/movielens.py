"""The MovieLens layouts published by GroupLens.

* 100k: ``u.data`` / ``ua.base`` / ``ua.test`` (tab: user, item, rating, timestamp),
  ``u.user`` (``id|age|gender|occupation|zip``), ``u.item`` (``id|title|release date|video
  release date|url|`` + one 0/1 flag per genre, latin-1), optional ``u.genre`` (``name|index``)
  and ``u.occupation`` (one name a line).
* 1M: ``ratings.dat`` (``user::item::rating::timestamp``), ``users.dat``
  (``UserID::Gender::Age::Occupation::Zip-code``, age and occupation as codes) and
  ``movies.dat`` (``MovieID::Title::Genres``, genres ``|``-separated, latin-1).
* latest (ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m): ``ratings.csv``
  (``userId,movieId,rating,timestamp`` with a header) and ``movies.csv``
  (``movieId,title,genres``, CSV-quoted titles, UTF-8); no user catalogue.

Users get ``age=<bucket>``, ``gender=…``, ``occupation=…`` and ``zip=<first character>``
one-hot features; items get ``genre=…`` multi-hot and ``decade=1990s`` one-hot features.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from batch.config import ColumnMap, DataConfig
from batch.data.delimited import LINE, Check, Field, TextTable, read_all
from batch.data.features import SideTable, multi_hot_flags, multi_hot_text, one_hot, side_table
from batch.data.ids import Vocabulary
from batch.data.parts import Part, interaction_checks, read_text_part
from batch.data.tables import QUOTE, read_csv_part
from batch.errors import InvalidValueError

GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western")
# The MovieLens 1M age buckets; 1M files store the bucket's code, 100k the age itself.
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_CODES_1M = (1, 18, 25, 35, 45, 50, 56)
OCCUPATIONS_1M = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                  "customer service", "doctor/health care", "executive/managerial", "farmer",
                  "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
                  "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
                  "unemployed", "writer")
LATEST_COLUMNS = ColumnMap(user="userId", item="movieId", rating="rating", timestamp="timestamp")
RATING_FIELDS = (Field("user", "int"), Field("item", "int"), Field("rating", "float"),
                 Field("timestamp", "int"))
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


def layout(names: list[str]) -> str | None:
    """``ml-100k``, ``ml-1m``, ``ml-latest`` or None, from the file names in a directory."""
    if "u.data" in names or "ua.base" in names:
        return "ml-100k"
    if "ratings.dat" in names:
        return "ml-1m"
    if "ratings.csv" in names and "movies.csv" in names:
        return "ml-latest"
    return None


def read_ratings(location: str, users: Vocabulary, items: Vocabulary, rating_min: float,
                 rating_max: float) -> Part:
    """A rating file: ``::``-separated when named ``*.dat`` (1M), tab-separated otherwise."""
    delimiter = "::" if location.removesuffix(".gz").endswith(".dat") else "\t"
    table = TextTable(location, delimiter=delimiter)
    roles = {f.name: f.name for f in RATING_FIELDS}
    checks = interaction_checks(roles, RATING_FIELDS, rating_min, rating_max)
    return read_text_part(table, RATING_FIELDS, roles, checks, users, items)


def read_ratings_latest(location: str, cfg: DataConfig, users: Vocabulary, items: Vocabulary) -> Part:
    """``ratings.csv`` of a MovieLens latest directory, whatever ``data.columns`` says."""
    latest = dataclasses.replace(cfg, columns=LATEST_COLUMNS, delimiter=",", header=True)
    return read_csv_part(location, latest, users, items)


def read_users_100k(location: str, occupations: str | None = None) -> SideTable:
    """``u.user``; with ``u.occupation``, an occupation it does not list is an error."""
    fields = [Field("user id", "int"), Field("age", "int"), Field("gender", "str"),
              Field("occupation", "str"), Field("zip code", "str")]
    checks = [Check("age", lambda a: (a < 0) | (a > 130), "age {value!r} is outside 0..130")]
    if occupations is not None:
        known = _single_column(occupations, "occupation")
        checks.append(Check("occupation", lambda o: ~np.isin(o, known),
                            "occupation {value!r} is not listed in u.occupation"))
    cols = _read(location, "|", fields, checks)
    ages = np.array(AGE_LABELS)[np.searchsorted(AGE_EDGES, cols["age"], side="right")]
    blocks = [one_hot("age", ages, AGE_LABELS), one_hot("gender", cols["gender"]),
              one_hot("occupation", cols["occupation"]),
              one_hot("zip", _first_char(cols["zip code"]))]
    return side_table(location, cols["user id"], cols[LINE], blocks, id_column="user id")


def read_items_100k(location: str, genres: str | None = None) -> SideTable:
    """``u.item`` with genre names from ``u.genre`` when given (else the standard 19)."""
    names = _genre_names(genres) if genres is not None else GENRES_100K
    flags = [Field(f"genre {name}", "int") for name in names]
    fields = [Field("movie id", "int"), Field("movie title", "str"), Field("release date", "str"),
              Field("video release date", "str"), Field("IMDb URL", "str"), *flags]
    checks = [Check(f.name, lambda v: (v != 0) & (v != 1), "genre flag {value!r} is not 0 or 1")
              for f in flags]
    cols = _read(location, "|", fields, checks)
    matrix = np.stack([cols[f.name] for f in flags], axis=1)
    blocks = [multi_hot_flags("genre", names, matrix),
              one_hot("decade", _decades_from_dates(cols["release date"]))]
    listed = ["|".join(name for name, flag in zip(names, row, strict=True) if flag) for row in matrix.tolist()]
    attributes = {"genres": np.array(listed, dtype=object), "release_date": cols["release date"]}
    return side_table(location, cols["movie id"], cols[LINE], blocks, id_column="movie id",
                      titles=cols["movie title"], attributes=attributes)


def read_users_1m(location: str) -> SideTable:
    """``users.dat``: age and occupation codes become the same labels as 100k's."""
    fields = [Field("UserID", "int"), Field("Gender", "str"), Field("Age", "int"),
              Field("Occupation", "int"), Field("Zip-code", "str")]
    checks = [Check("Age", lambda a: ~np.isin(a, AGE_CODES_1M),
                    "age code {value!r} is not a MovieLens 1M code"),
              Check("Occupation", lambda o: (o < 0) | (o >= len(OCCUPATIONS_1M)),
                    f"occupation code {{value!r}} is outside 0..{len(OCCUPATIONS_1M) - 1}")]
    cols = _read(location, "::", fields, checks)
    ages = np.array(AGE_LABELS)[np.searchsorted(AGE_CODES_1M, cols["Age"])]
    blocks = [one_hot("age", ages, AGE_LABELS), one_hot("gender", cols["Gender"]),
              one_hot("occupation", np.array(OCCUPATIONS_1M)[cols["Occupation"]]),
              one_hot("zip", _first_char(cols["Zip-code"]))]
    return side_table(location, cols["UserID"], cols[LINE], blocks, id_column="UserID")


def read_items_1m(location: str) -> SideTable:
    """``movies.dat``: the year in the title ("Toy Story (1995)") gives the decade."""
    fields = [Field("MovieID", "int"), Field("Title", "str"), Field("Genres", "str")]
    cols = _read(location, "::", fields, [])
    return _movies(location, cols["MovieID"], cols["Title"], cols["Genres"], cols[LINE], "MovieID")


def read_items_latest(location: str) -> SideTable:
    """``movies.csv`` of a MovieLens latest directory: genres and decade, as for 1M."""
    fields = [Field("movieId", "int"), Field("title", "str"), Field("genres", "str")]
    table = TextTable(location, delimiter=",", header=True, quotechar=QUOTE)
    cols = read_all(table, fields, [], with_lines=True)
    return _movies(location, cols["movieId"], cols["title"], cols["genres"], cols[LINE], "movieId")


def _movies(location: str, ids: np.ndarray, titles: np.ndarray, genres: np.ndarray, lines: np.ndarray,
            id_column: str) -> SideTable:
    """Items with ``genre=…`` multi-hot and ``decade=…`` (from the year ending the title) features."""
    genres = np.where(np.char.strip(genres) == "(no genres listed)", "", genres)
    years = [m.group(1) if (m := _YEAR_IN_TITLE.search(t)) else "" for t in titles.tolist()]
    blocks = [multi_hot_text("genre", genres), one_hot("decade", _decades(np.array(years, dtype=str)))]
    return side_table(location, ids, lines, blocks, id_column=id_column, titles=titles,
                      attributes={"genres": genres})


def _read(location: str, delimiter: str, fields, checks) -> dict[str, np.ndarray]:
    table = TextTable(location, delimiter=delimiter, encoding="latin-1")
    return read_all(table, fields, checks, with_lines=True)


def _single_column(location: str, name: str) -> np.ndarray:
    """The non-blank lines of a one-name-a-line file (u.occupation)."""
    cols = _read(location, "|", [Field(name, "str")], [])
    return np.char.strip(cols[name])


def _genre_names(location: str) -> tuple[str, ...]:
    """Genre names from ``u.genre``, whose indices must run 0, 1, 2, … in order."""
    cols = _read(location, "|", [Field("genre", "str"), Field("genre id", "int")], [])
    wrong = np.flatnonzero(cols["genre id"] != np.arange(len(cols["genre id"])))
    if len(wrong):
        row = wrong[0]
        raise InvalidValueError(f"genre id {cols['genre id'][row]} out of order; expected {row}",
                                file=location, line=int(cols[LINE][row]), column="genre id")
    return tuple(np.char.strip(cols["genre"]).tolist())


def _first_char(values: np.ndarray) -> np.ndarray:
    return np.char.strip(values).astype("U1")


def _decades_from_dates(dates: np.ndarray) -> np.ndarray:
    """"01-Jan-1995" → "1990s"; "" where the date does not parse."""
    return _decades(np.char.rpartition(np.char.strip(dates), "-")[:, 2])


def _decades(years: np.ndarray) -> np.ndarray:
    """Four-digit year text → "1990s"; anything else → ""."""
    years = np.asarray(years, dtype=str)
    valid = (np.char.str_len(years) == 4) & np.char.isdigit(years)
    decade = np.where(valid, years, "0").astype(np.int64) // 10 * 10
    return np.where(valid, np.char.add(decade.astype(str), "s"), "")
