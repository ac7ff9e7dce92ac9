"""External ids → integer codes, chunk by chunk, and the final sorted :class:`IdMap`.

Interactions are read in chunks, long before every id is known, so each chunk's ids get
*provisional* codes (order of first appearance) from a :class:`Vocabulary`. Once every file is
read, :func:`build_idmap` forms the sorted id map over all sources and :meth:`Vocabulary.remap`
gives, per provisional code, the final index.
"""

from __future__ import annotations

import numpy as np

from batch.data.interactions import IdMap


class Vocabulary:
    """Distinct ids seen so far, each with a provisional int32 code.

    Ids are int64 or unicode; once a text id arrives, earlier integer ids are kept as their
    decimal text, so ``7`` and ``"7"`` are the same id. Memory grows with distinct ids only.
    """

    def __init__(self) -> None:
        self._keys: np.ndarray | None = None  # sorted distinct ids
        self._codes = np.empty(0, np.int32)  # provisional code of each key
        self.size = 0

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """Provisional codes (int32, shape of ``ids``) of a chunk of ids (int64 or unicode)."""
        unique, inverse = _unique_inverse(ids)
        return self._encode_unique(unique)[inverse]

    def _encode_unique(self, unique: np.ndarray) -> np.ndarray:
        unique = self._harmonise(unique)
        pos = np.searchsorted(self._keys, unique)
        found = pos < len(self._keys)
        found[found] = self._keys[pos[found]] == unique[found]
        new = ~found
        new_codes = np.arange(self.size, self.size + int(new.sum()), dtype=np.int32)
        out = np.empty(len(unique), np.int32)
        out[found] = self._codes[pos[found]]
        out[new] = new_codes
        # ``unique`` is sorted, so inserting its new ids at their search positions keeps order.
        self._keys = np.insert(self._keys, pos[new], unique[new])
        self._codes = np.insert(self._codes, pos[new], new_codes)
        self.size += len(new_codes)
        return out

    def _harmonise(self, unique: np.ndarray) -> np.ndarray:
        """Bring keys and the new ids to one dtype (int64, or unicode wide enough for both)."""
        if self._keys is None:
            self._keys = unique[:0]
        keys_text, new_text = self._keys.dtype.kind == "U", unique.dtype.kind == "U"
        if new_text and not keys_text:
            self._resort(self._keys.astype(str))
        elif keys_text and not new_text:
            unique = np.unique(unique.astype(str))
        if unique.dtype.kind == "U" and unique.dtype.itemsize > self._keys.dtype.itemsize:
            self._keys = self._keys.astype(unique.dtype)
        return unique

    def _resort(self, keys: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self._keys, self._codes = keys[order], self._codes[order]

    def ids(self) -> np.ndarray:
        """External ids by provisional code: ``ids()[c]`` is the id coded ``c``."""
        keys = self._keys if self._keys is not None else np.empty(0, np.int64)
        out = np.empty(self.size, keys.dtype)
        out[self._codes] = keys
        return out

    def remap(self, idmap: IdMap) -> np.ndarray:
        """Final index (int32) of every provisional code, in an id map covering this vocabulary."""
        return idmap.index(self.ids()).astype(np.int32)


def _unique_inverse(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(ids, return_inverse=True)``; integer ids spanning a range not much wider
    than the chunk (MovieLens-style dense ids) take an O(n) table lookup instead of a sort."""
    if ids.dtype.kind in "iu" and len(ids):
        low, high = int(ids.min()), int(ids.max())
        if high - low < max(4 * len(ids), 1 << 16):
            offset = ids - low
            present = np.zeros(high - low + 1, bool)
            present[offset] = True
            rank = np.cumsum(present, dtype=np.int64) - 1
            return np.flatnonzero(present) + low, rank[offset]
    unique, inverse = np.unique(ids, return_inverse=True)
    return unique, inverse.reshape(-1)


def build_idmap(*parts: np.ndarray | None) -> IdMap:
    """Sorted map over the union of id arrays (None parts ignored).

    int64 when every part is integer, or when every id is the canonical decimal text of an
    integer (``"42"``, not ``"042"`` or ``" 42"``, which must round-trip unchanged); text
    otherwise.
    """
    arrays = [np.asarray(p) for p in parts if p is not None]
    if not arrays:
        return IdMap(np.empty(0, np.int64))
    if all(a.dtype.kind in "iu" for a in arrays):
        return IdMap(np.unique(np.concatenate([a.astype(np.int64) for a in arrays])))
    text = np.unique(np.concatenate([a.astype(str) for a in arrays]))
    as_int = canonical_ints(text)
    return IdMap(np.unique(as_int) if as_int is not None else text)


def canonical_ints(text: np.ndarray) -> np.ndarray | None:
    """int64 values of unicode ids that are all canonical integers, else None."""
    if len(text) == 0:
        return None
    try:
        values = text.astype(np.int64)
    except (ValueError, OverflowError):
        return None
    return values if np.array_equal(values.astype(str), text) else None
