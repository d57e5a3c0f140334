"""Plain-torch router training over precomputed pooled features (no Ray imports here).

The building blocks are meant to be called from a Ray Train worker loop (or any loop):
:func:`make_optimizer` (AdamW + per-step linear warmup then cosine decay), :func:`train_epoch`
and :func:`evaluate`. Both loops sum their statistics across processes when
``torch.distributed`` is initialized (as it is under Ray Train's ``TorchTrainer``), so each
worker can report the global numbers. :func:`fit` runs the whole recipe in-process: id-based
split, class counts of the training split, the loss, epochs, validation metrics, and the
checkpoint of the best epoch.

Training is teacher-forced along the MCTS path: router ``i`` sees the states entering block
``i`` along the example's best path and never depends on router ``i - 1``'s output. Targets are
soft over the example's good paths, with the search trace's negatives pushed toward execute
(:mod:`drllm.routers.targets`). The loss is one weighted mean over every (row, block) pair of a
batch (see :mod:`drllm.routers.loss`): focal + effective-number weights (capped), or
logit-adjusted cross-entropy. The learning rate warms up over a fraction of the run and decays
by a cosine to 0 at its end; the epoch kept is the best on a validation figure that measures
harm (:func:`drllm.routers.metrics.harm_from_counts`), logged every epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from drllm.checks import check_choice, check_int, check_real
from drllm.models.loading import model_device
from drllm.routers.dataset import (
    Batch, FeatureBatches, batch_targets, check_dataset, split_by_id, unpack_batch,
)
from drllm.routers.decision import RouterMeta
from drllm.routers.metrics import (
    confusion_matrix, harm_counts, harm_from_counts, metrics_from_confusion,
)
from drllm.routers.module import Routers, StackedRouters
from drllm.routers.objective import (
    LOSS_KINDS, SELECT_KINDS, loss_adjustment, make_loss, max_label_edits, row_extras,
    selection_value, train_counts,
)
from drllm.routers.optim import lr_factor, make_optimizer

logger = logging.getLogger(__name__)

__all__ = [
    "FitHistory",
    "TrainConfig",
    "evaluate",
    "fit",
    "lr_factor",
    "loss_adjustment",
    "make_loss",
    "make_optimizer",
    "max_label_edits",
    "row_extras",
    "selection_value",
    "train_counts",
    "train_epoch",
]

LossFn = Callable[..., Tensor]
"""``(logits [B, L, 3], targets [B, L, 3], sample weights [B, L] or None) -> scalar``."""



@dataclass(frozen=True)
class TrainConfig:
    """Router training hyper-parameters (the paper's, except where small data needs otherwise).

    Attributes:
        lr: peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay (applied to every parameter).
        warmup_steps: optimizer steps of linear warmup before the cosine decay to 0 at the last
            step; ``None``: ``warmup_fraction`` of the run (the paper's 500 steps exceed a
            small run's ~225 steps, so its lr never peaked).
        warmup_fraction: share of the run's steps spent warming up when ``warmup_steps`` is
            ``None``.
        epochs: passes over the training split.
        batch_size: effective (global) batch size in examples; a ``k``-worker job uses
            ``batch_size // k`` per worker (see :meth:`per_worker_batch_size`).
        loss: ``"focal"`` (focal loss with effective-number class weights, the paper) or
            ``"ce"`` (cross-entropy with logit adjustment ``la_tau * log prior``, unweighted).
        gamma: focal-loss focusing parameter (0 = cross-entropy).
        beta: effective-number class-weight parameter.
        class_weighting: weight classes by effective number; ``False`` for an unweighted loss.
        max_weight_ratio: cap on a class weight over the smallest (``None``: no cap); never
            binds at the paper's ~110k labels, tames the 15x tilt of ~4k labels.
        la_tau: ``loss="ce"``: the logit adjustment's scale.
        soft_targets: targets spread over the example's good paths (``False``: one-hot best
            path).
        negative_weight: how far a block the search trace blames (an edit that broke a
            correct answer) moves toward execute (0: ignore negatives).
        improved_weight: loss weight of rows whose best path beat the default path.
        select: the epoch kept: ``"harm"`` (lowest validation harm score: edits no good path
            takes on default-correct rows minus edits a good path takes, per row), ``"loss"``,
            ``"macro_f1"`` or ``"last"``.
        seed: seeds router initialization, shuffling and the id split.
        val_fraction: share of example ids held out for validation.
        bottleneck: router hidden width b.
        windows: pooling windows W; must match the features' W.
        grad_clip: max global gradient norm, or ``None`` for no clipping.
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: Optional[int] = None
    warmup_fraction: float = 0.1
    epochs: int = 25
    batch_size: int = 16
    loss: str = "focal"
    gamma: float = 2.0
    beta: float = 0.999
    class_weighting: bool = True
    max_weight_ratio: Optional[float] = 5.0
    la_tau: float = 1.0
    soft_targets: bool = True
    negative_weight: float = 1.0
    improved_weight: float = 1.0
    select: str = "harm"
    seed: int = 0
    val_fraction: float = 0.1
    bottleneck: int = 128
    windows: int = 8
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        o = "TrainConfig"
        check_real(o, "lr", self.lr, 0.0, open_low=True)
        for name in ("weight_decay", "negative_weight", "gamma"):
            check_real(o, name, getattr(self, name), 0.0)
        check_real(o, "improved_weight", self.improved_weight, 0.0, open_low=True)
        for name in ("warmup_fraction", "beta", "val_fraction"):
            check_real(o, name, getattr(self, name), 0.0, 1.0, open_high=True)
        if self.warmup_steps is not None:
            check_int(o, "warmup_steps", self.warmup_steps, 0)
        if self.max_weight_ratio is not None:
            check_real(o, "max_weight_ratio", self.max_weight_ratio, 1.0)
        if self.grad_clip is not None:
            check_real(o, "grad_clip", self.grad_clip, 0.0, open_low=True)
        for name in ("epochs", "batch_size", "bottleneck", "windows"):
            check_int(o, name, getattr(self, name), 1)
        check_int(o, "seed", self.seed)
        check_choice(o, "loss", self.loss, LOSS_KINDS)
        check_choice(o, "select", self.select, SELECT_KINDS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping (e.g. a Hydra config); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    def per_worker_batch_size(self, world_size: int) -> int:
        """Per-worker batch that keeps the effective batch ``batch_size`` over ``world_size``."""
        if world_size < 1 or self.batch_size % world_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by world_size {world_size}"
            )
        return self.batch_size // world_size


def _global_sum(values: Tensor) -> Tensor:
    """Sum ``values`` over processes when ``torch.distributed`` is initialized."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _empty_confusion(model: nn.Module, device: torch.device) -> Tensor:
    """Zero ``[L, 3, 3]`` confusion for a worker whose shard is empty, so collectives still run.

    Raises ``ValueError`` outside distributed runs, where an empty loader is a caller error.
    """
    num_layers = getattr(getattr(model, "module", model), "num_layers", None)
    if not (dist.is_available() and dist.is_initialized()) or num_layers is None:
        raise ValueError("evaluate got an empty loader")
    return torch.zeros(num_layers, 3, 3, dtype=torch.int64, device=device)


def train_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    loss_fn: LossFn,
    *,
    grad_clip: float | None = None,
) -> dict[str, float]:
    """One pass over ``loader``: forward all blocks, loss, backward, clip, step, schedule.

    Args:
        model: maps ``(features [B, L, W, d], wmask [B, W])`` to logits ``[B, L, 3]``.
        loader: batches (dicts with ``features`` / ``wmask`` / ``labels`` and optionally
            ``targets`` / ``weights``, or tuples).
        loss_fn: ``(logits [B, L, 3], targets [B, L, 3], weights [B, L] or None) -> scalar``.

    Returns:
        ``{"loss": mean batch loss, "steps", "examples", "lr": lr after the epoch, "seconds"}``
        (summed over processes when distributed).
    """
    model.train()
    device = model_device(model)
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    steps = examples = 0
    for batch in loader:
        features, wmask, labels = unpack_batch(batch, device)
        targets, weights = batch_targets(batch, labels, device)
        loss = loss_fn(model(features, wmask), targets, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        loss_sum += loss.detach()
        steps += 1
        examples += features.shape[0]
    totals = _global_sum(
        torch.tensor([float(loss_sum), steps, examples], dtype=torch.float64, device=device)
    )
    loss_total, steps_total, examples_total = (float(x) for x in totals)
    if steps_total == 0:
        raise ValueError("train_epoch got an empty loader")
    return {
        "loss": loss_total / steps_total,
        "steps": int(steps_total),
        "examples": int(examples_total),
        "lr": float(opt.param_groups[0]["lr"]),
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[Batch], loss_fn: LossFn | None = None,
    adjustment: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Router metrics over ``loader`` (see :func:`drllm.routers.metrics.metrics_from_confusion`).

    Adds ``"loss"`` (example-weighted mean of ``loss_fn``) when ``loss_fn`` is given, and
    ``"harm"`` (:func:`~drllm.routers.metrics.harm_from_counts` of the argmax of the logits
    plus ``adjustment``) when batches carry ``soft`` and ``default_correct``. Confusions
    and sums are summed over processes when distributed, so every worker returns the global
    metrics.
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    confusion: Tensor | None = None
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    harm = torch.zeros(5, device=device, dtype=torch.float64)
    shift = (torch.zeros(3, device=device) if adjustment is None
             else torch.as_tensor(list(adjustment), dtype=torch.float32, device=device))
    for batch in loader:
        features, wmask, labels = unpack_batch(batch, device)
        logits = model(features, wmask)
        part = confusion_matrix(logits.argmax(-1), labels)
        confusion = part if confusion is None else confusion + part
        if loss_fn is not None:
            targets, weights = batch_targets(batch, labels, device)
            loss_sum += loss_fn(logits, targets, weights).double() * features.shape[0]
        if isinstance(batch, Mapping) and "soft" in batch and "default_correct" in batch:
            preds = (logits.float() + shift).argmax(-1)
            harm += harm_counts(preds, batch["soft"].to(device),
                                batch["default_correct"].to(device))
        count += features.shape[0]
    model.train(was_training)
    if confusion is None:
        confusion = _empty_confusion(model, device)
    confusion = _global_sum(confusion)
    if int(confusion.sum()) == 0:
        raise ValueError("evaluate got an empty loader")
    out = metrics_from_confusion(confusion)
    harm = _global_sum(harm)
    if float(harm[4]) > 0:
        out["harm"] = harm_from_counts(harm)
    if loss_fn is not None:
        sums = _global_sum(torch.stack([loss_sum, count]))
        out["loss"] = float(sums[0] / sums[1])
    return out


@dataclass(frozen=True)
class FitHistory:
    """What :func:`fit` did.

    Attributes:
        epochs: one dict per epoch: ``epoch``, ``train`` (train_epoch stats), ``val`` (metrics,
            absent without a validation split).
        class_counts: training-split class mass ``(skip, execute, repeat)`` of the targets.
        class_weights: loss weights used (``None`` when unweighted).
        train_indices / val_indices: row indices of the id-based split.
        final_metrics: validation metrics of the kept epoch (training metrics if no val rows).
        seconds: wall time of the training loop (excluding the final evaluation).
        selected_epoch: the epoch kept (0-based; see ``TrainConfig.select``).
        logit_adjustment: what inference adds to the logits (:func:`loss_adjustment`).
    """

    epochs: tuple[Mapping[str, Any], ...]
    class_counts: tuple[float, ...]
    class_weights: tuple[float, ...] | None
    train_indices: tuple[int, ...]
    val_indices: tuple[int, ...]
    final_metrics: Mapping[str, Any]
    seconds: float
    selected_epoch: int = -1
    logit_adjustment: tuple[float, ...] = (0.0, 0.0, 0.0)


def _init_routers(num_layers: int, hidden_size: int, windows: int, cfg: TrainConfig) -> Routers:
    """Routers initialized from ``cfg.seed`` without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return Routers(num_layers, hidden_size, cfg.bottleneck, windows)


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _run_epochs(
    model: nn.Module,
    train_loader: FeatureBatches,
    val_loader: FeatureBatches | None,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    adjustment: Sequence[float],
) -> tuple[list[dict[str, Any]], int, dict[str, Tensor]]:
    """The epoch loop of :func:`fit`: train, validate, keep the best epoch's weights."""
    opt, sched = make_optimizer(model, cfg, cfg.epochs * len(train_loader))
    epochs: list[dict[str, Any]] = []
    best: tuple[tuple[float, float], int, dict[str, Tensor]] | None = None
    for epoch in range(cfg.epochs):
        train_loader.set_epoch(epoch)
        stats = train_epoch(model, train_loader, opt, sched, loss_fn, grad_clip=cfg.grad_clip)
        record: dict[str, Any] = {"epoch": epoch, "train": stats}
        note = ""
        if val_loader is not None:
            record["val"] = evaluate(model, val_loader, loss_fn, adjustment)
            note = f", val macro-F1 {record['val']['macro_f1']:.4f}"
            if "harm" in record["val"]:
                note += f", harm {record['val']['harm']['harm']:.3f}"
        value = selection_value(record, cfg.select)
        if best is None or value < best[0]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best = (value, epoch, state)
        logger.info("epoch %d/%d: train loss %.4f%s", epoch + 1, cfg.epochs, stats["loss"], note)
        epochs.append(record)
    assert best is not None
    return epochs, best[1], best[2]


def fit(
    features: Tensor,
    labels: Tensor,
    wmask: Tensor,
    cfg: TrainConfig = TrainConfig(),
    *,
    ids: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    soft: Tensor | None = None,
    blame: Tensor | None = None,
    default_correct: Tensor | None = None,
    improved: Tensor | None = None,
) -> tuple[Routers, FitHistory]:
    """Train routers in-process on precomputed features (tests, small runs, benchmarks).

    Args:
        features: ``[N, L, W, d]`` pooled windows (any float dtype).
        labels: ``[N, L]`` best-path decisions.
        wmask: ``[N, W]`` valid windows.
        cfg: hyper-parameters; ``cfg.windows`` must equal the features' W.
        ids: example ids for the train / val split (default: row numbers as strings).
        device: where to train (default: CUDA if available, else CPU).
        soft / blame / default_correct / improved: the rows' target evidence
            (:mod:`drllm.routers.targets`); without it targets are one-hot labels.

    Returns:
        ``(routers, history)``: the kept epoch's :class:`Routers` on CPU, float32, whose
        ``meta`` holds the logit adjustment and the labels' largest edit count.
    """
    check_dataset(features, labels, wmask)
    n, num_layers, windows, hidden_size = features.shape
    if windows != cfg.windows:
        raise ValueError(f"features have W={windows} windows but TrainConfig.windows={cfg.windows}")
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} feature rows")
    dev = _resolve_device(device)
    train_idx, val_idx = split_by_id(ids, cfg.val_fraction, cfg.seed)
    extras = row_extras(labels, cfg, soft=soft, blame=blame, default_correct=default_correct,
                        improved=improved)
    counts = train_counts(extras, train_idx)
    loss_fn = make_loss(counts, cfg).to(dev)
    adjustment = loss_adjustment(counts, cfg)
    routers = _init_routers(num_layers, hidden_size, windows, cfg)
    model = StackedRouters.from_routers(routers).to(dev)
    batches = dict(features=features, wmask=wmask, labels=labels, device=dev, extras=extras)
    train_loader = FeatureBatches(
        indices=train_idx, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, **batches
    )
    val_loader = (
        FeatureBatches(indices=val_idx, batch_size=256, **batches) if len(val_idx) else None
    )
    logger.info("training %d routers (d=%d, W=%d) on %d examples (%d val), class mass %s, %s",
                num_layers, hidden_size, windows, len(train_idx), len(val_idx),
                [round(c, 2) for c in counts], loss_fn)
    start = time.perf_counter()
    epochs, selected, state = _run_epochs(model, train_loader, val_loader, loss_fn, cfg,
                                          adjustment)
    seconds = time.perf_counter() - start
    model.load_state_dict(state)
    if val_loader is not None:
        final = epochs[selected]["val"]
    else:
        final = evaluate(model, FeatureBatches(indices=train_idx, batch_size=256, **batches),
                         loss_fn, adjustment)
    weights = getattr(loss_fn, "class_weights", None)
    history = FitHistory(
        epochs=tuple(epochs),
        class_counts=tuple(counts),
        class_weights=None if weights is None else tuple(float(w) for w in weights),
        train_indices=tuple(train_idx.tolist()),
        val_indices=tuple(val_idx.tolist()),
        final_metrics=final,
        seconds=seconds,
        selected_epoch=selected,
        logit_adjustment=tuple(adjustment),
    )
    out = model.to_routers().to("cpu", torch.float32)
    out.meta = RouterMeta(logit_adjustment=tuple(adjustment),  # type: ignore[arg-type]
                          max_label_edits=max_label_edits(labels[train_idx]))
    return out, history
