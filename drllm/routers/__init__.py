"""Routers: per-block skip / execute / repeat heads, their loss, metrics, training and checkpoints.

Modules: :mod:`.module` (pooling, :class:`Routers`, :class:`StackedRouters`), :mod:`.control`
(the alpha knob), :mod:`.decision` (logit adjustment, gate, path rules at inference),
:mod:`.pooling` (whole prompt or question only), :mod:`.targets` (soft targets, trace
negatives, row weights), :mod:`.loss` (focal loss, capped effective-number weights,
logit-adjusted cross-entropy), :mod:`.metrics` (incl. the harm figure),
:mod:`.dataset` (in-memory features, id split, batches), :mod:`.rows` (which shard rows are
trained on: solved by default), :mod:`.training` (plain-torch loop),
:mod:`.checkpoint` (safetensors + config.json). Nothing here imports ray.
"""

from drllm.routers.checkpoint import RouterCheckpointError, load_routers, save_routers
from drllm.routers.control import apply_control
from drllm.routers.decision import DecisionRule, RouterMeta, RowRules
from drllm.routers.dataset import FeatureBatches, split_by_id
from drllm.routers.loss import FocalLoss, class_counts, effective_number_weights, focal_loss
from drllm.routers.metrics import compute_metrics, confusion_matrix, metrics_from_confusion
from drllm.routers.module import Router, Routers, StackedRouters, window_pool
from drllm.routers.pooling import PoolingSpec
from drllm.routers.training import (
    FitHistory,
    TrainConfig,
    evaluate,
    fit,
    make_optimizer,
    train_epoch,
)

__all__ = [
    "DecisionRule",
    "PoolingSpec",
    "RouterMeta",
    "RowRules",
    "FeatureBatches",
    "FitHistory",
    "FocalLoss",
    "Router",
    "RouterCheckpointError",
    "Routers",
    "StackedRouters",
    "TrainConfig",
    "apply_control",
    "class_counts",
    "compute_metrics",
    "confusion_matrix",
    "effective_number_weights",
    "evaluate",
    "fit",
    "focal_loss",
    "load_routers",
    "make_optimizer",
    "metrics_from_confusion",
    "save_routers",
    "split_by_id",
    "train_epoch",
    "window_pool",
]
