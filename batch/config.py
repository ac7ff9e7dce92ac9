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
from collections.abc import Iterator, Mapping
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

    user: str = setting("user_id", "column of user ids")
    item: str = setting("item_id", "column of item ids")
    rating: str | None = setting("rating", "column of ratings (none, or a column the table lacks: ratings read as "
                                           "missing, implicit data)")
    timestamp: str | None = setting("timestamp", "column of timestamps (none, or a column the table lacks: all 0)")


@dataclass(frozen=True)
class SynthConfig:
    """Size of the embedded synthetic data set (MovieLens-100k sized by default)."""

    users: int = setting(943, "users of the synthetic data set")
    items: int = setting(1682, "items of the synthetic data set")
    interactions: int = setting(100_000, "interactions of the synthetic data set")
    seed: int = setting(0, "random seed of the synthetic data set")

    def __post_init__(self):
        for name in ("users", "items", "interactions"):
            _positive(f"data.synth.{name}", getattr(self, name))


@dataclass(frozen=True)
class DataConfig:
    """Where interactions come from and how they are split into train and test. A single
    interactions file is ``u.data``-style, ``.csv``, ``.tsv`` or ``.parquet``."""

    path: str | None = setting(None, "data set: MovieLens directory, interactions file, or s3:// URI of either; "
                                     "none: the embedded synthetic data set")
    format: Literal["auto", "movielens", "csv", "parquet"] = setting("auto", "file format (auto: from the name)")
    test_path: str | None = setting(None, "interactions file of the test set (given split) when the data is one file")
    delimiter: str | None = setting(None, "field delimiter of a text file (tab, comma, pipe, semicolon or the "
                                          "character); none: .csv comma, .tsv tab, else guessed from the first line")
    header: bool = setting(True, "a text file's first line names its columns")
    columns: ColumnMap = setting(factory=ColumnMap, doc="which columns of a generic table are user, item, rating "
                                                        "and timestamp")
    rating_min: float = setting(0.5, "lowest valid rating; a rating outside rating_min..rating_max is an error")
    rating_max: float = setting(5.0, "highest valid rating")
    user_features: str | None = setting(None, "catalogue file of user side features (one row per user id)")
    item_features: str | None = setting(None, "catalogue file of item side features (one row per item id)")
    split: Literal["auto", "given", "random", "last", "none"] = setting(
        "auto", "train/test split: auto (ua.base/ua.test if present, else random), given (ua.base/ua.test or "
                "test_path), random, last (each user's latest by timestamp) or none (train on everything)")
    holdout: int = setting(10, "held-out interactions per user (random and last splits)")
    seed: int = setting(0, "random seed of the random split and of the evaluated users' sample")
    synth: SynthConfig = setting(factory=SynthConfig, doc="the embedded synthetic data set (no path)")

    def __post_init__(self):
        _check_choices(self, "data")
        _positive("data.holdout", self.holdout)
        if self.rating_min > self.rating_max:
            raise ConfigError("data.rating_min must not exceed data.rating_max")


