"""One typed job configuration, read from a TOML file and ``TOPX_*`` environment variables.

Precedence, lowest first: defaults, the TOML file, environment variables, command-line options.
Every leaf setting has an environment name made of its path, e.g. ``[train] mode`` is
``TOPX_TRAIN_MODE`` and ``[train.hyperparameters] num_factors`` is
``TOPX_TRAIN_HYPERPARAMETERS_NUM_FACTORS``. A few common settings also have short aliases
(``TOPX_DATABASE_URL``). Nothing is read at import time: call :func:`load_config`.

*What to compute* (hyperparameters, top x) is kept apart from *where and how to run it*
(``device``, batch sizes of the search, SageMaker instances and polling, the work directory,
the database): the latter are marked :func:`place` and left out of :func:`compute_settings`, the
settings a run is resumed by, so changing one never stops a run from resuming.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from batch.errors import ConfigError

Mode = Literal["implicit", "binary", "regression"]
Backend = Literal["local", "sagemaker"]
MODES = typing.get_args(Mode)
BACKENDS = typing.get_args(Backend)


def setting(default: Any = None, doc: str = "", *, place: bool = False, factory: Any = None) -> Any:
    """A field with its one description (``doc``: what ``--help`` shows), and ``place`` when it
    says where or how to run rather than what to compute (see the module docstring)."""
    metadata = {"doc": doc, "place": place}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def place(default: Any = None, doc: str = "", *, factory: Any = None) -> Any:
    """A :func:`setting` that says where or how to run."""
    return setting(default, doc, place=True, factory=factory)


def choices(cls: type, name: str) -> tuple | None:
    """The values a ``Literal``-typed field of ``cls`` allows, or None for any other field."""
    hint = typing.get_type_hints(cls)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def _check_choices(obj: Any, section: str) -> None:
    """Every ``Literal``-typed field of ``obj`` holds one of its values."""
    for f in dataclasses.fields(obj):
        allowed = choices(type(obj), f.name)
        if allowed is not None:
            _choice(f"{section}.{f.name}", getattr(obj, f.name), allowed)


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{name} must be {'≥ 0' if zero_ok else '> 0'}; got {value!r}")


@dataclass(frozen=True)
class ColumnMap:
    """Column names of a generic CSV/Parquet interactions table (MovieLens files have none)."""

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = "rating"
    timestamp: str | None = "timestamp"


@dataclass(frozen=True)
class SynthConfig:
    """Size of the embedded synthetic data set (MovieLens-100k sized by default)."""

    users: int = 943
    items: int = 1682
    interactions: int = 100_000
    seed: int = 0

    def __post_init__(self):
        for name in ("users", "items", "interactions"):
            _positive(f"data.synth.{name}", getattr(self, name))


@dataclass(frozen=True)
class DataConfig:
    """Where interactions come from and how they are split into train and test.

    ``path`` is a MovieLens-layout directory, a single interactions file (``u.data``-style,
    ``.csv``, ``.tsv`` or ``.parquet``) or an ``s3://`` URI of either; ``None`` means the
    embedded synthetic data set. ``split``: ``auto`` uses a directory's ``ua.base``/``ua.test``
    when present and a per-user random holdout otherwise; ``given`` requires the pair (or
    ``test_path``); ``random`` holds out ``holdout`` random interactions per user; ``last`` holds
    out each user's ``holdout`` latest by timestamp; ``none`` trains on everything.
    """

    path: str | None = setting(None, "data set: MovieLens directory, interactions file, or s3:// URI of either; "
                                     "none: the embedded synthetic data set")
    format: Literal["auto", "movielens", "csv", "parquet"] = setting("auto", "file format (auto: from the name)")
    test_path: str | None = None
    delimiter: str | None = None
    header: bool = True
    columns: ColumnMap = field(default_factory=ColumnMap)
    rating_min: float = 0.5
    rating_max: float = 5.0
    user_features: str | None = None
    item_features: str | None = None
    split: Literal["auto", "given", "random", "last", "none"] = setting(
        "auto", "train/test split: auto (ua.base/ua.test if present, else random), given, random, last (latest by "
                "timestamp) or none")
    holdout: int = setting(10, "held-out interactions per user (random and last splits)")
    seed: int = 0
    synth: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self):
        _check_choices(self, "data")
        _positive("data.holdout", self.holdout)
        if self.rating_min > self.rating_max:
            raise ConfigError("data.rating_min must not exceed data.rating_max")


@dataclass(frozen=True)
class FMHyperparameters:
    """Factorization-machine hyperparameters, named as SageMaker's built-in FM names them.

    Learning rates and weight decays are per parameter group: the global bias (``bias_*``),
    the linear weights w (``linear_*``) and the factors V (``factors_*``). ``seed`` is ours.
    Weight decay is per example: each row's loss carries λ‖v_j‖² for the features it uses.

    The defaults were chosen on MovieLens-100k (random 10-per-user holdout, implicit mode), where
    they gave precision@10 0.25, NDCG@10 0.30 against 0.12 / 0.13 for the popularity list (figures
    from that tuning; CI has no MovieLens to re-measure them). The factor
    decay matters most: at 1e-5 the model memorises users (NDCG 0.19), at 0.03 it collapses
    towards popularity; 0.005-0.01 is the plateau.
    """

    num_factors: int = setting(64, "factors per feature (k)")
    epochs: int = setting(10, "passes over the training data")
    mini_batch_size: int = setting(1024, "samples per gradient step")
    bias_lr: float = setting(0.01, "learning rate of the global bias")
    linear_lr: float = setting(0.005, "learning rate of the linear weights w")
    factors_lr: float = setting(0.005, "learning rate of the factors V")
    bias_wd: float = setting(0.0, "weight decay of the global bias")
    linear_wd: float = setting(1e-5, "weight decay of the linear weights, per example")
    factors_wd: float = setting(0.01, "weight decay of the factors, per example")
    factors_init_sigma: float = setting(0.01, "standard deviation of the factors' normal initialisation")
    seed: int = setting(0, "random seed of training (topx's own: SageMaker's FM has none)")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _positive(f"train.hyperparameters.{f.name}", value, zero_ok=f.name.endswith(("_wd", "seed")))

    def to_sagemaker(self, feature_dim: int, predictor_type: str) -> dict[str, str]:
        """The built-in FM's hyperparameters, as the strings SageMaker requires (training job
        requests and the artifact's meta.json). ``seed`` is ours alone: the algorithm has none."""
        values = {
            "feature_dim": feature_dim, "num_factors": self.num_factors, "predictor_type": predictor_type,
            "epochs": self.epochs, "mini_batch_size": self.mini_batch_size,
            "bias_lr": self.bias_lr, "linear_lr": self.linear_lr, "factors_lr": self.factors_lr,
            "bias_wd": self.bias_wd, "linear_wd": self.linear_wd, "factors_wd": self.factors_wd,
            "factors_init_method": "normal", "factors_init_sigma": self.factors_init_sigma,
        }
        return {key: str(value) for key, value in values.items()}


