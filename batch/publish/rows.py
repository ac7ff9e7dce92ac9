"""The rows one run publishes: top-x lists with external ids, validated before the database is
touched, streamed in chunks so a sink never holds more than one chunk of encoded rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from batch.data.interactions import IdMap
from batch.errors import PublishError
from batch.lists import SOURCE_POPULARITY, TopLists


def id_text(ids: IdMap, what: str) -> np.ndarray:
    """External ids as a unicode array aligned with the map (integers in decimal).

    Raises :class:`PublishError` for an id holding a NUL character, which no database text
    column can store."""
    text = ids.ids.astype(str)
    codepoints = text.view(np.uint32).reshape(len(text), text.dtype.itemsize // 4)
    # numpy pads with NULs, so a NUL inside an id shows as fewer non-NULs than its length.
    if np.any(np.count_nonzero(codepoints, axis=1) != np.char.str_len(text)):
        raise PublishError(f"{what} ids contain a NUL character, which a database cannot store")
    return text


@dataclass(frozen=True)
class RunRows:
    """One run's rows: ``lists`` plus the external id text of every internal index.

    ``user_text``: unicode array (n_users,), ``item_text``: unicode array (n_items,);
    ``titles``: ``(item ids, titles)`` unicode/object arrays of items that have a title, or None;
    ``order``: int64 row permutation into key order (see :func:`_key_order`), None if already.
    """

    run_id: str
    lists: TopLists
    user_text: np.ndarray
    item_text: np.ndarray
    titles: tuple[np.ndarray, np.ndarray] | None
    chunk_rows: int
    order: np.ndarray | None = None

    @classmethod
    def build(cls, run_id: str, lists: TopLists, users: IdMap, items: IdMap, *,
              item_titles=None, chunk_rows: int) -> RunRows:
        """Check the hand-off from search (indices in range, finite scores, one contiguous block
        of increasing ranks per user) and map the ids. Raises :class:`PublishError`."""
        if not run_id or "\x00" in run_id:
            raise PublishError(f"invalid run id {run_id!r}")
        if chunk_rows < 1:
            raise PublishError(f"chunk_rows must be ≥ 1; got {chunk_rows}")
        _check_lists(lists, len(users), len(items))
        user_text, item_text = id_text(users, "user"), id_text(items, "item")
        titles = None if item_titles is None else _titles(item_text, item_titles)
        return cls(run_id, lists, user_text, item_text, titles, chunk_rows, _key_order(lists, user_text))

    def __len__(self) -> int:
        return len(self.lists)

    def chunks(self) -> Iterator[TopLists]:
        """The rows in key order (user id as text, then rank), ``chunk_rows`` at a time."""
        if self.order is None:
            yield from self.lists.chunks(self.chunk_rows)
            return
        for start in range(0, len(self.order), self.chunk_rows):
            yield self.lists.take(self.order[start:start + self.chunk_rows])

    def stats(self) -> dict[str, int]:
        """Counts stored with the run: users with a list, catalogue size, distinct items
        recommended (for coverage), users on the popularity fallback, rows."""
        lists = self.lists
        fallback = lists.user[lists.source == SOURCE_POPULARITY]
        recommended = np.bincount(lists.item, minlength=len(self.item_text)) > 0 if len(lists) else []
        return {"n_users": _user_blocks(lists.user), "n_items": len(self.item_text),
                "n_items_recommended": int(np.count_nonzero(recommended)),
                "n_fallback_users": int(np.unique(fallback).size), "n_rows": len(lists)}


def _key_order(lists: TopLists, user_text: np.ndarray) -> np.ndarray | None:
    """Row order that sorts the users' blocks by id text, or None when they already are.

    Loading in primary-key order makes SQLite append to its B-tree and hands PostgreSQL's
    index build presorted input; integer ids are in numeric order, which as text ("10" < "9")
    is not."""
    if not len(lists):
        return None
    starts = np.flatnonzero(np.r_[True, lists.user[1:] != lists.user[:-1]])
    keys = user_text[lists.user[starts]]
    if np.all(keys[:-1] <= keys[1:]):
        return None
    blocks = np.argsort(keys, kind="stable")
    lengths = np.diff(np.r_[starts, len(lists)])[blocks]
    moved_to = np.cumsum(lengths) - lengths
    return np.repeat(starts[blocks] - moved_to, lengths) + np.arange(len(lists))


def _user_blocks(user: np.ndarray) -> int:
    """Users in a user column where each user's rows are contiguous (checked on build)."""
    return int(len(user) and 1 + np.count_nonzero(user[1:] != user[:-1]))


def _check_lists(lists: TopLists, n_users: int, n_items: int) -> None:
    if not len(lists):
        return
    if lists.user.min() < 0 or lists.user.max() >= n_users:
        raise PublishError(f"lists name user indices outside the user id map (0..{n_users - 1})")
    if lists.item.min() < 0 or lists.item.max() >= n_items:
        raise PublishError(f"lists name item indices outside the item id map (0..{n_items - 1})")
    if not np.all(np.isfinite(lists.score)):
        raise PublishError("lists hold non-finite scores (NaN or infinity)")
    # (user, rank) must be unique; PostgreSQL partitions carry no unique index to say so.
    same_user = lists.user[1:] == lists.user[:-1]
    if np.any(lists.rank[1:][same_user] <= lists.rank[:-1][same_user]):
        raise PublishError("ranks must increase within each user's list")
    if np.unique(lists.user).size != len(lists) - np.count_nonzero(same_user):
        raise PublishError("each user's rows must be contiguous in the lists")


def titled_items(items: IdMap, item_titles) -> tuple[np.ndarray, np.ndarray] | None:
    """``(item ids, titles)`` of the items that have a title, as :attr:`RunRows.titles` holds
    them; None when ``item_titles`` (aligned with ``items``) is None."""
    return None if item_titles is None else _titles(id_text(items, "item"), item_titles)


def _titles(item_text: np.ndarray, item_titles) -> tuple[np.ndarray, np.ndarray]:
    titles = np.asarray(item_titles, dtype=object)
    if titles.shape != item_text.shape:
        raise PublishError(f"item_titles has {titles.size} entries for {item_text.size} items")
    has = np.array([t is not None and t == t for t in titles], dtype=bool)  # None and NaN: no title
    return item_text[has], np.array([str(t) for t in titles[has]], dtype=object)