@dataclass(frozen=True)
class FMHyperparameters:
    """Factorization-machine hyperparameters, named as SageMaker's built-in FM names them.

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

    Observed pairs have weight 1, every unobserved pair is a weak negative; the regularisation is
    frequency-scaled, as in Rendle et al., RecSys 2022. The number of factors, epochs and the
    seed are the FM's ``num_factors``, ``epochs`` and ``seed``.
    """

    unobserved_weight: float = setting(3.0, "weight α0 of every unobserved (user, item) pair, a weak negative")
    reg: float = setting(0.001, "L2 regularisation λ of a row, times (its interaction count + α0 × the other "
                                "side's size) ^ reg_exponent")
    reg_exponent: float = setting(1.0, "exponent ν of the frequency scaling of reg")
    cg_steps: int = setting(3, "conjugate-gradient steps per row and epoch (0: exact solves, slow beyond small data)")
    history: bool = setting(True, "users as the items they interacted with (the design's user history block, one "
                                  "column per item, |history|^-½ each) instead of a free vector per user")
    history_reg: float = setting(0.03, "λ of the history columns' factors")
    item_item: float = setting(1.0, "weight β of the closed-form item-item member (EASE) whose scores are added to "
                                    "iALS's as a block of factors of its own (0: iALS alone)")
    item_item_sagemaker: float = setting(15.0, "weight β of the same member on the SageMaker backend, added to "
                                                "the SageMaker FM's scores (logits) in its artifact after the "
                                                "training job (0: the FM alone)")
    item_item_l2: float = setting(300.0, "the item-item member's L2 regularisation λ")
    item_item_recency: float = setting(1.0, "extra weight of a user's recent items in the item-item member: each "
                                            "item counts 1 + recency × ½^(age / half_life), age = how many of the "
                                            "user's items came after it (used as set where item_item_choose_recency "
                                            "is false or the carve holds nothing out)")
    item_item_half_life: float = setting(5.0, "half-life of that extra weight, in items")
    item_item_choose_recency: bool = setting(True, "choose item_item_recency at train time: 0, ½, 1, 2 and 4 are "
                                                   "each scored on a validation carve of the training data held out "
                                                   "as data.split holds out its test part (random for given, last "
                                                   "for none) and the best is kept (false: item_item_recency as set)")
    item_item_rating_exponent: float = setting(0.5, "each interaction counts (its rating / its user's highest "
                                                    "rating) ^ this in the item-item member's fit and profiles (1 "
                                                    "without a rating; 0, or any rating ≤ 0: ratings ignored)")
    item_item_sessions: float = setting(2.0, "weight γ of the users' sessions in the item-item member's fit (items "
                                             "taken up in one sitting count as closer; 0: histories only)")
    item_item_session_gap: float = setting(1800.0, "seconds without an interaction that end a session")
    item_item_features: float = setting(64.0, "weight g of the items' indicator features (name=value columns such "
                                              "as genre=Comedy; not numeric ones) as rows of the item-item "
                                              "member's fit: items that share a feature count as closer (0: none)")
    item_item_choose_features: bool = setting(True, "choose at train time, on the same validation carve as the "
                                                    "recency, whether the item features join the item-item member "
                                                    "(item_item_features or 0; false: item_item_features as set)")
    item_item_max_rank: int = setting(6144, "the item-item member is exact with min(users + sessions + item "
                                            "features, items) factors; beyond this many the features are left out, "
                                            "then the sessions, and the member too when min(users, items) is "
                                            "beyond it")
    item_item_max_cells: int = setting(64_000_000, "the item-item member is left out beyond this many users × items "
                                                   "(it takes a dense users × items product)")
    item_item_max_session_cells: int = setting(64_000_000, "the item features, then the sessions, are left out of "
                                                           "the item-item member when its item block, items × "
                                                           "min(users + sessions + features, items), would be "
                                                           "larger")

    def __post_init__(self):
        _positive("train.ials.unobserved_weight", self.unobserved_weight)
        _positive("train.ials.reg", self.reg, zero_ok=True)
        _positive("train.ials.reg_exponent", self.reg_exponent, zero_ok=True)
        _positive("train.ials.cg_steps", self.cg_steps, zero_ok=True)
        _positive("train.ials.history_reg", self.history_reg, zero_ok=True)
        _positive("train.ials.item_item", self.item_item, zero_ok=True)
        _positive("train.ials.item_item_sagemaker", self.item_item_sagemaker, zero_ok=True)
        _positive("train.ials.item_item_l2", self.item_item_l2)
        _positive("train.ials.item_item_recency", self.item_item_recency, zero_ok=True)
        _positive("train.ials.item_item_half_life", self.item_item_half_life)
        _positive("train.ials.item_item_rating_exponent", self.item_item_rating_exponent, zero_ok=True)
        _positive("train.ials.item_item_sessions", self.item_item_sessions, zero_ok=True)
        _positive("train.ials.item_item_session_gap", self.item_item_session_gap, zero_ok=True)
        _positive("train.ials.item_item_features", self.item_item_features, zero_ok=True)
        _positive("train.ials.item_item_max_rank", self.item_item_max_rank, zero_ok=True)
        _positive("train.ials.item_item_max_cells", self.item_item_max_cells, zero_ok=True)
        _positive("train.ials.item_item_max_session_cells", self.item_item_max_session_cells, zero_ok=True)