@dataclass(frozen=True)
class IALSConfig:
    """The whole-data implicit objective (iALS) the local engine trains implicit mode with.

    Every unobserved (user, item) pair is a weak negative of weight ``unobserved_weight`` (α0);
    observed pairs have weight 1; rows carry L2 regularisation ``reg`` × (their interaction count
    + α0 × the other side's size) ^ ``reg_exponent`` (frequency-scaled, as in Rendle et al.,
    RecSys 2022). ``cg_steps``: conjugate-gradient steps per row and epoch (0: exact solves,
    slow beyond small data). ``history``: users are represented by the items they interacted
    with (the design's user history block: one column per item, |history|^-½ each) instead of
    a free vector per user; ``history_reg`` is λ for those columns' factors. The number of
    factors, epochs and the seed are the FM's ``num_factors``, ``epochs`` and ``seed``.
    """

    unobserved_weight: float = 3.0
    reg: float = 0.001
    reg_exponent: float = 1.0
    cg_steps: int = 3
    history: bool = True
    history_reg: float = 0.03

    def __post_init__(self):
        _positive("train.ials.unobserved_weight", self.unobserved_weight)
        _positive("train.ials.reg", self.reg, zero_ok=True)
        _positive("train.ials.reg_exponent", self.reg_exponent, zero_ok=True)
        _positive("train.ials.cg_steps", self.cg_steps, zero_ok=True)
        _positive("train.ials.history_reg", self.history_reg, zero_ok=True)


