"""The output of a SageMaker k-NN batch transform, turned into ranked top-x rows.

With ``Accept: application/jsonlines; verbose=true`` the transform writes, per input record and
in input order, one line ``{"predicted_label": x, "distances": [...], "labels": [...]}`` sorted
*ascending* by distance. With ``index_metric=INNER_PRODUCT`` the "distance" is the score, so the
best item comes last: we always re-sort. Labels are float32 copies of our internal item indices,
exact only below 2^24. Several input objects give several ``<input>.out`` files, each in its
input's record order, so each file is parsed with the index of its first user.

Lines are parsed with :mod:`json` and everything after that runs on numpy, a chunk of lines at a
time: validation, seen/deny filtering, the sort and the cut to ``top``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np
import scipy.sparse as sp

from batch.errors import ConfigError, DataError

MAX_K = 1024  # the largest k SageMaker's k-NN accepts
EXACT_LABELS = 2**24  # float32 holds every integer below this, and not all above it
_CHUNK_LINES = 4096


class KnnOutputError(DataError):
    """A k-NN batch-transform output line is malformed or names an impossible item."""


def knn_k(top: int, seen: sp.spmatrix | None, *, deny: np.ndarray | None = None,
          n_items: int | None = None) -> int:
    """The k to ask k-NN for so that dropping a user's seen (and denied) items still leaves
    ``top``: ``min(1024, top + the most items any user loses)``, and at most ``n_items`` when
    given. A user who has seen more than ``1024 - top`` items may end up with fewer than
    ``top``. ``seen``: (n_users, n_items), every stored entry is a seen item."""
    if not 1 <= top <= MAX_K:
        raise ConfigError(f"top = {top}: SageMaker k-NN returns between 1 and {MAX_K} "
                          "neighbours per user, so a top-x list must fit in that")
    denied = np.zeros(0, bool) if deny is None else np.asarray(deny, bool)
    most = int(denied.sum())
    if seen is not None and seen.shape[0]:
        seen = sp.csr_matrix(seen)
        per_user = np.diff(seen.indptr)
        if denied.size:  # a seen item that is also denied is lost only once
            owner = np.repeat(np.arange(seen.shape[0]), per_user)
            per_user = per_user - np.bincount(owner, weights=denied[seen.indices],
                                              minlength=seen.shape[0]).astype(np.int64)
        most += int(per_user.max())
    k = min(MAX_K, top + most)
    return min(k, n_items) if n_items else k


def parse_knn_output(stream_or_lines: Iterable[str | bytes], *, file: str, first_user: int,
                     top: int, seen: sp.spmatrix | None, deny: np.ndarray | None, n_items: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ranked rows ``(user, rank, item, inner_product)`` of one ``.out`` file: int32, int32,
    int32, float32 arrays of equal length, grouped by user in line order, rank 1 = the highest
    inner product, ties to the smaller item index. Line ``n`` (1-based) is user
    ``first_user + n - 1``. Items the user has seen (stored entries of row ``user`` of ``seen``,
    (n_users, n_items)) or that ``deny`` (bool (n_items,)) marks are dropped, then each list is
    cut to ``top``; a user left with fewer items keeps what is left. Raises
    :class:`KnnOutputError`, naming ``file`` and the line, for any malformed line."""
    if top < 1 or n_items < 1 or first_user < 0:
        raise ValueError(f"top ({top}) and n_items ({n_items}) must be positive and "
                         f"first_user ({first_user}) not negative")
    if deny is not None:
        deny = np.asarray(deny, bool)
        if deny.shape != (n_items,):
            raise ValueError(f"deny must be a bool mask of {n_items} items, not {deny.shape}")
    if seen is not None:
        seen = sp.csr_matrix(seen)
        if seen.shape[1] != n_items:
            raise ValueError(f"seen has {seen.shape[1]} item columns, not {n_items}")
    context = _Context(file, first_user, top, seen, deny, n_items)
    parts = [context.chunk(first, lines) for first, lines in _chunks(stream_or_lines, file)]
    if not parts:
        return (np.empty(0, np.int32),) * 3 + (np.empty(0, np.float32),)
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


def _chunks(lines: Iterable[str | bytes], file: str) -> Iterator[tuple[int, list]]:
    """``(number of the first line, lines)`` per chunk. Blank lines are allowed only at the end:
    inside the file they would shift every later user."""
    chunk: list = []
    first, blank = 1, None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            blank = blank or number
            continue
        if blank is not None:
            raise KnnOutputError("empty line", file=file, line=blank)
        chunk.append(line)
        if len(chunk) == _CHUNK_LINES:
            yield first, chunk
            first, chunk = number + 1, []
    if chunk:
        yield first, chunk