@dataclass(frozen=True)
class TrainConfig:
    """What model to train (mode, labels, hyperparameters) and where (backend, device)."""

    mode: Mode = setting("implicit", "implicit (every interaction a positive), binary (label = rating ≥ threshold) "
                                     "or regression (label = rating)")
    backend: Backend = setting("local", "where training runs: local (PyTorch) or sagemaker (built-in FM); "
                                        "sagemaker also moves the search unless --search-backend says otherwise")
    device: Literal["auto", "cpu", "cuda"] = place("auto", "local training's device (auto: cuda when usable)")
    threshold: float = setting(4.0, "binary mode: label = rating ≥ threshold")
    negatives: int = setting(8, "implicit mode, sampled objective: sampled negatives per positive")
    features: bool = setting(True, "use user/item side features when the data has them")
    objective: Literal["auto", "ials", "sampled"] = setting(
        "auto", "implicit mode: ials (the FM's user × item factors fit on every pair at once, unobserved pairs as "
                "weak negatives; local backend only), sampled (SGD of the full FM on sampled negatives, as "
                "SageMaker's FM trains) or auto (ials locally, sampled on SageMaker)")
    hyperparameters: FMHyperparameters = setting(factory=FMHyperparameters, doc="the FM's hyperparameters")
    ials: IALSConfig = setting(factory=IALSConfig, doc="the iALS objective's settings")

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
    """How each user's top-x list is found. Suppression: :mod:`batch.serve.suppress`; the
    category cap: :mod:`batch.serve.capped`; availability: :mod:`batch.data.availability`.
    Attribute rules, availability and the category cap apply to users' lists, similar items and
    audiences."""

    top: int = setting(100, "list length x")
    backend: Backend = setting("local", "where the top-x search runs: local or sagemaker (k-NN)")
    method: Literal["exact", "ivf", "hnsw"] = setting("exact", "local search: exact, or approximate ivf or hnsw")
    exclude_seen: bool = setting(True, "never recommend an item the user already interacted with")
    allow: str | None = setting(None, "file of item ids, one per line: only these are recommended")
    deny: str | None = setting(None, "file of item ids, one per line: these are never recommended")
    suppress: str | None = setting(None, "CSV of user_id,item_id[,until] pairs never to recommend")
    include_attributes: str | None = setting(None, "only items with one of these item features, comma-separated "
                                                   "(e.g. genre=Comedy,genre=Drama)")
    exclude_attributes: str | None = setting(None, "never items with one of these item features, comma-separated")
    max_per_category: int = setting(0, "at most this many items of one category in a list (0: no cap)")
    category: str = setting("genre", "item feature prefix the category cap counts by (genre: genre=… columns)")
    availability: bool = setting(False, "leave out items not available at the run's reference time (item file "
                                        "columns available_from, available_until, in_stock)")
    reference_time: str | None = setting(None, "the run's reference time for availability, ISO 8601 (default: when "
                                               "the run ingested its data)")
    batch_size: int = place(2048, "queries one search thread scores at a time (memory ≈ threads × batch × items "
                                  "× 4 bytes; the exact engine caps it at 128)")
    nprobe: int = setting(64, "IVF lists searched (64 gave recall@100 0.98 on 50k items; 16 only 0.81)")
    recall_sample: int = place(1000, "users the approximate methods measure their recall@x against exact search on")

    def __post_init__(self):
        _positive("search.top", self.top)
        _positive("search.max_per_category", self.max_per_category, zero_ok=True)
        if self.reference_time is not None:
            from batch.data.availability import parse_time

            try:
                parse_time(self.reference_time)
            except ValueError:
                raise ConfigError(f"search.reference_time {self.reference_time!r} is not an ISO 8601 date or "
                                  f"time") from None
        _check_choices(self, "search")
        _positive("search.batch_size", self.batch_size)


