"""Focal loss with effective-number class weights (Cui et al. 2019; Lin et al. 2017).

Class weights from the **training split's** global label counts ``n_c`` (never hard-coded)::

    w_c = (1 - beta) / (1 - beta ** n_c)          for n_c > 0      (beta = 0.999)
    w_c = 0                                        for n_c = 0      (absent class: no weight)
    w  <- w * C / sum(w)                           (weights sum to C = 3 classes)

Focal loss per (row, block) sample with target ``y`` and softmax probability ``p_y``::

    FL = -w_y * (1 - p_y) ** gamma * log p_y        (gamma = 2)

Reduction ``"mean"`` divides the summed per-sample losses by the summed target weights
``sum_i w_{y_i}``, exactly like ``torch.nn.functional.cross_entropy(..., weight=w)``; hence
``gamma = 0`` reproduces weighted cross-entropy (same formula, same reduction) and the scale of
``w`` cancels. For ``gamma > 0`` the denominator is still ``sum_i w_{y_i}`` (the focal factor is
not normalized away). A batch whose target weights sum to 0 has loss 0 (instead of NaN).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)


def class_counts(labels: Tensor, num_classes: int = 3) -> list[int]:
    """Global label counts ``[n_skip, n_execute, n_repeat]`` of an int tensor of decisions."""
    flat = labels.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), "
            f"got range [{int(flat.min())}, {int(flat.max())}]"
        )
    return [int(c) for c in torch.bincount(flat, minlength=num_classes).tolist()]


def effective_number_weights(counts: Sequence[int], beta: float = 0.999) -> Tensor:
    """Effective-number class weights, normalized to sum to ``len(counts)``.

    Args:
        counts: per-class sample counts of the training split (``n_c >= 0``).
        beta: in ``[0, 1)``; ``beta = 0`` gives equal weights over present classes.

    Returns:
        ``[C]`` float32 weights; absent classes (``n_c = 0``) get weight 0.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = torch.as_tensor(list(counts), dtype=torch.float64)
    if n.dim() != 1 or n.numel() == 0:
        raise ValueError(f"counts must be a non-empty 1-D sequence, got {counts!r}")
    if bool((n < 0).any()):
        raise ValueError(f"counts must be >= 0, got {list(counts)}")
    if not bool((n > 0).any()):
        raise ValueError(f"every class count is 0 ({list(counts)}); no labels to weight")
    present = n > 0
    raw = torch.zeros_like(n)
    raw[present] = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=n.dtype), n[present]))
    absent = [i for i, ok in enumerate(present.tolist()) if not ok]
    if absent:
        logger.warning("classes %s have no training labels; their loss weight is 0", absent)
    return (raw * n.numel() / raw.sum()).to(torch.float32)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
    """Class-weighted focal loss.

    Args:
        logits: ``[N, C]`` (or ``[..., C]``, flattened) unnormalized scores.
        target: ``[N]`` (or ``[...]``) class indices.
        weight: ``[C]`` class weights, or ``None`` for all ones.
        gamma: focusing parameter (>= 0); 0 is (weighted) cross-entropy.
        reduction: ``"mean"`` (sum over samples / sum of target weights), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss, or ``[N]`` per-sample losses for ``reduction="none"``.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    num_classes = logits.shape[-1]
    logits = logits.reshape(-1, num_classes).float()
    target = target.reshape(-1).long()
    if logits.shape[0] != target.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit rows but {target.shape[0]} targets")
    logp = F.log_softmax(logits, dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)  # [N]
    w = torch.ones_like(logp) if weight is None else weight.to(logp)[target]
    per_sample = -w * logp
    if gamma != 0:
        per_sample = per_sample * (1.0 - logp.exp()).clamp_min(0.0).pow(gamma)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        denom = w.sum()
        return per_sample.sum() / torch.where(denom > 0, denom, torch.ones_like(denom))
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class FocalLoss(nn.Module):
    """:func:`focal_loss` with fixed class weights (a buffer, so it follows ``.to(device)``).

    Args:
        class_weights: ``[C]`` weights, or ``None`` for unweighted.
        gamma: focusing parameter (paper: 2).
    """

    def __init__(
        self, class_weights: Tensor | Sequence[float] | None = None, gamma: float = 2.0
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w)

    @classmethod
    def from_counts(
        cls, counts: Sequence[int], beta: float = 0.999, gamma: float = 2.0
    ) -> "FocalLoss":
        """Focal loss weighted by :func:`effective_number_weights` of the training counts."""
        return cls(effective_number_weights(counts, beta), gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [..., 3], target [...] -> scalar`` (mean reduction, see module docstring)."""
        return focal_loss(logits, target, self.class_weights, self.gamma)

    def extra_repr(self) -> str:
        w = None if self.class_weights is None else [round(float(x), 4) for x in self.class_weights]
        return f"gamma={self.gamma}, class_weights={w}"
