"""The Ray Train worker loop of router training (runs inside each ``TorchTrainer`` worker).

Every worker reads **its share** of the features through Ray Data
(``ray.train.get_dataset_shard``: the ``train`` dataset is a streaming split into equal
shares -- the driver pads it to a multiple of the world size --, the ``val`` dataset a streaming
split that keeps every row once), holds that share in memory (1/world of the rows), builds
the same seeded :class:`~drllm.routers.module.StackedRouters`, wraps it with
``ray.train.torch.prepare_model`` (DDP when there is more than one worker) and trains:

* each epoch, a permutation of the worker's rows (seeded by ``seed``, the epoch and the rank);
  every worker has as many rows, so all run the same number of optimizer steps and the
  effective batch stays ``batch_size``;
* :func:`~drllm.routers.training.evaluate` sums the validation confusions over workers, so
  every worker holds the global metrics;
* each epoch ends with ``ray.train.report(metrics, checkpoint=...)``: rank 0 attaches a
  checkpoint holding the routers **of the best epoch so far** (``TrainConfig.select``, on the
  validation harm figure by default) in :meth:`Routers.save_pretrained` format plus
  ``train_state.pt`` (current weights, optimizer, schedule, epoch, history, best epoch), from
  which a restarted worker group resumes (``FailureConfig(max_failures=...)``).

The loop's configuration is a plain dict (see :func:`loop_config`), as Ray Train requires.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from drllm.routers.dataset import FeatureBatches
from drllm.routers.feature_store import FeatureData, FeatureInfo, feature_schema, table_data
from drllm.routers.metrics import CLASS_NAMES
from drllm.routers.decision import RouterMeta
from drllm.routers.module import Routers, StackedRouters
from drllm.routers.pooling import PoolingSpec
from drllm.routers.objective import make_loss, row_extras, selection_value
from drllm.routers.training import TrainConfig, evaluate, make_optimizer, train_epoch

logger = logging.getLogger(__name__)

TRAIN_STATE = "train_state.pt"
VAL_BATCH_SIZE = 256


def loop_config(
    *,
    info: FeatureInfo,
    train: TrainConfig,
    train_rows: int,
    val_rows: int,
    class_counts: Sequence[float],
    base_model_id: str,
    threads: int | None,
    log_level: str = "INFO",
    rows: Mapping[str, Any] | None = None,
    logit_adjustment: Sequence[float] = (0.0, 0.0, 0.0),
    max_label_edits: int | None = None,
) -> dict[str, Any]:
    """The ``train_loop_config`` of :func:`train_loop_per_worker` (plain, picklable values);
    ``rows`` (the row selection), ``logit_adjustment`` and ``max_label_edits`` are written into
    every checkpoint's ``config.json``; ``train_rows`` / ``val_rows`` are the global split sizes
    (before padding)."""
    return {
        "info": info.to_dict(),
        "train": train.to_dict(),
        "train_rows": int(train_rows),
        "val_rows": int(val_rows),
        "class_counts": [float(c) for c in class_counts],
        "logit_adjustment": [float(a) for a in logit_adjustment],
        "max_label_edits": max_label_edits,
        "base_model_id": base_model_id,
        "threads": threads,
        "log_level": log_level,
        "rows": None if rows is None else dict(rows),
    }


def flat_metrics(epoch: int, stats: Mapping[str, Any], val: Mapping[str, Any] | None) -> dict:
    """One epoch's report: ``epoch`` (1-based), ``train_loss``, ``lr``, ``epoch_seconds`` and,
    with evaluation metrics, ``loss``, ``accuracy``, ``macro_f1``, ``{class}_{precision, recall,
    f1}`` and ``per_layer_accuracy`` (list of L floats)."""
    out: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": float(stats["loss"]),
        "lr": float(stats["lr"]),
        "epoch_seconds": float(stats["seconds"]),
    }
    if val is not None:
        out["loss"] = float(val["loss"])
        out["accuracy"] = float(val["accuracy"])
        out["macro_f1"] = float(val["macro_f1"])
        for name in CLASS_NAMES:
            for key in ("precision", "recall", "f1"):
                out[f"{name}_{key}"] = float(val["per_class"][name][key])
        out["per_layer_accuracy"] = [float(x) for x in val["per_layer_accuracy"]]
        for key, value in (val.get("harm") or {}).items():
            out[f"harm_{key}"] = float(value)
    return out


def epoch_rows(
    train_idx: torch.Tensor, epoch: int, seed: int, rank: int, world: int
) -> torch.Tensor:
    """This rank's rows for ``epoch``: a seeded global permutation, padded to a multiple of
    ``world`` by wrapping around, strided by rank (equal length on every rank)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = train_idx[torch.randperm(len(train_idx), generator=gen)]
    per_rank = math.ceil(len(order) / world)
    pad = per_rank * world - len(order)
    if pad:
        order = torch.cat([order, order[:pad]])
    return order[rank::world]