@dataclass(frozen=True)
class NCFConfig:
    """NeuMF's hyperparameters (:mod:`batch.rerank.ncf`), the NCF tutorial's values by default."""

    factors: int = setting(8, "GMF embedding size (the paper's predictive factors)")
    layers: str = setting("64,32,16,8", "MLP widths, comma-separated: the first is the concatenated user and item "
                                        "embedding (half each), then hidden layers with ReLU and dropout")
    dropout: float = setting(0.2, "dropout after each hidden MLP layer")
    negatives: int = setting(5, "sampled non-interacted items per positive, drawn afresh each epoch")
    epochs: int = setting(10, "passes over the training interactions")
    batch_size: int = setting(256, "samples per Adam step")
    lr: float = setting(0.001, "Adam's learning rate")
    seed: int = setting(0, "random seed of initialisation, negatives, shuffling and dropout")

    def __post_init__(self):
        for name in ("factors", "epochs", "batch_size", "lr"):
            _positive(f"rerank.ncf.{name}", getattr(self, name))
        _positive("rerank.ncf.negatives", self.negatives, zero_ok=True)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"rerank.ncf.dropout must be in [0, 1); got {self.dropout!r}")
        widths = self.layers.split(",")
        if not all(w.strip().isdigit() and int(w) > 0 for w in widths) or int(widths[0]) % 2:
            raise ConfigError(f"rerank.ncf.layers must be positive integers separated by commas, the first even "
                              f"(it holds the user and the item embedding); got {self.layers!r}")


@dataclass(frozen=True)
class RerankConfig:
    """The second stage (:mod:`batch.rerank`): NeuMF re-scores each user's top candidates from
    the FM's search and the best x are published."""

    model: Literal["none", "ncf"] = setting("none", "re-ranker of the FM's candidates: none, or ncf (NeuMF trained on "
                                                     "the run's training interactions)")
    candidates: int = setting(200, "FM candidates per user the re-ranker re-scores (at least search.top are used)")
    ncf: NCFConfig = setting(factory=NCFConfig, doc="NeuMF's hyperparameters")

    def __post_init__(self):
        _check_choices(self, "rerank")
        _positive("rerank.candidates", self.candidates)

    @property
    def enabled(self) -> bool:
        return self.model != "none"


@dataclass(frozen=True)
class SimilarConfig:
    """Similar items published with each run: every item's nearest items by its factors."""

    top: int = setting(10, "similar items per item, published with the run (0: none)")
    metric: Literal["cosine", "inner_product"] = setting("cosine", "similarity of item factors: cosine or "
                                                                   "inner_product")
    batch_size: int = place(2048, "items the exact engine scores at a time")

    def __post_init__(self):
        _positive("similar.top", self.top, zero_ok=True)
        _check_choices(self, "similar")
        _positive("similar.batch_size", self.batch_size)


@dataclass(frozen=True)
class AudienceConfig:
    """Audiences published with each run: for each listed item, the users with the highest
    predicted score who have not interacted with it."""

    items: str | None = setting(None, "file of item ids (one per line, '*': every item) to find audiences for; "
                                      "none: no audiences")
    size: int = setting(1000, "users per item audience")

    def __post_init__(self):
        _positive("audience.size", self.size)


@dataclass(frozen=True)
class EvaluateConfig:
    """Offline evaluation on the held-out split."""

    k: int = setting(10, "cutoff of the offline metrics (NDCG@k, precision@k, ...)")
    max_users: int = setting(100_000, "users the metrics are computed over at most (a seeded sample when there "
                                      "are more)")

    def __post_init__(self):
        _positive("evaluate.k", self.k)
        _positive("evaluate.max_users", self.max_users)


