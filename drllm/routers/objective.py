"""What the routers are trained toward: the loss of a config, the targets and row weights of each
batch, the logit adjustment inference applies, and which epoch is kept.

* :func:`make_loss` / :func:`loss_adjustment` -- focal loss with capped effective-number
  weights or logit-adjusted cross-entropy (:mod:`drllm.routers.loss`), and the vector that
  undoes its class tilt at inference (stored in the checkpoint);
* :func:`row_extras` / :func:`train_counts` -- per-row soft targets with the trace's negatives
  and row weights (:mod:`drllm.routers.targets`), and the training split's class mass;
* :func:`max_label_edits` -- the default edit budget at inference;
* :func:`selection_value` -- the figure an epoch is kept on (``TrainConfig.select``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from torch import Tensor, nn

from drllm.paths import edit_count
from drllm.routers.loss import (
    AdjustedCrossEntropy, FocalLoss, effective_number_weights, inference_adjustment, soft_counts,
)
from drllm.routers.targets import row_weights, training_targets

if TYPE_CHECKING:
    from drllm.routers.training import TrainConfig

LOSS_KINDS = ("focal", "ce")
SELECT_KINDS = ("harm", "loss", "macro_f1", "last")


def make_loss(counts: Sequence[float], cfg: TrainConfig) -> nn.Module:
    """The training loss of ``cfg`` for the training split's class ``counts``: focal
    (``cfg.gamma``) weighted by capped effective numbers unless ``cfg.class_weighting`` is off,
    or logit-adjusted cross-entropy (``cfg.loss="ce"``)."""
    if cfg.loss == "ce":
        return AdjustedCrossEntropy(counts, cfg.la_tau)
    if cfg.class_weighting:
        return FocalLoss(effective_number_weights(counts, cfg.beta, cfg.max_weight_ratio),
                         cfg.gamma)
    return FocalLoss(None, cfg.gamma)


def loss_adjustment(counts: Sequence[float], cfg: TrainConfig) -> tuple[float, ...]:
    """The logit adjustment inference applies to routers trained by ``make_loss(counts, cfg)``."""
    if cfg.loss == "ce":
        return inference_adjustment(counts, "ce", tau=cfg.la_tau)
    loss = make_loss(counts, cfg)
    weights = loss.class_weights
    return inference_adjustment(counts, "focal",
                                weights=None if weights is None else weights.tolist())


def row_extras(
    labels: Tensor, cfg: TrainConfig, *, soft: Tensor | None = None, blame: Tensor | None = None,
    default_correct: Tensor | None = None, improved: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-row batch extras: ``targets [N, L, 3]`` and ``weights [N]`` under ``cfg``, and
    ``soft`` / ``default_correct`` for the harm figure (when known)."""
    extras = {
        "targets": training_targets(labels, soft, blame, use_soft=cfg.soft_targets,
                                    negative_weight=cfg.negative_weight),
        "weights": row_weights(improved, labels.shape[0], cfg.improved_weight),
    }
    if soft is not None and default_correct is not None:
        extras.update(soft=soft.float(), default_correct=default_correct.bool())
    return extras


def train_counts(extras: Mapping[str, Tensor], rows: Tensor) -> list[float]:
    """Class mass of the training rows' targets (row-weighted): the loss's class counts."""
    return soft_counts(extras["targets"][rows], extras["weights"][rows].unsqueeze(1).expand(
        -1, extras["targets"].shape[1]))


def max_label_edits(labels: Tensor) -> int:
    """The most MCTS edits any label path has (the default edit budget at inference)."""
    return max((edit_count(tuple(int(d) for d in row)) for row in labels.tolist()), default=0)


def selection_value(record: Mapping[str, Any], select: str) -> tuple[float, float]:
    """Lower is better: ``(figure select, tie-break)`` of an epoch record (``val`` metrics);
    ties on the harm score go to the lower validation loss, then the earlier epoch."""
    val = record.get("val") or {}
    if select == "last" or not val:
        return (-float(record["epoch"]), 0.0)
    loss = float(val.get("loss", 0.0))
    if select == "harm":
        return (float(val["harm"]["score"]), loss) if "harm" in val else (loss, 0.0)
    if select == "loss":
        return (loss, 0.0)
    return (-float(val["macro_f1"]), loss)
