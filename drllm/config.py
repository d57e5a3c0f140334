"""Typed Hydra schemas for the jobs, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` fill these schemas; OmegaConf type-checks every value against
them when the config is composed, so ``search.num_simulations=abc`` fails before Ray or any
actor starts, with a message naming the key. Value ranges (``epsilon`` in [0, 1], ...) are
checked when :func:`to_settings` converts the composed config into the library's frozen
dataclasses; those errors are re-raised as :class:`ConfigError` naming the group and key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is out of range or inconsistent; the message names the key."""


@dataclass
class ModelConf:
    """``model/``: which frozen LLM the evaluators load."""

    name: str = "smollm2-135m-instruct"
    gguf_file: Optional[str] = None
    dtype: str = "float32"
    device: str = "cpu"
    cache_dir: Optional[str] = None
    revision: Optional[str] = None


@dataclass
class DatasetConf:
    """``dataset/``: which questions to search (see ``drllm.data``)."""

    name: str = "synthetic_arith"
    split: str = "train"
    num_examples: Optional[int] = 32
    seed: int = 0
    path: Optional[str] = None
    data_files: Optional[List[str]] = None
    levels: Optional[List[int]] = None
    prompt_style: str = "chat"
    grader: Optional[str] = None
    field_map: Optional[Dict[str, str]] = None
    system_prompt: Optional[str] = None
    max_new_tokens: Optional[int] = None  # None: the dataset's / grader's budget
    stop_strings: Optional[List[str]] = None
    chance_shuffles: int = 1  # multiple choice: correct only under this many choice orders


@dataclass
class SearchConf:
    """``search/``: MCTS budget and knobs (``paper`` = the paper's defaults)."""

    preset: str = "quick"
    num_simulations: int = 50
    c: float = 1.8
    length_penalty: float = 3.0
    epsilon: float = 0.1
    max_consecutive_skips: int = 2
    max_cost_factor: float = 2.0
    min_executed: int = 1
    early_stop: bool = True
    early_stop_margin: int = 2
    success_reward: float = 1.0
    seed: int = 0
    expansion: str = "widening"
    widen_k: float = 1.0
    widen_alpha: float = 0.5
    patience: int = 0
    prior: str = "uniform"
    prior_temperature: float = 1.0
    prior_checkpoint: Optional[str] = None  # prior=router: a router checkpoint directory
    prior_calibration_examples: int = 32  # prior=layer_importance: prompts measured
    max_concurrent_trees: int = 64


@dataclass
class ClusterConf:
    """``cluster/``: where Ray runs and how evaluator actors are placed."""

    mode: str = "local"  # local: start Ray in-process; auto: join an existing cluster
    address: Optional[str] = None
    num_actors: Optional[int] = None  # None: one per GPU, else one per num_cpus_per_actor
    num_cpus_per_actor: int = 1
    use_gpu: Optional[bool] = None  # None: use GPUs when the cluster has them
    max_batch_size: int = 16
    batch_wait_ms: float = 5.0
    max_in_flight_per_actor: int = 2
    max_restarts: int = 3
    namespace: str = "drllm"
    include_dashboard: bool = False
    num_cpus: Optional[int] = None  # local mode: CPUs Ray may use (None: all)


@dataclass
class OutputConf:
    """Where shards go and how they are cut."""

    dir: str = "shards"  # relative to the run's output directory
    rows_per_shard: int = 64
    flush_seconds: float = 60.0


@dataclass
class SearchJobConf:
    """Root schema of ``python -m drllm.jobs.search``."""

    model: ModelConf = field(default_factory=ModelConf)
    dataset: DatasetConf = field(default_factory=DatasetConf)
    search: SearchConf = field(default_factory=SearchConf)
    cluster: ClusterConf = field(default_factory=ClusterConf)
    output: OutputConf = field(default_factory=OutputConf)
    progress: bool = True
    log_level: str = "INFO"
    # auto: resume an output directory written with the same search-affecting config, refuse
    # one written with another; force: resume it anyway (rows of both configs then mix).
    resume: str = "auto"