@dataclass(frozen=True)
class GateConfig:
    """What a run must pass to become current (see :mod:`batch.publish.gate`)."""

    metric: str = setting("ndcg@10", "accuracy figure compared with the popularity list's and the current run's: "
                                     "ndcg, precision, recall, map or hit_rate at a cutoff (e.g. map@20)")
    tolerance: float = setting(0.05, "share of the current run's metric a new run may fall below it by (0.05: at "
                                     "least 95 % of it)")
    allow_regression: bool = setting(False, "publish even if the run's metric is below the popularity list's or the "
                                            "current run's (recorded with the run)")
    require_metric: bool = setting(True, "refuse a run without a value of the metric (not evaluated, or split "
                                         "none); false: publish it without the metric checks")

    def __post_init__(self):
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"publish.gate.tolerance must be at least 0 and below 1; got {self.tolerance}")
        name, _, k = self.metric.partition("@")
        if not (name in GATE_METRICS and k.isdigit() and int(k) > 0):
            raise ConfigError(f"publish.gate.metric must be one of {', '.join(GATE_METRICS)} at a cutoff, e.g. "
                              f"ndcg@10; got {self.metric!r}")


# Accuracy figures of the evaluate stage (higher is better) the publish gate can compare.
GATE_METRICS = ("ndcg", "precision", "recall", "map", "hit_rate")
# The evaluate stage reports accuracy at these k, and at evaluate.k and search.top.
EVALUATE_CUTOFFS = (1, 5, 10, 20, 50)


@dataclass(frozen=True)
class PublishConfig:
    """Where lists are published, and which runs are kept."""

    database_url: str | None = setting(None, "SQLAlchemy URL of the database; none: a SQLite file in the work "
                                             "directory")
    database_secret_arn: str | None = setting(None, "AWS Secrets Manager secret holding the database URL instead")
    keep_runs: int = setting(5, "published runs kept; older ones are deleted")
    gate: GateConfig = setting(factory=GateConfig, doc="what a run must pass to become current")

    def __post_init__(self):
        _positive("publish.keep_runs", self.keep_runs)


@dataclass(frozen=True)
class SageMakerConfig:
    """Where SageMaker jobs run: region, role, S3 prefix, instances and limits. All of it says where
    to run except the k-NN index type (an IVF index finds approximate lists)."""

    region: str | None = place(None, "AWS region of the jobs (none: the AWS default)")
    role_arn: str | None = place(None, "IAM role the jobs run as")
    s3_prefix: str | None = place(None, "s3:// prefix of the jobs' input and output")
    endpoint_url: str | None = place(None, "endpoint of SageMaker and S3 (e.g. the local emulator; none: AWS)")
    train_instance_type: str = place("ml.c5.xlarge", "instance type of training jobs")
    train_instance_count: int = place(1, "instances per training job")
    knn_instance_type: str = place("ml.c5.xlarge", "instance type of the k-NN index jobs")
    transform_instance_type: str = place("ml.c5.xlarge", "instance type of the search's batch transform jobs")
    transform_instance_count: int = place(1, "instances per batch transform job")
    max_runtime_s: int = place(86_400, "longest a job may run, in seconds")
    use_spot: bool = place(False, "train on spot instances")
    max_wait_s: int = place(172_800, "spot training: longest wait for and on spot capacity, in seconds (at least "
                                     "max_runtime_s)")
    channel_shards: int = place(4, "objects each training channel is written as")
    knn_index_type: Literal["faiss.Flat", "faiss.IVFFlat"] = setting(
        "faiss.Flat", "k-NN index: faiss.Flat (exact) or faiss.IVFFlat (approximate lists)")
    fm_image: str | None = place(None, "image URI of the FM algorithm (none: the region's built-in one)")
    knn_image: str | None = place(None, "image URI of the k-NN algorithm (none: the region's built-in one)")
    script_instance_type: str | None = place(None, "instance type of script-mode training jobs (the NeuMF "
                                                   "re-ranker; none: train_instance_type); ml.g* and ml.p* get the "
                                                   "GPU image")
    pytorch_image: str | None = place(None, "image URI of script-mode training jobs (none: the region's PyTorch "
                                            "2.8.0 training image)")
    poll_s: float = place(30.0, "seconds between job status polls")

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

    queue: str | None = setting(None, "AWS Batch job queue")
    job_definition: str = setting("topx", "AWS Batch job definition")
    region: str | None = setting(None, "AWS region of the queue (none: the AWS default)")
    endpoint_url: str | None = setting(None, "endpoint of AWS Batch (none: AWS)")
    poll_s: float = setting(15.0, "seconds between job status polls")

    def __post_init__(self):
        _positive("batch.poll_s", self.poll_s, zero_ok=True)


