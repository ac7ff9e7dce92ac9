"""Where a data set's pieces are: which files hold interactions (and which of them are the test
side of a given split), which hold the user and item catalogues, and how to read each.

Layouts: a directory with ``u.data`` or ``ua.base`` is MovieLens 100k; one with ``ratings.dat``
MovieLens 1M; one with ``ratings.csv`` and ``movies.csv`` MovieLens latest (ml-latest-small,
ml-25m, …); a directory of ``.csv``/``.tsv``/``.parquet`` part files, or a single file, is a
generic table (format by ``data.format``, else by extension; ``u.data``-like names are MovieLens
rating files). Paths may be local or ``s3://``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from batch import storage
from batch.config import DataConfig
from batch.data import movielens, tables
from batch.data.features import SideTable
from batch.data.ids import Vocabulary
from batch.data.parts import Part
from batch.errors import ConfigError, DataError

PART_SUFFIXES = {"csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz"), "parquet": (".parquet", ".pq")}
RATING_NAMES = ("u.data", "ratings.dat")
RATING_SUFFIXES = (".base", ".test", ".data", ".dat")


@dataclass(frozen=True)
class Source:
    """The files of one data set. ``train``/``test``: interactions files (``test`` empty
    unless the split is given by files); ``catalogue``: MovieLens catalogue files by name."""

    cfg: DataConfig
    path: str
    layout: str
    train: tuple[str, ...]
    test: tuple[str, ...] = ()
    catalogue: tuple[tuple[str, str], ...] = ()

    def split_method(self, requested: str) -> str:
        """``auto`` → ``given`` when test files exist, else ``random``."""
        if requested == "auto":
            return "given" if self.test else "random"
        return requested

    def read_part(self, location: str, users: Vocabulary, items: Vocabulary) -> Part:
        if self.layout == "ml-latest":
            return movielens.read_ratings_latest(location, self.cfg, users, items)
        fmt = file_format(location, self.cfg.format)
        if fmt == "movielens":
            return movielens.read_ratings(location, users, items, self.cfg.rating_min,
                                          self.cfg.rating_max)
        if fmt == "parquet":
            from batch.data import parquet

            return parquet.read_parquet_part(location, self.cfg, users, items)
        return tables.read_csv_part(location, self.cfg, users, items)

    def read_users(self) -> SideTable | None:
        if self.cfg.user_features:
            return tables.read_side_table(self.cfg.user_features, self.cfg.columns.user,
                                          items=False)
        files = dict(self.catalogue)
        if "u.user" in files:
            return movielens.read_users_100k(files["u.user"], files.get("u.occupation"))
        if "users.dat" in files:
            return movielens.read_users_1m(files["users.dat"])
        return None

    def read_items(self) -> SideTable | None:
        if self.cfg.item_features:
            return tables.read_side_table(self.cfg.item_features, self.cfg.columns.item, items=True)
        files = dict(self.catalogue)
        if "u.item" in files:
            return movielens.read_items_100k(files["u.item"], files.get("u.genre"))
        if "movies.dat" in files:
            return movielens.read_items_1m(files["movies.dat"])
        if "movies.csv" in files:
            return movielens.read_items_latest(files["movies.csv"])
        return None


def find_source(cfg: DataConfig) -> Source:
    """The :class:`Source` of ``cfg.path`` (and ``cfg.test_path``), checked against the split."""
    path = str(cfg.path).rstrip("/") if storage.is_s3(cfg.path) else str(cfg.path)
    if storage.is_dir(path):
        source = _directory(cfg, path, storage.list_names(path))
    elif storage.exists(path):
        source = Source(cfg, path, _layout_of_file(path, cfg.format), (path,))
    else:
        raise DataError("no such file or directory", file=path)
    if cfg.test_path is not None:
        if cfg.split not in ("auto", "given"):
            raise ConfigError(f"data.test_path is set but data.split is {cfg.split!r}; "
                              "use split 'given' (or 'auto') with a test file")
        source = Source(cfg, path, source.layout, source.train, (cfg.test_path,), source.catalogue)
    if cfg.split == "given" and not source.test:
        raise ConfigError(f"data.split=given needs a base/test pair (ua.base and ua.test in a "
                          f"MovieLens directory) or data.test_path; {path} has neither")
    return source


def _directory(cfg: DataConfig, path: str, names: list[str]) -> Source:
    layout = movielens.layout(names) if cfg.format in ("auto", "movielens") else None
    present = {n: storage.join(path, n) for n in names}
    catalogue = tuple((n, present[n]) for n in ("u.user", "u.item", "u.genre", "u.occupation",
                                                 "users.dat", "movies.dat") if n in present)
    if layout == "ml-1m":
        return Source(cfg, path, layout, (present["ratings.dat"],), (), catalogue)
    if layout == "ml-latest":
        return Source(cfg, path, layout, (present["ratings.csv"],), (), (("movies.csv", present["movies.csv"]),))
    if layout == "ml-100k":
        pair = "ua.base" in present and "ua.test" in present
        if pair and cfg.test_path is None and cfg.split in ("auto", "given"):
            base, test = (present["ua.base"],), (present["ua.test"],)
            return Source(cfg, path, layout, base, test, catalogue)
        whole = ["u.data"] if "u.data" in present else [n for n in ("ua.base", "ua.test")
                                                         if n in present]
        return Source(cfg, path, layout, tuple(present[n] for n in whole), (), catalogue)
    for fmt, suffixes in PART_SUFFIXES.items():
        found = tuple(present[n] for n in names if n.lower().endswith(suffixes))
        if found and cfg.format in ("auto", fmt):
            return Source(cfg, path, fmt, found)
    raise DataError("no data files here: expected MovieLens files (u.data, ua.base, ratings.dat) "
                    "or .csv/.tsv/.parquet files", file=path)


def file_format(location: str, configured: str) -> str:
    """``movielens``, ``csv`` or ``parquet`` for one interactions file."""
    if configured != "auto":
        return configured
    name = PurePosixPath(location).name.lower().removesuffix(".gz")
    if tables.is_parquet(name):
        return "parquet"
    if name in RATING_NAMES or name.endswith(RATING_SUFFIXES):
        return "movielens"
    return "csv"


def _layout_of_file(location: str, configured: str) -> str:
    fmt = file_format(location, configured)
    if fmt == "movielens":
        return "ml-1m" if location.removesuffix(".gz").endswith(".dat") else "ml-100k"
    return fmt