@dataclass
class TrainConf:
    """``train/``: router training (see ``drllm.routers.training.TrainConfig``)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 500
    epochs: int = 25
    batch_size: int = 16
    gamma: float = 2.0
    beta: float = 0.999
    seed: int = 0
    val_fraction: float = 0.1
    bottleneck: int = 128
    windows: int = 8
    num_workers: int = 1
    use_gpu: Optional[bool] = None
    cpus_per_worker: Optional[int] = None  # None: the cluster's CPUs split over the workers
    max_failures: int = 0
    feature_dtype: str = "float16"
    feature_actors: int = 1
    feature_cpus_per_actor: int = 1
    feature_batch_size: int = 8
    rows: str = "solved"  # supervision rows featurized and trained on: solved | all


@dataclass
class TrainJobConf:
    """Root schema of ``python -m drllm.jobs.train``."""

    model: ModelConf = field(default_factory=ModelConf)
    cluster: ClusterConf = field(default_factory=ClusterConf)
    train: TrainConf = field(default_factory=TrainConf)
    shards_dir: str = MISSING
    features_dir: Optional[str] = None  # default: <shards_dir>/features
    checkpoint_dir: str = "routers"  # relative to the run's output directory
    progress: bool = True
    log_level: str = "INFO"


def register_configs() -> None:
    """Register the schemas so YAML files can declare ``defaults: [_self_, schema...]``."""
    cs = ConfigStore.instance()
    cs.store(name="search_job_schema", node=SearchJobConf)
    cs.store(name="train_job_schema", node=TrainJobConf)
    cs.store(group="model", name="model_schema", node=ModelConf)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConf)
    cs.store(group="search", name="search_schema", node=SearchConf)
    cs.store(group="cluster", name="cluster_schema", node=ClusterConf)
    cs.store(group="train", name="train_schema", node=TrainConf)


def build(group: str, factory: Callable[..., T], **kwargs: Any) -> T:
    """Construct a library config, re-raising its validation error with the group named."""
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid `{group}` config: {err}") from err


@dataclass(frozen=True)
class SearchJobSettings:
    """The composed search-job config converted into the library's validated frozen configs."""

    model: Any
    dataset: Any
    mcts: Any
    generation: Any
    pool: Any
    driver: Any
    cluster: Any
    rows_per_shard: int
    flush_seconds: float
    shards_subdir: str = "shards"
    resume: str = "auto"
    prior_checkpoint: Optional[str] = None
    prior_calibration_examples: int = 32


RESUME_MODES = ("auto", "force")


_DRIVER_ONLY_SEARCH_KEYS = ("preset", "max_concurrent_trees", "prior_checkpoint",
                            "prior_calibration_examples")


def search_job_settings(cfg: Any) -> SearchJobSettings:
    """Validate a composed ``conf/config.yaml`` and build every library config from it.

    Raises:
        ConfigError: naming the group and key of the first bad value.
    """
    from omegaconf import OmegaConf

    from drllm.cluster import ClusterSettings
    from drllm.data import DatasetConfig
    from drllm.distributed.config import DriverConfig, GenerationConfig, PoolConfig
    from drllm.models.loading import ModelSpec
    from drllm.search import MCTSConfig

    c = OmegaConf.to_container(cfg, resolve=True)
    ds = dict(c["dataset"])
    for key in ("levels", "data_files", "stop_strings"):
        if ds.get(key) is not None:
            ds[key] = tuple(ds[key])
    search, cluster = c["search"], c["cluster"]
    output = c["output"]
    if c.get("resume", "auto") not in RESUME_MODES:
        raise ConfigError(f"invalid `resume`: expected one of {RESUME_MODES}, got {c['resume']!r}")
    dataset = build("dataset", DatasetConfig, **ds)
    max_new_tokens, stop_strings = dataset.generation_budget
    if output["rows_per_shard"] < 1:
        raise ConfigError(f"invalid `output` config: rows_per_shard must be >= 1, got {output['rows_per_shard']}")
    return SearchJobSettings(
        model=build("model", ModelSpec, **c["model"]),
        dataset=dataset,
        mcts=build("search", MCTSConfig.from_mapping, values=search, ignore=_DRIVER_ONLY_SEARCH_KEYS),
        generation=build(
            "dataset", GenerationConfig, max_new_tokens=max_new_tokens, stop_strings=stop_strings,
        ),
        driver=build("search", DriverConfig, max_concurrent_trees=search["max_concurrent_trees"]),
        pool=build(
            "cluster", PoolConfig,
            num_actors=cluster["num_actors"], num_cpus_per_actor=cluster["num_cpus_per_actor"],
            use_gpu=cluster["use_gpu"], max_batch_size=cluster["max_batch_size"],
            batch_wait_ms=cluster["batch_wait_ms"],
            max_in_flight_per_actor=cluster["max_in_flight_per_actor"],
            max_restarts=cluster["max_restarts"], namespace=cluster["namespace"],
        ),
        cluster=build(
            "cluster", ClusterSettings,
            mode=cluster["mode"], address=cluster["address"], num_cpus=cluster["num_cpus"],
            include_dashboard=cluster["include_dashboard"], namespace=cluster["namespace"],
        ),
        rows_per_shard=output["rows_per_shard"],
        flush_seconds=output["flush_seconds"],
        shards_subdir=output["dir"],
        resume=c.get("resume", "auto"),
        prior_checkpoint=search.get("prior_checkpoint"),
        prior_calibration_examples=search.get("prior_calibration_examples", 32),
    )