@dataclass(frozen=True)
class TrainConfig:
    """What model to train (mode, labels, hyperparameters) and where (backend, device).

    ``mode``: ``implicit`` (every interaction is a positive, ``negatives`` sampled unseen items
    per positive are negatives), ``binary`` (label = rating ≥ ``threshold``, rated pairs only)
    or ``regression`` (label = rating). ``features``: use user/item side features when the data
    has them.

    ``objective`` (implicit mode): ``ials`` fits the FM's user × item factors on every pair at
    once (unobserved pairs as weak negatives, settings in ``ials``; local backend only);
    ``sampled`` trains the full FM by SGD on ``negatives`` sampled unseen items per positive, as
    SageMaker's FM does; ``auto`` is ``ials`` on the local backend and ``sampled`` on SageMaker.
    """

    mode: Mode = setting("implicit", "implicit (every interaction a positive), binary (label = rating ≥ threshold) "
                                     "or regression (label = rating)")
    backend: Backend = setting("local", "where training runs: local (PyTorch) or sagemaker (built-in FM); "
                                        "sagemaker also moves the search unless --search-backend says otherwise")
    device: Literal["auto", "cpu", "cuda"] = place("auto", "local training's device (auto: cuda when usable)")
    threshold: float = setting(4.0, "binary mode: label = rating ≥ threshold")
    negatives: int = setting(4, "implicit mode, sampled objective: sampled negatives per positive")
    features: bool = True
    objective: Literal["auto", "ials", "sampled"] = "auto"
    hyperparameters: FMHyperparameters = field(default_factory=FMHyperparameters)
    ials: IALSConfig = field(default_factory=IALSConfig)

    @property
    def uses_ials(self) -> bool:
        """Whether training fits the whole-data implicit objective (see ``objective``)."""
        return self.mode == "implicit" and self.backend == "local" and self.objective in ("auto", "ials")

    def __post_init__(self):
        _check_choices(self, "train")
        if self.objective == "ials" and self.backend == "sagemaker":
            raise ConfigError("train.objective ials runs on the local backend only: SageMaker's FM trains "
                              "on sampled negatives (use train.objective auto or sampled)")
        _positive("train.negatives", self.negatives)


@dataclass(frozen=True)
class SearchConfig:
    """How each user's top-x list is found.

    ``method``: ``exact`` inner-product search, or approximate ``ivf`` / ``hnsw`` (faiss) for big
    catalogues; these report their recall@x against exact search on ``recall_sample`` users.
    ``nprobe``: IVF lists searched (64 gave recall@100 0.98 on 50k items; 16 only 0.81).
    ``allow`` / ``deny``: optional files of item ids, one per line, that restrict or exclude
    candidates. ``suppress``: an optional CSV of ``user_id,item_id[,until]`` pairs never to
    recommend (:mod:`batch.serve.suppress`). ``include_attributes`` / ``exclude_attributes``:
    comma-separated item feature columns (``genre=Horror``): only items with one of the first,
    never items with one of the second, in users' lists, similar items and audiences.
    ``max_per_category``: at most this many items of one ``category`` (the item feature columns
    ``<category>=…``) in each user's list and similar-items list (:mod:`batch.serve.capped`).
    ``exclude_seen`` drops items the user already
    interacted with. ``batch_size``:
    queries one search thread scores at a time (memory ≈ threads × batch × items × 4 bytes;
    the exact engine caps it at 128).
    """

    top: int = setting(100, "list length x")
    backend: Backend = setting("local", "where the top-x search runs: local or sagemaker (k-NN)")
    method: Literal["exact", "ivf", "hnsw"] = setting("exact", "local search: exact, or approximate ivf or hnsw")
    exclude_seen: bool = True
    allow: str | None = None
    deny: str | None = None
    suppress: str | None = setting(None, "CSV of user_id,item_id[,until] pairs never to recommend")
    include_attributes: str | None = setting(None, "only items with one of these item features, comma-separated "
                                                   "(e.g. genre=Comedy,genre=Drama)")
    exclude_attributes: str | None = setting(None, "never items with one of these item features, comma-separated")
    max_per_category: int = setting(0, "at most this many items of one category in a list (0: no cap)")
    category: str = setting("genre", "item feature prefix the category cap counts by (genre: genre=… columns)")
    batch_size: int = place(2048)
    nprobe: int = 64
    recall_sample: int = place(1000)

    def __post_init__(self):
        _positive("search.top", self.top)
        _positive("search.max_per_category", self.max_per_category, zero_ok=True)
        _check_choices(self, "search")
        _positive("search.batch_size", self.batch_size)