@dataclass(frozen=True)
class _Context:
    """The fixed arguments of one file's parse; :meth:`chunk` does the work per chunk."""

    file: str
    first_user: int
    top: int
    seen: sp.csr_matrix | None
    deny: np.ndarray | None
    n_items: int

    def error(self, reason: str, line: int) -> KnnOutputError:
        return KnnOutputError(reason, file=self.file, line=int(line))

    def chunk(self, first: int, lines: list) -> tuple[np.ndarray, ...]:
        """The rows for lines ``first``, ``first + 1``, … of the file."""
        distances, labels = zip(*(self.lists(raw, first + i) for i, raw in enumerate(lines)),
                                strict=True)
        counts = np.fromiter(map(len, labels), np.int64, len(labels))
        line = np.repeat(np.arange(len(lines)), counts)  # each entry's line, 0-based in chunk
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
            score = self.numbers(distances, first, "distances").astype(np.float32)
        if not np.all(np.isfinite(score)):
            at = np.argmin(np.isfinite(score))
            raise self.error(f"distance {score[at]} is not a finite float32", first + line[at])
        item = self.items(self.numbers(labels, first, "labels"), line, first)
        keep = ~self.dropped(item, line, first, len(lines))
        line, item, score = line[keep], item[keep], score[keep]
        order = np.lexsort((item, -score, line))  # by line, best score first, then smaller item
        line, item, score = line[order], item[order], score[order]
        per_line = np.bincount(line, minlength=len(lines))
        rank = np.arange(line.size) - np.repeat(np.cumsum(per_line) - per_line, per_line) + 1
        top = rank <= self.top
        user = self.first_user + first - 1 + line[top]
        return (user.astype(np.int32), rank[top].astype(np.int32), item[top].astype(np.int32),
                score[top])

    def lists(self, raw: str | bytes, number: int) -> tuple[list, list]:
        """A line's "distances" and "labels" lists, of equal length."""
        try:
            record = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise self.error(f"not a JSON line ({exc})", number) from None
        if not isinstance(record, dict) or not {"distances", "labels"} <= record.keys():
            raise self.error('expected an object with "distances" and "labels" (the transform'
                             " needs Accept: application/jsonlines; verbose=true)", number)
        distances, labels = record["distances"], record["labels"]
        if not isinstance(distances, list) or not isinstance(labels, list):
            raise self.error('"distances" and "labels" must be lists', number)
        if len(distances) != len(labels):
            raise self.error(f"{len(distances)} distances but {len(labels)} labels", number)
        return distances, labels

    def numbers(self, lists: tuple[list, ...], first: int, key: str) -> np.ndarray:
        """All the chunk's lists under ``key`` as one float64 array; JSON numbers only."""
        values = _floats(list(chain.from_iterable(lists)))
        if values is not None:
            return values
        bad = next(i for i, one in enumerate(lists) if _floats(one) is None)
        raise self.error(f'"{key}" holds a value that is not a number', first + bad)

    def items(self, labels: np.ndarray, line: np.ndarray, first: int) -> np.ndarray:
        """Float labels → int64 item indices; each must be a whole number in [0, n_items),
        below 2^24, and appear once per line."""
        bad = (labels != np.floor(labels)) | (labels < 0) | (labels >= min(self.n_items,
                                                                           EXACT_LABELS))
        if np.any(bad):
            at = np.argmax(bad)
            raise self.error(f"label {labels[at]!r} is not an item index (a whole number below "
                             f"{min(self.n_items, EXACT_LABELS)})", first + line[at])
        item = labels.astype(np.int64)
        key = np.sort(line * self.n_items + item)
        repeated = key[1:][key[1:] == key[:-1]]
        if repeated.size:
            raise self.error(f"item {repeated[0] % self.n_items} is listed twice",
                             first + repeated[0] // self.n_items)
        return item

    def dropped(self, item: np.ndarray, line: np.ndarray, first: int, n_lines: int
                ) -> np.ndarray:
        """Which entries are denied items or items their user has seen (bool, like ``item``)."""
        drop = np.zeros(item.size, bool) if self.deny is None else self.deny[item]
        if self.seen is None:
            return drop
        u0 = self.first_user + first - 1  # the user of the chunk's first line
        n_users = self.seen.shape[0]
        if u0 + n_lines > n_users:
            raise self.error(f"there are only {n_users} users, so no line for user "
                             f"{max(u0, n_users)}", first + max(0, n_users - u0))
        rows = self.seen[u0:u0 + n_lines]
        owner = np.repeat(np.arange(n_lines), np.diff(rows.indptr))
        seen_keys = np.sort(owner * self.n_items + rows.indices)
        if not seen_keys.size:
            return drop
        keys = line * self.n_items + item  # a binary search beats np.isin's hashing here
        found = seen_keys[np.minimum(np.searchsorted(seen_keys, keys), seen_keys.size - 1)]
        return drop | (found == keys)


def _floats(values: list) -> np.ndarray | None:
    """``values`` as float64 (n,), or None unless every one is a JSON number that fits."""
    if not set(map(type, values)) <= {int, float}:  # bool is an int subclass, not int itself
        return None
    try:
        return np.array(values, np.float64)
    except OverflowError:  # an integer literal beyond float64
        return None
