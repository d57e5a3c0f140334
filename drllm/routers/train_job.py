"""The router-training job: feature pass, then a Ray Train ``TorchTrainer`` fit, then a checkpoint.

``python -m drllm.jobs.train`` (Hydra) composes a :class:`TrainJobSettings` and calls
:func:`run`:

1. :func:`~drllm.routers.features.run_feature_pass` runs to completion first (Ray Data actor
   pool; reused when the shards, model, ``W``, dtype and row filter are unchanged), so its
   actors have released their CPUs before training asks for them -- the pipeline cannot
   deadlock on a small machine. It featurizes the rows of the row filter only (``features.rows``:
   ``solved`` by default, ``all``; :mod:`drllm.routers.rows`), so training sees those rows;
2. :func:`fit_routers` splits rows by example id, counts the **training** split's target mass
   for the loss weights (and the logit adjustment inference applies), and runs
   :func:`~drllm.routers.train_worker.train_loop_per_worker` on
   ``num_workers`` Ray Train workers (CPU by default, one GPU each when the cluster has GPUs);
3. the routers of the best epoch (``train.select``) are written with
   :meth:`Routers.save_pretrained` to ``<output>/<checkpoint_dir>`` along with their validation
   metrics, the rows used (``config.json["rows"]``: filter, used, skipped_unsolved, train,
   val), the logit adjustment, the labels' largest edit count, the pooling spec and the
   selection (epoch, figure), which are also printed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from drllm.checks import check_int
from drllm.cluster import ClusterSettings, cluster_gpus, connect
from drllm.files import atomic_write_json
from drllm.routers.feature_store import feature_files, load_features
from drllm.models.loading import ModelSource, ModelSpec
from drllm.routers.features import FeatureConfig, run_feature_pass
from drllm.routers.loss import class_counts
from drllm.routers.dataset import split_by_id
from drllm.routers.metrics import CLASS_NAMES
from drllm.routers.module import Routers
from drllm.routers.objective import loss_adjustment, max_label_edits, row_extras, train_counts
from drllm.routers.training import TrainConfig

logger = logging.getLogger(__name__)

SUMMARY_FILE = "train_summary.json"

HEADLINE = "macro_f1"
"""The metric ``python -m drllm.jobs.train`` returns (a Hydra sweeper's objective)."""


@dataclass(frozen=True)
class RayTrainSettings:
    """How the ``TorchTrainer`` is scaled.

    Attributes:
        num_workers: Ray Train workers (DDP when > 1).
        use_gpu: one GPU per worker; ``None`` uses GPUs when the cluster has them.
        cpus_per_worker: CPUs reserved per worker; ``None``: what fits a node -- the
            smallest CPU count of the alive nodes that have CPUs, and no more than the cluster's
            CPUs split over the workers (at least 1).
        threads: torch intra-op threads per CPU worker; ``None``: its ``cpus_per_worker``. On
            a shared, oversubscribed host fewer threads than reserved CPUs can be much faster
            (the router matmuls are small; spinning OpenMP threads lose their time slices).
        max_failures: worker-group restarts tolerated (each resumes from the last epoch).
        log_level: level of the ``drllm`` loggers inside the workers.
        storage_path: where Ray Train keeps the run and its checkpoints: a directory every
            node can reach (NFS, ``/mnt/shared/...``) or object storage (``s3://bucket/x``,
            ``gs://...``). ``None``: ``<train run dir>/ray_train`` -- a local path, fine on one
            node only (Ray Train requires storage shared by all nodes).
    """

    num_workers: int = 1
    use_gpu: bool | None = None
    cpus_per_worker: int | None = None
    threads: int | None = None
    max_failures: int = 0
    log_level: str = "INFO"
    storage_path: str | None = None

    def __post_init__(self) -> None:
        o = "RayTrainSettings"
        check_int(o, "num_workers", self.num_workers, 1)
        if self.cpus_per_worker is not None:
            check_int(o, "cpus_per_worker", self.cpus_per_worker, 1)
        if self.threads is not None:
            check_int(o, "threads", self.threads, 1)
        check_int(o, "max_failures", self.max_failures, -1)  # -1: unlimited


@dataclass(frozen=True)
class TrainOutcome:
    """What :func:`fit_routers` produced.

    Attributes:
        routers: the trained routers (CPU, float32).
        metrics: evaluation metrics after the last epoch (validation split; the training split
            when there is none), as :func:`~drllm.routers.metrics.metrics_from_confusion`.
        history: per-epoch reports (see :func:`~drllm.routers.train_worker.flat_metrics`).
        class_counts: training-split label counts ``(skip, execute, repeat)`` (best paths).
        class_mass: training-split target mass per class (soft targets, row weights): what
            the loss weights and the logit adjustment are computed from.
        selected_epoch: the epoch kept (1-based, ``TrainConfig.select``).
        train_rows / val_rows: examples on each side of the id split.
        rows: the row selection of the features with the split sizes: ``{"filter", "used",
            "skipped_unsolved", "train", "val"}`` (the checkpoint's ``rows`` entry).
        seconds: wall time of ``TorchTrainer.fit`` (Ray Train start-up included).
        checkpoint_path: the final Ray Train checkpoint (routers + training state).
    """

    routers: Routers
    metrics: Mapping[str, Any]
    history: tuple[Mapping[str, Any], ...]
    class_counts: tuple[int, ...]
    train_rows: int
    val_rows: int
    seconds: float
    checkpoint_path: str
    rows: Mapping[str, Any]
    class_mass: tuple[float, ...] = ()
    selected_epoch: int = 0


def _worker_resources(settings: RayTrainSettings) -> tuple[bool, int]:
    """``(use_gpu, cpus_per_worker)`` resolved against the connected cluster: a worker's CPUs
    fit on the smallest alive node with CPUs (a share of the cluster total may fit none)."""
    import ray

    use_gpu = settings.use_gpu if settings.use_gpu is not None else cluster_gpus() > 0
    if settings.cpus_per_worker is not None:
        return use_gpu, settings.cpus_per_worker
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if use_gpu:
        nodes = [r for r in nodes if r.get("GPU", 0) > 0]
    node_cpus = [int(r.get("CPU", 0)) for r in nodes if r.get("CPU", 0) >= 1]
    total = int(ray.cluster_resources().get("CPU", 1))
    share = max(1, total // settings.num_workers)
    return use_gpu, max(1, min([share, *node_cpus]))


def _no_cpu_left(reserved: float) -> bool:
    """Whether workers reserving ``reserved`` CPUs leave none of the cluster's for other tasks."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0)) - reserved < 1.0


def _has_state_api() -> bool:
    """Whether the cluster serves Ray's state API (its dashboard runs)."""
    from ray._private.worker import get_dashboard_url

    try:
        return bool(get_dashboard_url())
    except Exception:  # noqa: BLE001 - not connected or API moved: assume none
        return False


def _trainer_class() -> type:
    """``TorchTrainer`` without its placement-group cleaner when there is no state API.

    Ray Train 2.60 starts a detached cleaner that asks the state API every second whether the
    controller is alive; without a dashboard each query fails and logs "Failed to query Ray
    Train Controller actor state" -- a dozen lines for a 12-second fit -- while the cleaner can
    never work. It only matters when the controller dies ungracefully, so it is dropped then.
    """
    from ray.train.torch import TorchTrainer

    if _has_state_api():
        return TorchTrainer
    try:
        from ray.train.v2._internal.callbacks.placement_group_callback import (
            PlacementGroupCleanerCallback,
        )
    except ImportError:  # another Ray: keep its defaults
        return TorchTrainer

    class QuietTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list:
            return [c for c in super()._create_default_callbacks()
                    if not isinstance(c, PlacementGroupCleanerCallback)]

    return QuietTorchTrainer


def _split_config() -> Any:
    """Train rows in equal shares (the same steps on every worker); validation rows split
    unequally so that each is evaluated exactly once."""
    import ray.train

    class EvenTrainSplit(ray.train.DataConfig):
        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            # Ray Train 2.60 (v2) configures one dataset per call; v1 passes them all
            rest = {k: v for k, v in datasets.items() if k != "val"}
            out = (super().configure(rest, world_size, worker_handles, worker_node_ids, **kwargs)
                   if rest else [{} for _ in range(world_size)])
            if "val" in datasets:
                val = datasets["val"].copy(datasets["val"])
                val.context.execution_options = self._resolve_execution_options("val")
                for i, split in enumerate(val.streaming_split(world_size, equal=False)):
                    out[i]["val"] = split
            return out

    return EvenTrainSplit()


class KeepIds:
    """Ray Data batch filter: the rows whose ``example_id`` is in ``ids`` (pyarrow batches)."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = sorted(set(ids))

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        return batch.filter(pc.is_in(batch.column("example_id"), pa.array(self.ids)))


def _datasets(features_dir: str | Path, info: Any, train_ids: list[str], val_ids: list[str],
              world: int) -> dict[str, Any]:
    """``train`` (padded to a multiple of ``world`` rows) and ``val`` Ray datasets over the
    features' Parquet parts; no rows pass through the driver."""
    import ray

    files = feature_files(features_dir, info)
    # Reading and filtering reserve no CPU: the training workers may hold every CPU (a small
    # cluster), and ingest tasks waiting for one would deadlock the fit.
    base = ray.data.read_parquet(files, num_cpus=0)

    def keep(ids: list[str]) -> Any:
        return base.map_batches(KeepIds(ids), batch_format="pyarrow", num_cpus=0)

    train = keep(train_ids)
    pad = (-len(train_ids)) % world
    if pad:  # equal shares without dropping rows: repeat the first few
        train = train.union(keep(sorted(train_ids)[:pad]))
    val = keep(val_ids or train_ids)
    return {"train": train, "val": val}


def run_name_for(features_digest: str, cfg: TrainConfig, num_workers: int) -> str:
    """``routers-<16 hex digits>`` identifying (features, hyper-parameters, worker count)."""
    text = json.dumps([features_digest, cfg.to_dict(), num_workers], sort_keys=True)
    return f"routers-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _storage(storage_path: str | Path) -> str:
    """``storage_path`` as Ray Train takes it: URIs as given, local paths made absolute."""
    text = str(storage_path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def _torch_trainer(
    train_loop_config: dict[str, Any], settings: RayTrainSettings, use_gpu: bool,
    resources: dict[str, float], run_name: str, storage_path: str | Path,
    datasets: dict[str, Any],
) -> Any:
    """The ``TorchTrainer`` of :func:`fit_routers` (last checkpoint kept, restarts allowed)."""
    import ray.train

    from drllm.routers.train_worker import train_loop_per_worker

    return _trainer_class()(
        train_loop_per_worker,
        train_loop_config=train_loop_config,
        datasets=datasets,
        dataset_config=_split_config(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=_storage(storage_path),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            worker_runtime_env={"env_vars": _worker_env(use_gpu)},
        ),
    )


def _worker_env(use_gpu: bool) -> dict[str, str]:
    """Environment of the training workers.

    CPU workers default to ``OMP_WAIT_POLICY=PASSIVE`` (unless set here): with OpenMP's
    spinning waits, a 2-thread worker on a host shared with other processes measured ~7x
    slower per step than 1 thread (spinning threads burn the time slices the busy thread
    needs); with passive waits 2 threads are never slower than 1.
    """
    if use_gpu:
        return {}
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def fit_routers(
    features_dir: str | Path,
    cfg: TrainConfig,
    settings: RayTrainSettings = RayTrainSettings(),
    *,
    storage_path: str | Path,
    base_model_id: str | None = None,
    run_name: str | None = None,
) -> TrainOutcome:
    """Train routers on the features of ``features_dir`` with a Ray Train ``TorchTrainer``.

    Ray must be connected. ``storage_path`` (made absolute) receives the Ray Train run
    ``run_name`` (its last checkpoint is kept). The default name is
    ``routers-<hash of the features' key, cfg and the worker count>``: rerunning the same
    training resumes that run from its last completed epoch (a finished run is only evaluated
    again), while new features or hyper-parameters start a new run. ``base_model_id`` defaults
    to the features' model.
    """
    from drllm.routers.train_worker import loop_config

    data = load_features(features_dir, with_features=False)  # ids and labels: a few bytes/row
    if data.info.windows != cfg.windows:
        raise ValueError(f"features in {features_dir} have W={data.info.windows} windows but the "
                         f"training config says windows={cfg.windows}")
    run_name = run_name or run_name_for(data.info.digest, cfg, settings.num_workers)
    train_idx, val_idx = split_by_id(data.example_ids, cfg.val_fraction, cfg.seed)
    counts = class_counts(data.labels[train_idx])
    extras = row_extras(data.labels, cfg, soft=data.soft, blame=data.blame,
                        default_correct=data.default_correct, improved=data.improved)
    mass = train_counts(extras, train_idx)
    rows = {**data.info.row_selection(), "train": len(train_idx), "val": len(val_idx)}
    logger.info("training rows (filter %s): %d used (%d train / %d val), %d unsolved skipped",
                rows["filter"], rows["used"], rows["train"], rows["val"],
                rows["skipped_unsolved"])
    use_gpu, cpus = _worker_resources(settings)
    cfg.per_worker_batch_size(settings.num_workers)  # fail fast on an indivisible batch
    resources: dict[str, float] = {"CPU": cpus, **({"GPU": 1} if use_gpu else {})}
    logger.info("Ray Train run %s: %d worker(s) x %s, %d train / %d val rows, class counts %s",
                run_name, settings.num_workers, resources, len(train_idx), len(val_idx), counts)
    ids = data.example_ids
    datasets = _datasets(features_dir, data.info, [ids[i] for i in train_idx.tolist()],
                         [ids[i] for i in val_idx.tolist()], settings.num_workers)
    if _no_cpu_left(cpus * settings.num_workers):
        # the workers will hold every CPU: read the features into the object store first, or
        # Ray Data's ingest would wait for a CPU that never frees up
        logger.info("no CPU left for Ray Data ingest during the fit: materializing the splits")
        datasets = {name: ds.materialize() for name, ds in datasets.items()}
    trainer = _torch_trainer(
        loop_config(
            info=data.info, train=cfg, train_rows=len(train_idx), val_rows=len(val_idx),
            class_counts=mass, base_model_id=base_model_id or data.info.model_id,
            threads=None if use_gpu else (settings.threads or cpus),
            log_level=settings.log_level, rows=rows,
            logit_adjustment=loss_adjustment(mass, cfg),
            max_label_edits=max_label_edits(data.labels[train_idx]),
        ),
        settings, use_gpu, resources, run_name, storage_path, datasets,
    )
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    if result.error is not None:
        raise RuntimeError(f"router training failed: {result.error}") from result.error
    if result.checkpoint is None or not result.return_value:
        raise RuntimeError("router training finished without a checkpoint or final metrics")
    with result.checkpoint.as_directory() as directory:
        routers = Routers.from_pretrained(directory)
    out = result.return_value
    return TrainOutcome(
        routers=routers, metrics=out["final_metrics"], history=tuple(out["history"]),
        class_counts=tuple(counts), train_rows=len(train_idx), val_rows=len(val_idx),
        seconds=seconds, checkpoint_path=str(result.checkpoint.path), rows=rows,
        class_mass=tuple(mass), selected_epoch=int(out.get("selected_epoch", cfg.epochs)),
    )


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A human-readable block of router metrics (per class, macro-F1, per-layer accuracy)."""
    lines = [f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name in CLASS_NAMES:
        c = metrics["per_class"][name]
        lines.append(f"{name:<10}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}"
                     f"{c['support']:>10d}")
    layer = metrics["per_layer_accuracy"]
    lines += [
        f"macro-F1  {metrics['macro_f1']:.4f}",
        f"accuracy  {metrics['accuracy']:.4f}",
        f"per-layer accuracy: min {min(layer):.4f}, mean {sum(layer) / len(layer):.4f}, "
        f"max {max(layer):.4f}",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class TrainJobSettings:
    """Everything ``python -m drllm.jobs.train`` takes (``conf/train.yaml``); each field is one key.

    Attributes:
        shards_dir: supervision shards (required; made absolute).
        model: the frozen model the shards were searched with (``model/``), or a picklable
            zero-argument loader (tests).
        ray: how to reach Ray (``ray/``, :class:`drllm.cluster.ClusterSettings`).
        train: router hyper-parameters (``train/``).
        features: feature-pass settings (``features:``; its ``windows`` follows ``train.windows``).
        trainer: ``TorchTrainer`` scaling (``trainer:``).
        features_dir: where features go (``None``: ``<train run dir>/features``; never inside
            the shards directory, whose Parquet readers would pick the features up).
        checkpoint_dir: routers directory, relative to the run's output directory.
        progress: show progress bars.
        log_level: level of the ``drllm`` loggers.
    """

    shards_dir: Path
    model: ModelSource = field(default_factory=ModelSpec)
    ray: ClusterSettings = field(default_factory=ClusterSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    trainer: RayTrainSettings = field(default_factory=RayTrainSettings)
    features_dir: Path | None = None
    checkpoint_dir: str = "routers"
    progress: bool = True
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not self.shards_dir:
            raise ValueError("shards_dir is required: python -m drllm.jobs.train shards_dir=/abs/path")
        object.__setattr__(self, "shards_dir", Path(self.shards_dir).expanduser().resolve())
        if self.features_dir:
            object.__setattr__(self, "features_dir", Path(self.features_dir).expanduser().resolve())
        if self.ray.mode == "in_process":
            raise ValueError("ray.mode=in_process: router training runs on Ray Train; use "
                             "ray=local (a Ray instance in this process) instead")
        if self.features.windows != self.train.windows:
            raise ValueError(f"features.windows ({self.features.windows}) must equal train.windows "
                             f"({self.train.windows})")


def _inside(path: Path, parent: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def run(settings: TrainJobSettings, output_dir: str | Path) -> dict[str, Any]:
    """Feature pass, Ray Train fit and checkpoint; returns (and writes) the job summary.

    Writes ``<output_dir>/<checkpoint_subdir>/`` (the routers), ``<output_dir>/ray_train/`` (the
    Ray Train run) and ``<output_dir>/train_summary.json``, and prints the validation metrics.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir).resolve()
    features_dir = settings.features_dir or output_dir / "features"
    if _inside(features_dir, settings.shards_dir):
        raise ValueError(f"features_dir {features_dir} is inside shards_dir {settings.shards_dir}:"
                         " readers of the shards (pd.read_parquet(shards_dir)) would read the "
                         "features too; put them elsewhere (default: <train run dir>/features)")
    connect(settings.ray)
    info = run_feature_pass(settings.shards_dir, features_dir, settings.model, settings.features,
                            progress=settings.progress)
    storage = settings.trainer.storage_path or output_dir / "ray_train"
    outcome = fit_routers(features_dir, settings.train, settings.trainer,
                          storage_path=storage, base_model_id=info.model_id)
    routers_dir = output_dir / settings.checkpoint_dir
    selection = {"select": settings.train.select, "epoch": outcome.selected_epoch}
    outcome.routers.save_pretrained(
        routers_dir, base_model_id=info.model_id, class_counts=outcome.class_counts,
        train_config=settings.train, metrics=outcome.metrics, rows=outcome.rows,
        extra={"class_mass": list(outcome.class_mass), "selection": selection},
    )
    summary = {
        "model_id": info.model_id,
        "shards_dir": str(settings.shards_dir),
        "features_dir": str(features_dir),
        "feature_rows": info.rows,
        "rows": dict(outcome.rows),
        "train_rows": outcome.train_rows,
        "val_rows": outcome.val_rows,
        "class_counts": list(outcome.class_counts),
        "class_mass": list(outcome.class_mass),
        "selected_epoch": outcome.selected_epoch,
        "logit_adjustment": list(outcome.routers.meta.logit_adjustment or ()),
        "metrics": outcome.metrics,
        "history": list(outcome.history),
        "fit_seconds": outcome.seconds,
        "wall_seconds": time.perf_counter() - started,
        "routers_dir": str(routers_dir),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / SUMMARY_FILE, summary)
    split = "validation" if outcome.val_rows else "training (no validation split)"
    print(f"router metrics on the {split} split ({outcome.val_rows or outcome.train_rows} "
          f"examples x {info.num_layers} blocks):")
    print(format_metrics(outcome.metrics))
    print(f"kept      epoch {outcome.selected_epoch} of {settings.train.epochs} "
          f"(select={settings.train.select}); harm {outcome.metrics.get('harm')}")
    print(f"rows      {outcome.rows['used']} used (features.rows={outcome.rows['filter']}), "
          f"{outcome.rows['skipped_unsolved']} unsolved skipped")
    print(f"routers   {routers_dir}")
    print(f"summary   {output_dir / SUMMARY_FILE}")
    return summary
