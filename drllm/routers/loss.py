"""Router losses: focal loss with effective-number class weights (Cui et al. 2019; Lin et al.
2017), or cross-entropy with logit adjustment (Menon et al. 2021); soft targets, row weights,
and the logit adjustment inference applies to undo the training-time class tilt.

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

**Soft targets** ``q [N, C]`` (a distribution per sample, e.g. over an example's good paths)
generalize the above: ``FL = -sum_c q_c w_c (1 - p_c) ** gamma log p_c``, normalized by
``sum_i s_i sum_c q_ic w_c`` with optional per-sample weights ``s``; a one-hot ``q`` is exactly
the hard-target loss.

**Small label counts.** With ``beta = 0.999`` the paper's ~110k labels give nearly uniform
weights (every ``n_c`` far above ``1 / (1 - beta)``), but ~4k labels give a 15x tilt (skip 0.76,
execute 0.14, repeat 2.09). :func:`effective_number_weights` therefore caps the ratio of any
weight to the smallest present one (``max_ratio``), which never binds at the paper's scale.

**Logit adjustment at inference** (:func:`inference_adjustment`): a loss weighted by ``w`` has
its optimum at ``softmax(z) ∝ w_y p(y | x)`` (exact for cross-entropy, approximate for focal),
so ``z - log w`` recovers the unweighted posterior; the logit-adjusted cross-entropy
(``loss="ce"``) trains ``z + tau log prior`` on the labels, so ``z + tau log prior`` is the
posterior. Either vector is stored in the checkpoint and added before the softmax.
"""

from __future__ import annotations

import logging
import math
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


def effective_number_weights(
    counts: Sequence[float], beta: float = 0.999, max_ratio: float | None = None
) -> Tensor:
    """Effective-number class weights, normalized to sum to ``len(counts)``.

    Args:
        counts: per-class sample counts of the training split (``n_c >= 0``; soft targets
            give fractional counts).
        beta: in ``[0, 1)``; ``beta = 0`` gives equal weights over present classes.
        max_ratio: cap on any weight over the smallest present weight (``None``: no cap).

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
    if max_ratio is not None:
        if max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1 or None, got {max_ratio}")
        raw = torch.minimum(raw, raw[present].min() * max_ratio)
    absent = [i for i, ok in enumerate(present.tolist()) if not ok]
    if absent:
        logger.warning("classes %s have no training labels; their loss weight is 0", absent)
    return (raw * n.numel() / raw.sum()).to(torch.float32)


def soft_counts(targets: Tensor, sample_weight: Tensor | None = None) -> list[float]:
    """Class mass ``[3]`` of soft targets ``[..., 3]`` (optionally weighted per sample)."""
    q = targets.reshape(-1, targets.shape[-1]).double()
    if sample_weight is not None:
        q = q * sample_weight.reshape(-1, 1).double()
    return [float(x) for x in q.sum(dim=0).tolist()]


def inference_adjustment(
    counts: Sequence[float], kind: str, *, weights: Sequence[float] | None = None,
    tau: float = 1.0,
) -> tuple[float, ...]:
    """The logit adjustment that undoes a loss's class tilt (see the module docstring).

    Args:
        counts: training class counts (the prior of ``kind="ce"``).
        kind: ``"focal"`` (weighted by ``weights``: ``-log w``, 0 where unweighted or absent)
            or ``"ce"`` (logit-adjusted cross-entropy: ``tau log prior``).
    """
    if kind == "focal":
        if weights is None:
            return (0.0,) * len(counts)
        return tuple(-math.log(w) if w > 0 else 0.0 for w in weights)
    if kind == "ce":
        total = float(sum(counts))
        return tuple(tau * math.log(c / total) if c > 0 else 0.0 for c in counts)
    raise ValueError(f"loss kind must be 'focal' or 'ce', got {kind!r}")


def _as_soft(target: Tensor, num_classes: int) -> Tensor:
    """``[N, C]`` float targets from class indices ``[...]`` or soft targets ``[..., C]``."""
    if target.is_floating_point():
        return target.reshape(-1, num_classes).float()
    return F.one_hot(target.reshape(-1).long(), num_classes).float()


def focal_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "mean",
    sample_weight: Tensor | None = None,
) -> Tensor:
    """Class-weighted focal loss, hard or soft targets.

    Args:
        logits: ``[N, C]`` (or ``[..., C]``, flattened) unnormalized scores.
        target: ``[N]`` (or ``[...]``) class indices, or float ``[..., C]`` soft targets.
        weight: ``[C]`` class weights, or ``None`` for all ones.
        gamma: focusing parameter (>= 0); 0 is (weighted) cross-entropy.
        reduction: ``"mean"`` (sum over samples / sum of target weights), ``"sum"`` or ``"none"``.
        sample_weight: ``[N]`` (or ``[...]``, any shape that flattens to ``N``) per-sample
            weights, or ``None``.

    Returns:
        Scalar loss, or ``[N]`` per-sample losses for ``reduction="none"``.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    num_classes = logits.shape[-1]
    logits = logits.reshape(-1, num_classes).float()
    q = _as_soft(target, num_classes).to(logits.device)
    if logits.shape[0] != q.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit rows but {q.shape[0]} targets")
    logp = F.log_softmax(logits, dim=-1)  # [N, C]
    cw = q if weight is None else q * weight.to(logp).unsqueeze(0)  # [N, C]
    if sample_weight is not None:
        cw = cw * sample_weight.reshape(-1, 1).to(logp)
    terms = -cw * logp
    if gamma != 0:
        terms = terms * (1.0 - logp.exp()).clamp_min(0.0).pow(gamma)
    per_sample = terms.sum(dim=1)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        denom = cw.sum()
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

    def forward(
        self, logits: Tensor, target: Tensor, sample_weight: Tensor | None = None
    ) -> Tensor:
        """``logits [..., 3], target [...] or [..., 3] -> scalar`` (mean reduction)."""
        return focal_loss(logits, target, self.class_weights, self.gamma,
                          sample_weight=sample_weight)

    def extra_repr(self) -> str:
        w = None if self.class_weights is None else [round(float(x), 4) for x in self.class_weights]
        return f"gamma={self.gamma}, class_weights={w}"


class AdjustedCrossEntropy(nn.Module):
    """Logit-adjusted cross-entropy (Menon et al. 2021): ``CE(z + tau log prior, q)``.

    Unweighted; the prior comes from the training counts. Inference adds ``tau log prior``
    (:func:`inference_adjustment`) to recover the posterior.
    """

    def __init__(self, counts: Sequence[float], tau: float = 1.0) -> None:
        super().__init__()
        self.tau = float(tau)
        shift = inference_adjustment(counts, "ce", tau=self.tau)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32))
        self.class_weights = None

    def forward(
        self, logits: Tensor, target: Tensor, sample_weight: Tensor | None = None
    ) -> Tensor:
        return focal_loss(logits + self.shift.to(logits), target, None, 0.0,
                          sample_weight=sample_weight)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, shift={[round(float(x), 4) for x in self.shift]}"