@dataclass(frozen=True)
class SimilarConfig:
    """Similar items published with each run: every item's ``top`` nearest items by its factors
    (``metric`` ``cosine`` or ``inner_product``); ``top = 0`` publishes none. ``batch_size``:
    items the exact engine scores at a time."""

    top: int = setting(10, "similar items per item, published with the run (0: none)")
    metric: Literal["cosine", "inner_product"] = setting("cosine", "similarity of item factors: cosine or "
                                                                   "inner_product")
    batch_size: int = place(2048)

    def __post_init__(self):
        _positive("similar.top", self.top, zero_ok=True)
        _check_choices(self, "similar")
        _positive("similar.batch_size", self.batch_size)


@dataclass(frozen=True)
class AudienceConfig:
    """Audiences published with each run: for each item id listed in the file ``items`` (one per
    line; ``*`` for every item), the ``size`` users with the highest predicted score who have not
    interacted with it. ``items`` unset: no audiences."""

    items: str | None = setting(None, "file of item ids (one per line, '*': every item) to find audiences for")
    size: int = setting(1000, "users per item audience")

    def __post_init__(self):
        _positive("audience.size", self.size)


@dataclass(frozen=True)
class EvaluateConfig:
    """Offline evaluation on the held-out split: metrics at ``k`` over at most ``max_users``
    users (a seeded sample when there are more)."""

    k: int = setting(10, "cutoff of the offline metrics (NDCG@k, precision@k, ...)")
    max_users: int = 100_000

    def __post_init__(self):
        _positive("evaluate.k", self.k)
        _positive("evaluate.max_users", self.max_users)


@dataclass(frozen=True)
class GateConfig:
    """What a run must pass to become current (see :mod:`batch.publish.gate`). ``metric``: an
    accuracy figure the evaluate stage stores for the model and the popularity list (e.g.
    ``ndcg@10``, ``map@20``); ``tolerance``: the share of the current run's value a new run may
    fall below it by (0.05: at least 95 % of it); ``allow_regression``: publish a run even when
    its metric is below the popularity list's or the current run's (recorded with the run)."""

    metric: str = "ndcg@10"
    tolerance: float = 0.05
    allow_regression: bool = setting(False, "publish even if the run's metric is below the popularity list's or the "
                                            "current run's (recorded with the run)")

    def __post_init__(self):
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"publish.gate.tolerance must be at least 0 and below 1; got {self.tolerance}")
        name, _, k = self.metric.partition("@")
        if not (name in GATE_METRICS and k.isdigit() and int(k) > 0):
            raise ConfigError(f"publish.gate.metric must be one of {', '.join(GATE_METRICS)} at a cutoff, e.g. "
                              f"ndcg@10; got {self.metric!r}")


# Accuracy figures of the evaluate stage (higher is better) the publish gate can compare.
GATE_METRICS = ("ndcg", "precision", "recall", "map", "hit_rate")