@dataclass(frozen=True)
class JobConfig:
    """The whole job: every stage's settings plus the work directory holding stage outputs.
    An ``s3://`` work directory lets a retried AWS Batch job resume and shard jobs share the run."""

    workdir: str = place("topx-work", "work directory of runs: a local directory or an s3:// prefix")
    scratch: str | None = place(None, "local copy of an s3:// work directory (none: a folder in the system temp "
                                      "directory)")
    data: DataConfig = setting(factory=DataConfig, doc="where interactions come from and how they are split")
    train: TrainConfig = setting(factory=TrainConfig, doc="what model to train, and where")
    search: SearchConfig = setting(factory=SearchConfig, doc="how each user's top-x list is found")
    rerank: RerankConfig = setting(factory=RerankConfig, doc="a second stage re-ranking each user's FM candidates")
    similar: SimilarConfig = setting(factory=SimilarConfig, doc="similar items published with each run")
    audience: AudienceConfig = setting(factory=AudienceConfig, doc="audiences published with each run")
    evaluate: EvaluateConfig = setting(factory=EvaluateConfig, doc="offline evaluation on the held-out split")
    publish: PublishConfig = place(factory=PublishConfig, doc="where lists are published")
    sagemaker: SageMakerConfig = setting(factory=SageMakerConfig, doc="where SageMaker jobs run")
    batch: BatchConfig = place(factory=BatchConfig, doc="where topx submit sends the job (AWS Batch)")

    def __post_init__(self):
        stored = sorted({*EVALUATE_CUTOFFS, self.evaluate.k, self.search.top})
        cutoff = int(self.publish.gate.metric.partition("@")[2])
        if cutoff not in stored:
            raise ConfigError(f"publish.gate.metric {self.publish.gate.metric!r}: the evaluate stage stores metrics "
                              f"only at k = {', '.join(map(str, stored))} (evaluate.k, search.top and "
                              f"{', '.join(map(str, EVALUATE_CUTOFFS))}); use one of these or set evaluate.k")

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


def settings(cls: type = JobConfig, prefix: str = "") -> Iterator[tuple[str, bool]]:
    """Every setting's dotted key with whether it is a section (a table of settings) rather than
    a value: a section's values first, then its sections, each in declaration order."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    yield from ((prefix + f.name, False) for f in fields if not dataclasses.is_dataclass(hints[f.name]))
    for f in fields:
        if dataclasses.is_dataclass(hints[f.name]):
            yield prefix + f.name, True
            yield from settings(hints[f.name], prefix + f.name + ".")


def settings_reference() -> str:
    """The README's table of every setting: key (a section as its TOML table), environment name,
    default and description, each from :func:`describe`."""

    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|")

    rows = ["| Setting | Environment variable | Default | Description |", "|---|---|---|---|"]
    for key, section in settings():
        doc, default, _ = describe(key)
        if section:
            rows.append(f"| **[{key}]** | | | {cell(doc)} |")
            continue
        shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else default
        env = "TOPX_" + key.replace(".", "_").upper()
        rows.append(f"| `{key}` | `{env}` | `{cell(shown)}` | {cell(doc)} |")
    return "\n".join(rows) + "\n"


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
