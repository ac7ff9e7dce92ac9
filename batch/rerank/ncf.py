"""NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017) in PyTorch: the model, its
training on implicit feedback with sampled negatives, and its artifact.

Self-contained on purpose: it imports only torch, numpy and the standard library, because it is
shipped with ``entry.py`` in ``sourcedir.tar.gz`` to SageMaker's PyTorch framework container,
where topx itself is not installed. topx's local engine trains through the same
:func:`train_ncf`, so both give the same weights for the same data and seed (on CPU).

The artifact is two plain files, no pickle anywhere: ``model.npz`` (the state dict, one float32
array per parameter, readable with ``np.load(..., allow_pickle=False)``) and ``settings.json``
(the :class:`NCFSettings` and the table sizes). SageMaker packs its model directory into
``model.tar.gz``; :func:`pack_artifact` makes the same archive locally.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("topx.rerank")

WEIGHTS_FILE = "model.npz"
SETTINGS_FILE = "settings.json"
FORMAT = "topx-neumf-1"
DEFAULT_LIMIT = 1 << 31  # the most bytes an artifact may decompress to (2 GiB)
_NEGATIVE_ROUNDS = 20  # redraws of negatives that hit a positive before giving up on them
_TAR_MTIME = 315532800  # 1980-01-01: the same files give the same archive bytes


class NCFError(ValueError):
    """Bad input to NeuMF training or a broken artifact; the message says what and where."""


@dataclass(frozen=True)
class NCFSettings:
    """NeuMF's hyperparameters (the NCF tutorial's values by default) and where to train.

    ``factors``: GMF embedding size (the paper's "predictive factors"). ``layers``: MLP widths;
    the first is the concatenated user+item embedding (so each MLP embedding has layers[0] / 2
    dimensions, as in the paper's code), then each hidden layer with ReLU and ``dropout``.
    ``negatives``: sampled non-interacted items per positive, drawn afresh every epoch.
    ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    factors: int = 8
    layers: tuple[int, ...] = (64, 32, 16, 8)
    dropout: float = 0.2
    negatives: int = 5
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.001
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(w) for w in self.layers))
        for name in ("factors", "epochs", "batch_size", "negatives"):
            if int(getattr(self, name)) < (0 if name == "negatives" else 1):
                raise NCFError(f"NCF setting {name} must be ≥ {0 if name == 'negatives' else 1}; "
                               f"got {getattr(self, name)!r}")
        if len(self.layers) < 1 or min(self.layers) < 1 or self.layers[0] % 2:
            raise NCFError(f"NCF setting layers must be positive widths, the first even (it holds the user "
                           f"and the item embedding); got {self.layers!r}")
        if not 0 <= self.dropout < 1:
            raise NCFError(f"NCF setting dropout must be in [0, 1); got {self.dropout!r}")
        if not self.lr > 0:
            raise NCFError(f"NCF setting lr must be > 0; got {self.lr!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise NCFError(f"NCF setting device must be auto, cpu or cuda; got {self.device!r}")

    def to_hyperparameters(self) -> dict[str, str]:
        """Every field as a string (SageMaker hyperparameters are strings); layers as ``64,32,16,8``."""
        return {f.name: _format(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_hyperparameters(cls, values: dict[str, str]) -> NCFSettings:
        """The settings from string values (as :meth:`to_hyperparameters` writes); unknown keys
        raise :class:`NCFError`, missing ones keep their defaults."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise NCFError(f"unknown NCF hyperparameters {unknown}; known: {sorted(fields)}")
        parsed = {}
        for name, text in values.items():
            kind = type(getattr(cls(), name))
            try:
                parsed[name] = (tuple(int(w) for w in str(text).split(",")) if kind is tuple
                                else kind(text))
            except ValueError:
                raise NCFError(f"NCF hyperparameter {name}: cannot read {text!r} as "
                               f"{'comma-separated integers' if kind is tuple else kind.__name__}") from None
        return cls(**parsed)


def _format(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


class NeuMF(torch.nn.Module):
    """GMF (element-wise product of user and item embeddings) and an MLP over the concatenated
    embeddings, their last layers concatenated into one logistic output: :meth:`forward` gives
    the probability that the user interacts with the item."""

    def __init__(self, n_users: int, n_items: int, settings: NCFSettings) -> None:
        super().__init__()
        self.n_users, self.n_items, self.settings = int(n_users), int(n_items), settings
        half = settings.layers[0] // 2
        self.gmf_user = torch.nn.Embedding(self.n_users, settings.factors)
        self.gmf_item = torch.nn.Embedding(self.n_items, settings.factors)
        self.mlp_user = torch.nn.Embedding(self.n_users, half)
        self.mlp_item = torch.nn.Embedding(self.n_items, half)
        hidden: list[torch.nn.Module] = []
        for width_in, width_out in zip(settings.layers, settings.layers[1:], strict=False):
            hidden += [torch.nn.Linear(width_in, width_out), torch.nn.ReLU(), torch.nn.Dropout(settings.dropout)]
        self.mlp = torch.nn.Sequential(*hidden)
        self.output = torch.nn.Linear(settings.factors + settings.layers[-1], 1)
        for table in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            torch.nn.init.normal_(table.weight, std=0.01)  # as the paper's code

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores, shape (batch,), for int64 index tensors of shape (batch,)."""
        gmf = self.gmf_user(users) * self.gmf_item(items)
        mlp = self.mlp(torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=1))
        return self.output(torch.cat([gmf, mlp], dim=1)).squeeze(1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Interaction probabilities in (0, 1), shape (batch,)."""
        return torch.sigmoid(self.logits(users, items))


def pick_device(requested: str) -> str:
    """``cuda`` when asked for or (``auto``) available, else ``cpu``; CUDA asked for but missing
    raises :class:`NCFError` rather than quietly training on the CPU."""
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise NCFError("NCF device is cuda but no CUDA device is usable by PyTorch")
    return "cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu"


def check_pairs(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """``users``/``items`` as int64 arrays of one length, every index inside its table; else
    :class:`NCFError` saying which array and which position is wrong."""
    out = []
    for name, values, size in (("users", users, n_users), ("items", items, n_items)):
        values = np.asarray(values)
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise NCFError(f"NCF {name} must be a 1-d integer array; got {values.dtype} of shape {values.shape}")
        bad = np.flatnonzero((values < 0) | (values >= size))
        if bad.size:
            raise NCFError(f"NCF {name}[{bad[0]}] = {values[bad[0]]} is outside 0..{size - 1} "
                           f"({bad.size:,} indices out of range)")
        out.append(values.astype(np.int64, copy=False))
    if len(out[0]) != len(out[1]):
        raise NCFError(f"NCF users and items differ in length: {len(out[0]):,} vs {len(out[1]):,}")
    return out[0], out[1]


def sample_negatives(users: np.ndarray, positives: np.ndarray, n_items: int, count: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` items per entry of ``users`` drawn uniformly among the items that user has no
    positive for. ``positives``: sorted unique keys ``user * n_items + item``. Draws that hit a
    positive are redrawn; the few still hitting one after 20 rounds (users who have nearly every
    item) are dropped. Returns int64 (users, items) of equal length. (The FM's sampler in
    batch.features.negatives is not reused: this module must not import topx.)"""
    neg_users = np.repeat(users, count)
    neg_items = rng.integers(0, n_items, size=neg_users.size, dtype=np.int64)
    hit = _is_positive(neg_users * n_items + neg_items, positives)
    for _ in range(_NEGATIVE_ROUNDS):
        if not hit.any():
            break
        neg_items[hit] = rng.integers(0, n_items, size=int(hit.sum()), dtype=np.int64)
        hit[hit] = _is_positive(neg_users[hit] * n_items + neg_items[hit], positives)
    return neg_users[~hit], neg_items[~hit]


def _is_positive(keys: np.ndarray, positives: np.ndarray) -> np.ndarray:
    at = np.minimum(np.searchsorted(positives, keys), max(len(positives) - 1, 0))
    return (positives[at] == keys) if len(positives) else np.zeros(keys.shape, bool)


def train_ncf(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
              settings: NCFSettings) -> NeuMF:
    """NeuMF trained on the positive pairs (``users[k]``, ``items[k]``): each epoch draws
    ``settings.negatives`` fresh negatives per positive, shuffles, and minimises binary
    cross-entropy with Adam. Deterministic per ``settings.seed`` on the CPU; the caller's
    random state is left as it was. Returns the model in eval mode, on the CPU."""
    users, items = check_pairs(users, items, n_users, n_items)
    if users.size == 0:
        raise NCFError("NCF training needs at least one interaction; got none")
    device = pick_device(settings.device)
    log.info("NeuMF: %d users, %d items, %d positives, %s on %s", n_users, n_items, users.size,
             settings.to_hyperparameters(), device)
    positives = np.unique(users * n_items + items)
    rng = np.random.default_rng(settings.seed)
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
        torch.manual_seed(settings.seed)
        model = NeuMF(n_users, n_items, settings).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        for epoch in range(settings.epochs):
            loss = _epoch(model, optimizer, users, items, positives, rng, device)
            log.info("NeuMF epoch %d/%d: loss %.4f", epoch + 1, settings.epochs, loss)
    return model.cpu().eval()


def _epoch(model: NeuMF, optimizer: torch.optim.Optimizer, users: np.ndarray, items: np.ndarray,
           positives: np.ndarray, rng: np.random.Generator, device: str) -> float:
    """One pass over the positives and freshly drawn negatives; the mean loss."""
    neg_users, neg_items = sample_negatives(users, positives, model.n_items, model.settings.negatives, rng)
    order = rng.permutation(users.size + neg_users.size)
    all_users = torch.from_numpy(np.concatenate([users, neg_users])[order]).to(device)
    all_items = torch.from_numpy(np.concatenate([items, neg_items])[order]).to(device)
    labels = torch.from_numpy((order < users.size).astype(np.float32)).to(device)
    model.train()
    total, size = 0.0, model.settings.batch_size
    for start in range(0, len(order), size):
        batch = slice(start, start + size)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model.logits(all_users[batch], all_items[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(labels[batch])
    return total / len(order)


def predict(model: NeuMF, users: np.ndarray, items: np.ndarray, batch_size: int = 1 << 16) -> np.ndarray:
    """NeuMF probabilities for the pairs (``users[k]``, ``items[k]``): float32, shape (n_pairs,)."""
    users, items = check_pairs(users, items, model.n_users, model.n_items)
    model.eval()
    out = np.empty(users.size, np.float32)
    with torch.no_grad():
        for start in range(0, users.size, batch_size):
            part = slice(start, start + batch_size)
            out[part] = model(torch.from_numpy(users[part]), torch.from_numpy(items[part])).numpy()
    return out


def save_artifact(model: NeuMF, settings: NCFSettings, directory: str | Path) -> list[Path]:
    """Write ``model.npz`` (the state dict as float32 arrays) and ``settings.json`` (``settings``
    and the table sizes) into ``directory`` (made if missing); returns the two paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {name: t.detach().cpu().numpy().astype(np.float32) for name, t in model.state_dict().items()}
    weights, meta = directory / WEIGHTS_FILE, directory / SETTINGS_FILE
    with open(weights, "wb") as f:
        np.savez(f, **arrays)
    meta.write_text(json.dumps({"format": FORMAT, "n_users": model.n_users, "n_items": model.n_items,
                                "settings": settings.to_hyperparameters()}, indent=2, sort_keys=True) + "\n")
    return [weights, meta]


def pack_artifact(directory: str | Path) -> bytes:
    """``model.tar.gz`` bytes of the two artifact files in ``directory``, as SageMaker packs a
    model directory (fixed timestamps: the same files give the same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in (WEIGHTS_FILE, SETTINGS_FILE):
            data = (Path(directory) / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), _TAR_MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def load_artifact(source: str | Path | bytes, limit: int = DEFAULT_LIMIT) -> tuple[NeuMF, NCFSettings]:
    """The model (eval mode, CPU) and settings from a model directory, a ``model.tar.gz`` path,
    or its bytes. Never unpickles and never extracts to disk; a gzip stream decompressing to
    more than ``limit`` bytes is refused. Broken or mismatched files raise :class:`NCFError`."""
    files = _artifact_files(source, limit)
    try:
        meta = json.loads(files[SETTINGS_FILE])
        if meta.get("format") != FORMAT:
            raise NCFError(f"{SETTINGS_FILE} is not a {FORMAT} artifact (format {meta.get('format')!r})")
        settings = NCFSettings.from_hyperparameters(meta["settings"])
        model = NeuMF(int(meta["n_users"]), int(meta["n_items"]), settings)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise NCFError(f"{SETTINGS_FILE} of the NeuMF artifact is unreadable: {exc}") from None
    model.load_state_dict(_state_dict(files[WEIGHTS_FILE], model))
    return model.eval(), settings


def _state_dict(data: bytes, model: NeuMF) -> dict[str, torch.Tensor]:
    """The arrays of ``model.npz``, checked name by name and shape by shape against ``model``."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise NCFError(f"{WEIGHTS_FILE} of the NeuMF artifact is unreadable: {exc}") from None
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: a.shape for name, a in arrays.items()}
    if found != expected:
        raise NCFError(f"{WEIGHTS_FILE} does not match its settings: expected {expected}, found {found}")
    return {name: torch.from_numpy(np.ascontiguousarray(a, np.float32)) for name, a in arrays.items()}


def _artifact_files(source: str | Path | bytes, limit: int) -> dict[str, bytes]:
    if isinstance(source, str | Path) and Path(source).is_dir():
        return {name: _read_file(Path(source) / name) for name in (WEIGHTS_FILE, SETTINGS_FILE)}
    data = source if isinstance(source, bytes) else _read_file(Path(source))
    return _tar_files(_gunzip(data, limit) if data[:2] == b"\x1f\x8b" else data)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NCFError(f"cannot read the NeuMF artifact {path}: {exc}") from None


def _gunzip(data: bytes, limit: int) -> bytes:
    """The whole gzip stream decompressed (CRC checked), stopping once it passes ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise NCFError(f"the NeuMF model.tar.gz is not a valid gzip stream: {exc}") from None
    if len(out) > limit:
        raise NCFError(f"the NeuMF model.tar.gz decompresses to more than {limit:,} bytes")
    if not inflater.eof:
        raise NCFError("the NeuMF model.tar.gz is truncated: the gzip stream ends early")
    return out


def _tar_files(raw: bytes) -> dict[str, bytes]:
    """The two artifact files (named plainly or ``./name``) of an uncompressed tar, read in memory."""
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            missing = [n for n in (WEIGHTS_FILE, SETTINGS_FILE) if n not in members or not members[n].isfile()]
            if missing:
                raise NCFError(f"the NeuMF model.tar.gz lacks {', '.join(missing)} "
                               f"(it holds {', '.join(sorted(members)) or 'nothing'})")
            files = {n: tar.extractfile(members[n]).read() for n in (WEIGHTS_FILE, SETTINGS_FILE)}
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise NCFError(f"the NeuMF model.tar.gz holds a broken tar: {exc}") from None
    short = [n for n, data in files.items() if len(data) != members[n].size]
    if short:
        raise NCFError(f"{', '.join(short)} in the NeuMF model.tar.gz is truncated")
    return files


def save_interactions(path: str | Path, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> None:
    """The training channel file: int64 ``users``, ``items`` and scalars ``n_users``, ``n_items``."""
    users, items = check_pairs(users, items, n_users, n_items)
    with open(path, "wb") as f:
        np.savez(f, users=users, items=items, n_users=np.int64(n_users), n_items=np.int64(n_items))


def load_interactions(path: str | Path) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(users, items, n_users, n_items) from a channel file written by :func:`save_interactions`,
    checked as :func:`check_pairs` does."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            users, items = npz["users"], npz["items"]
            n_users, n_items = int(npz["n_users"]), int(npz["n_items"])
    except (KeyError, ValueError, OSError, EOFError, zlib.error) as exc:
        raise NCFError(f"{path} is not an NCF interactions file (int64 users, items; scalars n_users, "
                       f"n_items): {exc}") from None
    users, items = check_pairs(users, items, n_users, n_items)
    return users, items, n_users, n_items