@dataclass(frozen=True)
class PublishConfig:
    """Where lists are published. ``database_url``: an SQLAlchemy URL, or ``None`` for the
    embedded SQLite file in the work directory; ``database_secret_arn``: an AWS Secrets Manager
    secret holding the URL instead. ``keep_runs``: published runs kept, older ones deleted;
    ``gate``: what a run must pass to become current."""

    database_url: str | None = setting(None, "SQLAlchemy URL of the database; none: a SQLite file in the work "
                                             "directory")
    database_secret_arn: str | None = None
    keep_runs: int = 5
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self):
        _positive("publish.keep_runs", self.keep_runs)


@dataclass(frozen=True)
class SageMakerConfig:
    """Where SageMaker jobs run: region, role, S3 prefix, instances and limits. All of it says where
    to run except ``knn_index_type`` (an IVF index finds approximate lists)."""

    region: str | None = place(None)
    role_arn: str | None = place(None)
    s3_prefix: str | None = place(None)
    endpoint_url: str | None = place(None)
    train_instance_type: str = place("ml.c5.xlarge")
    train_instance_count: int = place(1)
    knn_instance_type: str = place("ml.c5.xlarge")
    transform_instance_type: str = place("ml.c5.xlarge")
    transform_instance_count: int = place(1)
    max_runtime_s: int = place(86_400)
    use_spot: bool = place(False)
    max_wait_s: int = place(172_800)
    channel_shards: int = place(4)
    knn_index_type: Literal["faiss.Flat", "faiss.IVFFlat"] = "faiss.Flat"
    fm_image: str | None = place(None)
    knn_image: str | None = place(None)
    poll_s: float = place(30.0)

    def __post_init__(self):
        if self.knn_index_type == "faiss.IVFPQ":
            raise ConfigError("sagemaker.knn_index_type faiss.IVFPQ does not support the INNER_PRODUCT metric "
                              "topx ranks by; use faiss.Flat (exact) or faiss.IVFFlat")
        _check_choices(self, "sagemaker")
        for name in ("train_instance_count", "transform_instance_count", "channel_shards"):
            _positive(f"sagemaker.{name}", getattr(self, name))


@dataclass(frozen=True)
class BatchConfig:
    """Where ``topx submit`` sends the job: AWS Batch queue, job definition, region, endpoint."""

    queue: str | None = None
    job_definition: str = "topx"
    region: str | None = None
    endpoint_url: str | None = None
    poll_s: float = 15.0

    def __post_init__(self):
        _positive("batch.poll_s", self.poll_s, zero_ok=True)


