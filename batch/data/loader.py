"""``load_dataset``: the ingest stage's entry point, from a data configuration to a
:class:`Dataset` (id maps, split interactions, side features, titles and a report).

The steps: find the layout (:mod:`batch.data.sources`), read every interactions file chunk by
chunk with provisional id codes, read the catalogues, build the id maps over both, remap the
codes, resolve duplicate pairs, split, and align features with the id maps.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from batch.config import DataConfig
from batch.data import split as splits
from batch.data.features import SideTable
from batch.data.ids import Vocabulary, build_idmap
from batch.data.interactions import Dataset, IdMap, Interactions
from batch.data.parts import Part, resolve_duplicates
from batch.data.sources import Source, find_source
from batch.errors import ConfigError
from batch.log import log

_REMAP_ROWS = 1 << 22


def load_dataset(cfg: DataConfig) -> Dataset:
    """Read, validate and split the data set ``cfg`` describes.

    Raises a :class:`DataError` subclass (file, line, column) for bad input, and
    :class:`ConfigError` when the split cannot be made (``given`` without a test file).
    """
    if cfg.path is None:
        raise ConfigError("data.path is not set (the synthetic default is resolved by the caller)")
    source = find_source(cfg)
    # The small catalogue files first: their errors surface before a long interactions read.
    user_table, item_table = source.read_users(), source.read_items()
    inter, from_test, users, items, report = _read_interactions(source, user_table, item_table)
    inter, from_test, report["duplicates_resolved"] = _deduplicate(inter, from_test, len(items))
    train, test, report["split"] = _split(cfg, source, inter, from_test, len(users))
    report.update(users=len(users), items=len(items), interactions=len(inter),
                  # the run's reference time for availability rules (batch.data.availability)
                  ingested_at=datetime.now(UTC).isoformat(timespec="seconds"),
                  # whether the data carries ratings at all (not the training mode, which the config sets)
                  has_ratings=not bool(np.isnan(inter.rating).all()))
    return Dataset(
        train=train, test=test, users=users, items=items,
        user_features=user_table.features(users) if user_table else None,
        item_features=item_table.features(items) if item_table else None,
        item_titles=item_table.titles_for(items) if item_table else None,
        item_attributes=item_table.attributes_for(items) if item_table else None,
        report=report,
    )


def _read_interactions(source: Source, user_table: SideTable | None, item_table: SideTable | None):
    """(interactions over final indices, mask of rows from test files or None, user map, item
    map, report). The per-file parts die here, so the interactions own their columns and
    later steps can release them."""
    users, items = Vocabulary(), Vocabulary()
    parts = [source.read_part(loc, users, items) for loc in source.train + source.test]
    user_map = build_idmap(users.ids(), user_table.ids if user_table else None)
    item_map = build_idmap(items.ids(), item_table.ids if item_table else None)
    inter, from_test = _assemble(parts, len(source.test), users.remap(user_map),
                                 items.remap(item_map))
    report = _read_report(source, parts, (user_table, item_table))
    report.update(_catalogue_report("user", inter.user, user_map, user_table))
    report.update(_catalogue_report("item", inter.item, item_map, item_table))
    return inter, from_test, user_map, item_map, report


def _assemble(parts: list[Part], n_test: int, user_remap: np.ndarray,
              item_remap: np.ndarray) -> tuple[Interactions, np.ndarray | None]:
    """One :class:`Interactions` over final indices, and (with test parts) the mask of rows
    from test files. Codes are remapped in place, in slices, and a single part's columns are
    used as they are, so a big file is never copied here."""
    for part in parts:
        _remap_in_place(part.user, user_remap)
        _remap_in_place(part.item, item_remap)
    columns = ("user", "item", "rating", "timestamp")
    if len(parts) == 1:
        arrays = [getattr(parts[0], c) for c in columns]
    else:
        arrays = [np.concatenate([getattr(p, c) for p in parts]) for c in columns]
    from_test = None
    if n_test:
        sizes = np.array([len(p) for p in parts])
        from_test = np.repeat(np.arange(len(parts)) >= len(parts) - n_test, sizes)
    return Interactions(*arrays), from_test


def _remap_in_place(codes: np.ndarray, remap: np.ndarray) -> None:
    for start in range(0, len(codes), _REMAP_ROWS):
        window = codes[start: start + _REMAP_ROWS]
        window[:] = remap[window]


def _deduplicate(inter: Interactions, from_test: np.ndarray | None,
                 n_items: int) -> tuple[Interactions, np.ndarray | None, int]:
    keep = resolve_duplicates(inter.user, inter.item, inter.timestamp, n_items)
    if keep is None:
        return inter, from_test, 0
    dropped = len(inter) - len(keep)
    log.warning("%d duplicate (user, item) interaction(s): kept the latest of each pair by "
                "timestamp (the later line on ties)", dropped)
    return inter.take(keep), None if from_test is None else from_test[keep], dropped


def _split(cfg: DataConfig, source: Source, inter: Interactions, from_test: np.ndarray | None,
           n_users: int) -> tuple[Interactions, Interactions, dict]:
    method = source.split_method(cfg.split)
    mask = splits.holdout_mask(method, inter.user, inter.timestamp, n_users=n_users,
                               holdout=cfg.holdout, seed=cfg.seed, given=from_test)
    report = splits.summary(method, inter.user, mask, n_users)
    if method in ("random", "last"):
        report.update(holdout=cfg.holdout, seed=cfg.seed if method == "random" else None)
    return inter.take(~mask), inter.take(mask), report


def _read_report(source: Source, parts: list[Part], tables) -> dict:
    rows = {p.location: len(p) for p in parts}
    rows.update({t.location: len(t.ids) for t in tables if t is not None})
    return {"source": source.path, "layout": source.layout, "rows_read": rows}


def _catalogue_report(what: str, codes: np.ndarray, idmap: IdMap, table: SideTable | None) -> dict:
    """Interactions whose user/item the catalogue does not list: kept (the id map gains
    them), counted and warned about."""
    if table is None:
        return {}
    listed = np.zeros(len(idmap), bool)
    listed[idmap.index(table.ids)] = True
    missing_rows = int((~listed[codes]).sum())
    if not missing_rows:
        return {f"{what}s_not_in_catalogue": {"ids": 0, "interactions": 0}}
    missing_ids = idmap.ids[~listed]
    log.warning("%d interaction(s) name %d %s(s) that %s does not list (e.g. %s); they are kept",
                missing_rows, len(missing_ids), what, table.location,
                ", ".join(map(str, missing_ids[:5].tolist())))
    return {f"{what}s_not_in_catalogue": {"ids": len(missing_ids), "interactions": missing_rows}}
