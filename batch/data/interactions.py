"""The data contract every stage shares: id maps, interactions, side features, a data set.

External ids (what the user's data calls a user or an item) are mapped once, at ingest, to
internal indices 0..n-1; everything downstream works on the indices and maps back only when
results leave topx. An id map is sorted (numerically for integer ids, lexicographically for
text ids) so that the same data gives the same indices whatever the file order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from batch.errors import DataError, IdMapMismatchError, UnknownIdError


@dataclass(frozen=True)
class IdMap:
    """External ids in index order: ``ids[k]`` is the external id of internal index ``k``.

    ``ids`` is a 1-D numpy array, int64 for integer ids or a unicode array for text ids, sorted
    and unique.
    """

    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_int(self) -> bool:
        return self.ids.dtype.kind in "iu"

    @classmethod
    def from_ids(cls, ids: np.ndarray) -> IdMap:
        """Map over the distinct values of ``ids`` (any order, duplicates allowed)."""
        return cls(np.unique(np.asarray(ids)))

    def index(self, external: Any, *, what: str = "id") -> np.ndarray:
        """Internal indices (int64) of external ids; raises :class:`UnknownIdError` for any id
        not in the map. Text ids are compared as strings, so ``"7"`` finds integer id 7."""
        wanted = self._coerce(external)
        pos, found = self._lookup(wanted)
        if not np.all(found):
            missing = np.atleast_1d(wanted)[~np.atleast_1d(found)][:5].tolist()
            raise UnknownIdError(f"unknown {what}(s): {', '.join(map(str, missing))}")
        return pos

    def contains(self, external: Any) -> np.ndarray:
        """Boolean mask: which external ids are in the map. Each id is judged alone: text that is
        not an integer is simply not in an integer map, and does not hide the ids around it."""
        arr = np.asarray(external)
        wanted = self._coerce(arr, strict=False)
        if wanted is not None:
            return self._lookup(wanted)[1]
        flat = arr.ravel().astype(str)
        parsed = np.array([_as_int(text) for text in flat.tolist()], dtype=object)
        valid = parsed != None  # noqa: E711 (element-wise)
        found = np.zeros(flat.shape, bool)
        if valid.any():
            found[valid] = self._lookup(parsed[valid].astype(np.int64))[1]
        return found.reshape(arr.shape)

    def _lookup(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(self.ids):
            return np.zeros(wanted.shape, np.int64), np.zeros(wanted.shape, bool)
        pos = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1).astype(np.int64)
        return pos, self.ids[pos] == wanted

    def _coerce(self, external: Any, strict: bool = True) -> np.ndarray | None:
        arr = np.asarray(external)
        if self.is_int and arr.dtype.kind not in "iu":
            try:
                return arr.astype(np.int64)
            except (ValueError, TypeError):
                if strict:
                    raise UnknownIdError(f"ids must be integers here; got {arr.ravel()[:3].tolist()}") from None
                return None
        if not self.is_int:
            return arr.astype(str)
        return arr.astype(np.int64)

    def save(self, path: str | Path) -> None:
        """An ``.npz`` holding ``ids`` as int64 or fixed-width unicode (never pickled objects):
        unlike one id per line, no character of an id (``\\n``, ``\\r``) can split or shift it."""
        np.savez(path, ids=self.ids)

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        try:
            with np.load(path, allow_pickle=False) as z:
                ids = z["ids"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"not an id map: {exc}", file=str(path)) from None
        if ids.ndim != 1 or ids.dtype.kind not in "iuU":
            raise DataError(f"not an id map: ids of dtype {ids.dtype} and shape {ids.shape}", file=str(path))
        return cls(ids.astype(np.int64) if ids.dtype.kind in "iu" else ids)


def _as_int(text: str) -> int | None:
    """An integer id written as text (``" 42"``, ``"+42"``), or None (``"SKU-1"``, out of int64)."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 else None