@dataclass(frozen=True)
class JobConfig:
    """The whole job: every stage's settings plus the work directory holding stage outputs.

    ``workdir``: a local directory or an ``s3://`` prefix (AWS Batch: lets a retried job resume
    and shard jobs share the run); ``scratch``: the local copy of an S3 work directory (default:
    a folder in the system temp directory).
    """

    workdir: str = place("topx-work", "work directory of runs: a local directory or an s3:// prefix")
    scratch: str | None = place(None)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    similar: SimilarConfig = field(default_factory=SimilarConfig)
    audience: AudienceConfig = field(default_factory=AudienceConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    publish: PublishConfig = place(factory=PublishConfig)
    sagemaker: SageMakerConfig = field(default_factory=SageMakerConfig)
    batch: BatchConfig = place(factory=BatchConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/TOML serialisable) of every setting."""
        return dataclasses.asdict(self)


def describe(key: str) -> tuple[str, Any, tuple | None]:
    """The one description of setting ``key`` (dotted, e.g. ``train.mode``), its default and
    its allowed values (None where any value of its type goes)."""
    *parents, name = key.split(".")
    cls = JobConfig
    for part in parents:
        cls = typing.get_type_hints(cls)[part]
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return f.metadata.get("doc", ""), default, choices(cls, name)


def compute_settings(tree: Mapping[str, Any], cls: type = JobConfig) -> dict[str, Any]:
    """``tree`` (a :meth:`JobConfig.to_dict`, or a saved ``config.json``) less every setting
    marked :func:`place`: what a run computes, whatever runs it where."""
    hints = typing.get_type_hints(cls)
    kept = {}
    for f in dataclasses.fields(cls):
        if f.name not in tree or f.metadata.get("place"):
            continue
        value = tree[f.name]
        kept[f.name] = compute_settings(value, hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) and \
            isinstance(value, Mapping) else value
    return kept


# Short environment names for the settings people set most often.
ENV_ALIASES = {
    "TOPX_DATABASE_URL": ("publish", "database_url"),
    "TOPX_DATABASE_SECRET_ARN": ("publish", "database_secret_arn"),
    "TOPX_WORKDIR": ("workdir",),
    "TOPX_MODE": ("train", "mode"),
    "TOPX_TOP": ("search", "top"),
}
# TOPX_* variables that are not settings (read elsewhere; TOPX_ORACLE_CACHE by the test suite's
# oracle virtualenvs, tests/oracles.py).
ENV_NOT_SETTINGS = {"TOPX_CONFIG", "TOPX_LOG_LEVEL", "TOPX_PROGRESS", "TOPX_SHARD_COUNT", "TOPX_RUN_ID",
                    "TOPX_ORACLE_CACHE"}


def load_config(
    file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    text: str | None = None,
    base: Mapping[str, Any] | None = None,
) -> JobConfig:
    """Build the job configuration.

    ``base``: settings to start from instead of the defaults alone (e.g. a run's saved
    ``config.json``); ``file``: a TOML job file (``text`` may hand in its contents instead, e.g.
    fetched from S3);
    ``env``: the environment (``os.environ`` when None); ``overrides``: dotted keys from the
    command line, e.g. ``{"train.mode": "binary"}``; None values are ignored.
    """
    tree: dict[str, Any] = {}
    _merge(tree, base or {})
    if file is not None and text is None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    if text is not None:
        try:
            _merge(tree, tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file or '<text>'}: {exc}") from None
    _merge(tree, _env_tree(os.environ if env is None else env))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _merge(tree, _nest(tuple(dotted.split(".")), value))
    return _build(JobConfig, tree, ())


def env_names() -> dict[str, tuple[str, ...]]:
    """Every accepted ``TOPX_*`` variable mapped to the setting path it sets."""
    names = {"_".join(("TOPX",) + path).upper(): path for path in _leaf_paths(JobConfig, ())}
    names.update(ENV_ALIASES)
    return names


def _leaf_paths(cls, prefix: tuple[str, ...]):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_paths(hints[f.name], prefix + (f.name,))
        else:
            yield prefix + (f.name,)


def _env_tree(env: Mapping[str, str]) -> dict[str, Any]:
    known, tree = env_names(), {}
    for name, value in env.items():
        if not name.startswith("TOPX_") or name in ENV_NOT_SETTINGS:
            continue
        if name not in known:
            raise ConfigError(f"unknown environment variable {name} (no such setting)")
        _merge(tree, _nest(known[name], value))
    return tree


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _build(cls, tree: Mapping[str, Any], path: tuple[str, ...]):
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(tree) - fields
    if unknown:
        where = ".".join(path) or "top level"
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in tree.items():
        hint, here = hints[name], path + (name,)
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{'.'.join(here)} must be a table of settings")
            kwargs[name] = _build(hint, value, here)
        else:
            kwargs[name] = _coerce(value, hint, ".".join(here))
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    if typing.get_origin(hint) is Literal:
        _choice(name, value, typing.get_args(hint))
        return value
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        hint = next(a for a in args if a is not type(None))
    try:
        if hint is bool:
            return _to_bool(value)
        if hint is int and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is float and not isinstance(value, bool):
            return float(value)
        if hint is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
    except ValueError:
        pass
    raise ConfigError(f"{name} must be {getattr(hint, '__name__', hint)}; got {value!r}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)
