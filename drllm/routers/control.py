"""The control knob alpha: move routed decisions toward skip, execute or repeat without retraining.

For (calibrated) router probabilities ``p`` over (skip, execute, repeat) and ``alpha`` in
``[-1, 1]``, the knob mixes ``p`` with a one-hot target ``e``; the cost of the routed path grows
with ``alpha`` (``-1`` cheapest, ``+1`` dearest) and the knob passes through the default path::

    alpha in [-1, 0]:    p' = (1 - |alpha|) p + |alpha| e_skip       (-1: every block skips)
    alpha in [0, 1/2]:   p' = (1 - 2 alpha) p + 2 alpha e_execute    (1/2: the default path)
    alpha in [1/2, 1]:   p' = (2 - 2 alpha) e_execute + (2 alpha - 1) e_repeat   (1: all repeat)

* ``alpha = 0`` leaves ``p`` unchanged (the trained routers' decisions);
* ``alpha = 1/2`` is exactly the default path: ``p'`` is one-hot execute, whatever the routers
  say (the execute direction the paper's knob also has);
* past ``1/2`` every block repeats once ``2 alpha - 1`` exceeds ``2 - 2 alpha`` (or the gate).

The decision is then taken by :mod:`drllm.routers.decision` (argmax, or the gate ``tau``).
Probabilities, not logits, are mixed, so ``p'`` stays a distribution and the knob is monotone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from drllm.paths import EXECUTE, REPEAT, SKIP

DEFAULT_PATH_ALPHA = 0.5
"""The knob value whose decisions are the default path (every block executed once)."""


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise ``ValueError`` if it is outside ``[-1, 1]``."""
    value = float(alpha)
    if math.isnan(value) or not -1.0 <= value <= 1.0:
        raise ValueError(f"control knob alpha must be in [-1, 1], got {alpha!r}")
    return value


def _onehot(index: int, like: Tensor) -> Tensor:
    out = torch.zeros(3, dtype=like.dtype, device=like.device)
    out[index] = 1.0
    return out


def apply_control(probs: Tensor, alpha: float) -> Tensor:
    """Mix router probabilities with the knob's target (see the module docstring).

    Args:
        probs: ``[..., 3]`` probabilities over (skip, execute, repeat).
        alpha: control knob in ``[-1, 1]``.

    Returns:
        ``[..., 3]`` adjusted probabilities; ``probs`` itself when ``alpha == 0``.
    """
    a = check_alpha(alpha)
    if probs.shape[-1] != 3:
        raise ValueError(
            f"probs must end in 3 classes (skip, execute, repeat), got {tuple(probs.shape)}"
        )
    if a == 0.0:
        return probs
    if a < 0:
        return (1.0 + a) * probs + (-a) * _onehot(SKIP, probs)
    if a <= DEFAULT_PATH_ALPHA:
        w = 2.0 * a
        return (1.0 - w) * probs + w * _onehot(EXECUTE, probs)
    v = 2.0 * a - 1.0
    target = (1.0 - v) * _onehot(EXECUTE, probs) + v * _onehot(REPEAT, probs)
    return target.expand_as(probs).clone()
