"""Generic tables: interactions in CSV/TSV (or Parquet, see :mod:`batch.data.parquet`) with a
column mapping, and side-feature tables of users or items.

A side table has a header row and an id column named like the interactions' user (or item)
column (``data.columns``); every other column becomes features: numbers → one standardised
column; text → one-hot ``col=value``; text holding ``|`` → multi-hot ``col=token``. An item
table's ``title`` column gives titles instead.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import numpy as np

from batch.config import DataConfig
from batch.data import columns as cols
from batch.data.delimited import LINE, Check, Field, TextTable, open_stream, read_all
from batch.data.features import Block, SideTable, multi_hot_text, one_hot, side_table, standardised
from batch.data.ids import Vocabulary
from batch.data.parts import Part, blank, interaction_checks, read_text_part

SNIFFED = ("\t", ",", ";", "|")
ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "pipe": "|", "semicolon": ";"}
QUOTE = '"'
TITLE = "title"


def is_parquet(location: str) -> bool:
    return PurePosixPath(str(location)).name.lower().endswith((".parquet", ".pq"))


def delimiter_for(location: str, configured: str | None) -> str:
    """The configured delimiter, else by extension (.csv → comma, .tsv/.tab → tab), else the
    most frequent of tab, comma, semicolon and pipe in the first line."""
    if configured:
        return ALIASES.get(configured, configured)
    name = PurePosixPath(str(location)).name.lower().removesuffix(".gz")
    if name.endswith((".tsv", ".tab")):
        return "\t"
    if name.endswith(".csv"):
        return ","
    with open_stream(location) as stream:
        first = stream.read(1 << 16).split(b"\n", 1)[0].decode("utf-8", errors="replace")
    counts = [first.count(d) for d in SNIFFED]
    return SNIFFED[int(np.argmax(counts))] if max(counts) else ","


def read_csv_part(location: str, cfg: DataConfig, users: Vocabulary, items: Vocabulary) -> Part:
    """A delimited interactions file; ids are read as text (the loader decides whether they are
    all integers), ratings as float, timestamps as integer seconds."""
    table = TextTable(location, delimiter=delimiter_for(location, cfg.delimiter), header=cfg.header,
                      quotechar=QUOTE)
    names = table.header() if cfg.header else cols.positional(cfg.columns)
    roles = cols.roles(names, cfg.columns, location)
    kinds = {roles["user"]: "str", roles["item"]: "str", roles.get("rating"): "float",
             roles.get("timestamp"): "int"}
    fields = [Field(n, kinds.get(n, "skip")) for n in names]
    checks = interaction_checks(roles, fields, cfg.rating_min, cfg.rating_max)
    return read_text_part(table, fields, roles, checks, users, items)


def read_side_table(location: str, id_column: str, *, items: bool,
                    delimiter: str | None = None) -> SideTable:
    """A user (``items=False``) or item side-feature table, CSV/TSV with a header or Parquet."""
    if is_parquet(location):
        from batch.data import parquet

        ids, lines, columns = parquet.read_side_columns(location, id_column)
    else:
        ids, lines, columns = _text_side_columns(location, id_column, delimiter)
    titles = columns.pop(TITLE, None) if items else None
    blocks = [encode_column(name, values) for name, values in columns.items()]
    attributes = {name: np.char.strip(values.astype(str)) if values.dtype.kind in "US" else values
                  for name, values in columns.items()} if items else None
    if attributes:
        from batch.data.availability import check_columns

        check_columns(attributes, lines, location)
    return side_table(location, ids, lines, blocks, id_column=id_column, titles=titles, attributes=attributes)


def _text_side_columns(location: str, id_column: str, delimiter: str | None):
    table = TextTable(location, delimiter=delimiter_for(location, delimiter), header=True,
                      quotechar=QUOTE)
    names = table.header()
    cols.require(names, id_column, location, "id")
    no_blank_ids = Check(id_column, blank, "empty id")
    data = read_all(table, [Field(n, "str") for n in names], [no_blank_ids], with_lines=True)
    lines = data.pop(LINE)
    return data.pop(id_column), lines, data


def encode_column(name: str, values: np.ndarray) -> Block:
    """Features of one side-table column (numeric, text or ``|``-separated text)."""
    if values.dtype.kind in "iufb":
        return standardised(name, values.astype(np.float64))
    values = np.char.strip(values.astype(str))
    numbers = _as_numbers(values)
    if numbers is not None:
        return standardised(name, numbers)
    if np.char.find(values, "|").max(initial=-1) >= 0:
        return multi_hot_text(name, values)
    return one_hot(name, values)


def _as_numbers(values: np.ndarray) -> np.ndarray | None:
    """float64 values (NaN where empty) when every non-empty value is a number, else None."""
    present = np.char.str_len(values) > 0
    if not present.any():
        return None
    out = np.full(len(values), np.nan)
    try:
        out[present] = values[present].astype(np.float64)
    except ValueError:
        return None
    return out