def read_share(name: str, info: FeatureInfo) -> FeatureData:
    """This worker's rows of the Ray Train dataset ``name``, in memory."""
    import pyarrow as pa
    import ray.train

    shard = ray.train.get_dataset_shard(name)
    tables = list(shard.iter_batches(batch_size=None, batch_format="pyarrow"))
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return table_data(_empty_features(info), info)
    return table_data(pa.concat_tables(tables), info)


def _empty_features(info: FeatureInfo) -> Any:
    return feature_schema(info.num_layers, info.windows, info.hidden_size,
                          info.dtype).empty_table()


def _loader(data: FeatureData, rows: torch.Tensor, batch_size: int, device: Any,
            extras: Mapping[str, torch.Tensor]) -> Any:
    if not len(rows):
        return []
    return FeatureBatches(features=data.features, wmask=data.wmask, labels=data.labels,
                          indices=rows, batch_size=batch_size, device=device, extras=extras)


def _extras(data: FeatureData, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    return row_extras(data.labels, cfg, soft=data.soft, blame=data.blame,
                      default_correct=data.default_correct, improved=data.improved)


def _setup_worker(threads: int | None, log_level: str) -> None:
    if threads is not None:
        torch.set_num_threads(int(threads))
    package = logging.getLogger("drllm")
    package.setLevel(log_level)
    if not package.handlers and not logging.getLogger().handlers:  # Ray may have set one up
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        package.addHandler(handler)


def _seeded_routers(num_layers: int, hidden_size: int, windows: int, cfg: TrainConfig) -> Routers:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return Routers(num_layers, hidden_size, cfg.bottleneck, windows)


def _restore(
    model: torch.nn.Module, opt: Any, sched: Any
) -> tuple[int, list[dict[str, Any]], dict[str, Any] | None]:
    """Resume from the run's latest checkpoint, if Ray Train restarted the workers:
    ``(next epoch, history, best epoch record)``."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, [], None
    base = getattr(model, "module", model)
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / TRAIN_STATE, map_location=base.w1.device,
                           weights_only=False)
    base.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    logger.info("resuming router training after epoch %d", state["epoch"] + 1)
    return state["epoch"] + 1, list(state["history"]), state.get("best")


def _report(
    metrics: dict[str, Any], model: torch.nn.Module, opt: Any, sched: Any, epoch: int,
    history: list[dict[str, Any]], config: Mapping[str, Any], final: Mapping[str, Any] | None,
    best: Mapping[str, Any],
) -> None:
    """``ray.train.report``; rank 0 attaches the best epoch's routers + the training state."""
    import ray.train

    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    base = getattr(model, "module", model)
    kept = StackedRouters(base.num_layers, base.hidden_size, base.bottleneck, base.windows)
    kept.load_state_dict(best["state"])
    routers = kept.to_routers().to("cpu", torch.float32)
    routers.meta = RouterMeta(
        logit_adjustment=tuple(config["logit_adjustment"]),  # type: ignore[arg-type]
        max_label_edits=config.get("max_label_edits"),
        pooling=PoolingSpec.from_dict(config["info"]["key"].get("pooling")),
    )
    selection = {"select": TrainConfig.from_dict(config["train"]).select,
                 "epoch": best["epoch"] + 1, "value": best["value"]}
    with tempfile.TemporaryDirectory(prefix="drllm-routers-") as directory:
        routers.save_pretrained(
            directory, base_model_id=config["base_model_id"],
            class_counts=None, train_config=config["train"],
            metrics=final if final is not None else best["metrics"], rows=config.get("rows"),
            extra={"class_mass": config["class_counts"], "selection": selection},
        )
        torch.save({"epoch": epoch, "history": history, "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "model": base.state_dict(), "best": best},
                   Path(directory) / TRAIN_STATE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _epoch_note(metrics: Mapping[str, Any]) -> str:
    if "macro_f1" not in metrics:
        return ""
    harm = f", harm {metrics['harm_harm']:.3f}" if "harm_harm" in metrics else ""
    return (f", val loss {metrics['loss']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
            f"acc {metrics['accuracy']:.4f}{harm}")


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry: train the routers on this worker's share (see the module docstring).

    Returns (rank 0): ``{"history": [per-epoch metrics], "final_metrics": evaluation metrics
    of the kept epoch (validation split, else training split), "selected_epoch": 1-based,
    "seconds": loop time}``.
    """
    import ray.train
    import ray.train.torch

    start = time.perf_counter()
    _setup_worker(config["threads"], config["log_level"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig.from_dict(config["train"])
    info = FeatureInfo(**config["info"])
    num_layers, windows, hidden_size = info.num_layers, info.windows, info.hidden_size
    train_data, val_data = read_share("train", info), read_share("val", info)
    device = ray.train.torch.get_device()
    loss_fn = make_loss(config["class_counts"], cfg).to(device)
    stacked = StackedRouters.from_routers(_seeded_routers(num_layers, hidden_size, windows, cfg))
    model = ray.train.torch.prepare_model(stacked)
    local = torch.arange(len(train_data.example_ids))
    per_batch = cfg.per_worker_batch_size(world)
    steps = cfg.epochs * math.ceil(math.ceil(config["train_rows"] / world) / per_batch)
    opt, sched = make_optimizer(model, cfg, steps)
    first_epoch, history, best = _restore(model, opt, sched)
    train_extras = _extras(train_data, cfg)
    adjustment = config["logit_adjustment"]
    eval_loader = _loader(val_data, torch.arange(len(val_data.example_ids)), VAL_BATCH_SIZE,
                          device, _extras(val_data, cfg))
    if rank == 0:
        logger.info("training %d routers on %d rows (%d val) with %d worker(s), %d steps, on %s"
                    " (%d rows on this worker)", num_layers, config["train_rows"],
                    config["val_rows"], world, steps, device, len(local))
    base = getattr(model, "module", model)
    for epoch in range(first_epoch, cfg.epochs):
        rows = epoch_rows(local, epoch, cfg.seed + 7919 * rank, 0, 1)
        loader = _loader(train_data, rows, per_batch, device, train_extras)
        stats = train_epoch(model, loader, opt, sched, loss_fn, grad_clip=cfg.grad_clip)
        val = (evaluate(model, eval_loader, loss_fn, adjustment)
               if config["val_rows"] or epoch == cfg.epochs - 1 else None)
        metrics = flat_metrics(epoch, stats, val)
        history.append(metrics)
        select = cfg.select if config["val_rows"] else "last"  # no validation: the last
        value = list(selection_value({"epoch": epoch, "val": val}, select))
        if best is None or value < list(best["value"]):
            best = {"value": value, "epoch": epoch, "metrics": val or {},
                    "state": {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}}
        if rank == 0:
            logger.info("epoch %d/%d: train loss %.4f%s (%.1f s)%s", epoch + 1, cfg.epochs,
                        stats["loss"], _epoch_note(metrics), stats["seconds"],
                        " *" if best["epoch"] == epoch else "")
        last = epoch == cfg.epochs - 1
        _report(metrics, model, opt, sched, epoch, history, config,
                best["metrics"] if last else None, best)
    assert best is not None, "at least one epoch ran"
    if rank != 0:
        return None
    return {"history": history, "final_metrics": best["metrics"],
            "selected_epoch": best["epoch"] + 1, "seconds": time.perf_counter() - start}
