"""The control knob alpha: bias routed decisions toward skipping or repeating without retraining.

For router probabilities ``p`` over (skip, execute, repeat) and ``alpha`` in ``[-1, 1]``::

    p' = (1 - |alpha|) * p + |alpha| * onehot(skip if alpha < 0 else repeat)

* ``alpha = 0`` leaves ``p`` unchanged (the trained router's decisions).
* ``alpha < 0`` moves mass toward skip; ``alpha = -1`` skips every block (cheapest).
* ``alpha > 0`` moves mass toward repeat; ``alpha = 1`` repeats every block (cost ``2 L``).

The decision is ``argmax(p')``. Since ``p'`` is a convex mixture, a row switches to skip
(for ``alpha < 0``) exactly when ``p_skip + |alpha| / (1 - |alpha|) >= max_c p_c``; so
``|alpha|`` is the margin, in probability units scaled by ``1 / (1 - |alpha|)``, that the
preferred class is granted. Probabilities, not logits, are mixed, so ``p'`` stays a
distribution and the knob is monotone in ``alpha``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from drllm.paths import REPEAT, SKIP


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise ``ValueError`` if it is outside ``[-1, 1]``."""
    value = float(alpha)
    if math.isnan(value) or not -1.0 <= value <= 1.0:
        raise ValueError(f"control knob alpha must be in [-1, 1], got {alpha!r}")
    return value


def apply_control(probs: Tensor, alpha: float) -> Tensor:
    """Move router probabilities toward one-hot skip (``alpha < 0``) or repeat (``alpha > 0``).

    Args:
        probs: ``[..., 3]`` probabilities over (skip, execute, repeat).
        alpha: control knob in ``[-1, 1]``.

    Returns:
        ``[..., 3]`` adjusted probabilities ``(1 - |alpha|) p + |alpha| onehot``; ``probs``
        itself when ``alpha == 0``.
    """
    a = check_alpha(alpha)
    if probs.shape[-1] != 3:
        raise ValueError(
            f"probs must end in 3 classes (skip, execute, repeat), got {tuple(probs.shape)}"
        )
    if a == 0.0:
        return probs
    target = torch.zeros(3, dtype=probs.dtype, device=probs.device)
    target[SKIP if a < 0 else REPEAT] = 1.0
    return (1.0 - abs(a)) * probs + abs(a) * target