@dataclass(frozen=True)
class Interactions:
    """Columnar interactions over internal indices.

    ``user``, ``item``: int32 arrays of internal indices; ``rating``: float32 (NaN where the
    source has no rating); ``timestamp``: int64 seconds (0 where the source has none). All of
    length n.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray

    def __post_init__(self):
        n = len(self.user)
        if not (len(self.item) == len(self.rating) == len(self.timestamp) == n):
            raise ValueError("interaction columns differ in length")

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def empty(cls) -> Interactions:
        return cls(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32), np.empty(0, np.int64))

    def take(self, index: np.ndarray) -> Interactions:
        """Rows selected by an index array or boolean mask."""
        return Interactions(self.user[index], self.item[index], self.rating[index], self.timestamp[index])

    def concat(self, other: Interactions) -> Interactions:
        return Interactions(*(np.concatenate([a, b]) for a, b in zip(self.columns(), other.columns(), strict=True)))

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.user, self.item, self.rating, self.timestamp

    def matrix(self, n_users: int, n_items: int) -> sp.csr_matrix:
        """Users × items CSR (bool) marking which pairs occur, e.g. for seen-item exclusion."""
        data = np.ones(len(self), dtype=bool)
        m = sp.csr_matrix((data, (self.user, self.item)), shape=(n_users, n_items))
        m.sum_duplicates()
        return m

    def save(self, path: str | Path) -> None:
        np.savez(path, user=self.user, item=self.item, rating=self.rating, timestamp=self.timestamp)

    @classmethod
    def load(cls, path: str | Path) -> Interactions:
        with np.load(path) as z:
            return cls(z["user"], z["item"], z["rating"], z["timestamp"])


@dataclass(frozen=True)
class FeatureTable:
    """Side features of users or items, one row per entity of the full id map.

    ``matrix``: CSR float32 of shape (n_entities, len(columns)); entities without features have
    empty rows. ``columns``: feature names such as ``"occupation=writer"`` or ``"age"``.
    """

    matrix: sp.csr_matrix
    columns: tuple[str, ...]

    def __post_init__(self):
        if self.matrix.shape[1] != len(self.columns):
            raise ValueError("feature matrix width differs from its column names")

    @property
    def has_features(self) -> np.ndarray:
        """Boolean per entity: does it have any non-zero feature."""
        return np.diff(self.matrix.indptr) > 0

    def save(self, path: str | Path) -> None:
        m = self.matrix.tocsr()
        np.savez(path, data=m.data, indices=m.indices, indptr=m.indptr, shape=np.array(m.shape),
                 columns=np.array(self.columns, dtype=str))

    @classmethod
    def load(cls, path: str | Path) -> FeatureTable:
        with np.load(path) as z:
            m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            return cls(m.astype(np.float32), tuple(z["columns"].tolist()))


@dataclass(frozen=True)
class Dataset:
    """Everything ingest produces: the split interactions, id maps, features and item titles.

    ``test`` is empty when the split is ``none``. ``item_titles`` (aligned with ``items``) is
    None when the source has no titles; ``item_attributes`` (column name → values aligned with
    ``items``) the item file's columns as read, None without an item file. ``report`` records
    what ingest did (rows read, duplicates resolved, sources, ``ingested_at``) for the run summary.
    """

    train: Interactions
    test: Interactions
    users: IdMap
    items: IdMap
    user_features: FeatureTable | None = None
    item_features: FeatureTable | None = None
    item_titles: np.ndarray | None = None
    report: dict[str, Any] = field(default_factory=dict)
    item_attributes: dict[str, np.ndarray] | None = None

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def all_interactions(self) -> Interactions:
        return self.train.concat(self.test)

    def with_report(self, **entries: Any) -> Dataset:
        return replace(self, report={**self.report, **entries})

    def save(self, directory: str | Path) -> None:
        """Write to ``directory``: users.npz, items.npz (see :meth:`IdMap.save`), train.npz,
        test.npz, optional user_features.npz / item_features.npz / item_titles.json (a JSON list,
        null where an item has no title), report.json."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.users.save(d / "users.npz")
        self.items.save(d / "items.npz")
        self.train.save(d / "train.npz")
        self.test.save(d / "test.npz")
        for name in ("user_features", "item_features"):
            table = getattr(self, name)
            (d / f"{name}.npz").unlink(missing_ok=True)
            if table is not None:
                table.save(d / f"{name}.npz")
        (d / "item_titles.json").unlink(missing_ok=True)
        if self.item_titles is not None:
            titles = [None if t is None else str(t) for t in self.item_titles.tolist()]
            (d / "item_titles.json").write_text(json.dumps(titles, ensure_ascii=False), encoding="utf-8")
        (d / "item_attributes.json").unlink(missing_ok=True)
        if self.item_attributes:
            columns = {name: [None if v is None or v != v else str(v)
                              for v in np.asarray(values, dtype=object).tolist()]
                       for name, values in self.item_attributes.items()}
            (d / "item_attributes.json").write_text(json.dumps(columns, ensure_ascii=False), encoding="utf-8")
        (d / "report.json").write_text(json.dumps(self.report, indent=2, default=str), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> Dataset:
        """Read what :meth:`save` wrote; :class:`IdMapMismatchError` when the id maps and titles
        do not match the interactions they index."""
        d = Path(directory)
        if not (d / "train.npz").exists():
            raise DataError("not a saved data set (no train.npz)", file=str(d))
        optional = {n: FeatureTable.load(d / f"{n}.npz") for n in ("user_features", "item_features")
                    if (d / f"{n}.npz").exists()}
        dataset = cls(
            train=Interactions.load(d / "train.npz"),
            test=Interactions.load(d / "test.npz"),
            users=IdMap.load(d / "users.npz"),
            items=IdMap.load(d / "items.npz"),
            item_titles=_load_titles(d / "item_titles.json"),
            item_attributes=_load_attributes(d / "item_attributes.json"),
            report=json.loads((d / "report.json").read_text(encoding="utf-8")),
            **optional,
        )
        dataset.check_sizes(str(d))
        return dataset

    def check_sizes(self, where: str) -> None:
        """Raise :class:`IdMapMismatchError` if an index points past an id map, or the titles,
        features and id maps differ in length."""
        sizes = {"item_titles": (self.item_titles, self.n_items),
                 **{f"item attribute {name}": (values, self.n_items)
                    for name, values in (self.item_attributes or {}).items()},
                 "user_features": (self.user_features and self.user_features.matrix, self.n_users),
                 "item_features": (self.item_features and self.item_features.matrix, self.n_items)}
        for name, (value, expected) in sizes.items():
            if value is not None and value.shape[0] != expected:
                raise IdMapMismatchError(f"{where}: {name} has {value.shape[0]} entries for {expected} ids")
        for name, column, size in (("user", "user", self.n_users), ("item", "item", self.n_items)):
            top = max((int(getattr(p, column).max()) for p in (self.train, self.test) if len(p)), default=-1)
            if top >= size:
                raise IdMapMismatchError(f"{where}: interactions index {name} {top} but the {name} id map "
                                         f"holds {size} ids")


def _load_attributes(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    columns = json.loads(path.read_text(encoding="utf-8"))
    return {name: np.array(values, dtype=object) for name, values in columns.items()}


def _load_titles(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    titles = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(titles, list) or not all(t is None or isinstance(t, str) for t in titles):
        raise DataError("not a list of item titles", file=str(path))
    return np.array([t or None for t in titles], dtype=object)
