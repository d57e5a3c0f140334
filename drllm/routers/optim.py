"""Router optimizer: AdamW with a per-step linear warmup (a fraction of the run by default) then
cosine decay to 0 at the last step."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from drllm.routers.training import TrainConfig

logger = logging.getLogger(__name__)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first step
    already moves), then cosine decay ``0.5 (1 + cos(pi t))`` with
    ``t = (step - warmup) / (total - warmup)`` clamped to ``[0, 1]``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_steps_of(cfg: TrainConfig, total_steps: int) -> int:
    """``cfg.warmup_steps`` when set, else ``round(cfg.warmup_fraction * total_steps)``."""
    if cfg.warmup_steps is not None:
        return int(cfg.warmup_steps)
    return int(round(cfg.warmup_fraction * total_steps))


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``model``'s parameters plus a per-step warmup + cosine ``LambdaLR``.

    Args:
        model: the module to train (usually :class:`StackedRouters`, possibly DDP-wrapped).
        cfg: hyper-parameters (``lr``, ``weight_decay``, ``warmup_steps`` or
            ``warmup_fraction`` of ``total_steps``).
        total_steps: optimizer steps of the whole run (epochs x batches per epoch).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup = warmup_steps_of(cfg, total_steps)
    if warmup >= total_steps:
        logger.warning(
            "warmup_steps=%d >= total_steps=%d: the lr never reaches its peak %g",
            warmup,
            total_steps,
            cfg.lr,
        )
    params = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, warmup, total_steps)
    )
    return opt, sched
