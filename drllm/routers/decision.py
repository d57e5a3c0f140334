"""How router logits become a row's decisions at prefill: calibration, knob, gate, path rules.

For block ``i`` of a row, with router logits ``z [3]`` over (skip, execute, repeat):

1. **Logit adjustment** -- ``q = softmax(z + a)``. The training loss tilts the logits (class
   weights ``w``: the weighted-loss optimum is ``softmax(z) ∝ w_y p(y|x)``, so ``a = -log w``
   undoes it; a logit-adjusted loss trains ``z + log prior``, so ``a = log prior``). ``a`` is
   stored in the checkpoint (``config.json["logit_adjustment"]``) by the training job.
2. **Knob** -- ``q' = apply_control(q, alpha)`` (:mod:`drllm.routers.control`).
3. **Gate** -- with ``gate = None`` the decision is ``argmax q'``; with a gate ``tau`` the row
   deviates from execute only when the likelier of skip / repeat has ``q'_d > tau`` (strictly),
   so ``tau = 1`` is exactly the default path and smaller ``tau`` deviates more.
4. **Path rules** (:class:`RowRules`), enforced block by block as the search's are: no more
   than ``max_consecutive_skips`` skips in a row, at most ``max_edits`` MCTS edits from the
   default path (a skip run of ``r`` blocks is ``ceil(r / 2)`` edits, a repeat one), at least
   ``min_executed`` blocks run, cost ``<= max_cost_factor * L``. A deviation a rule forbids
   becomes execute.

:class:`RouterMeta` holds what a checkpoint says about its decisions (adjustment, calibrated
gate, the training labels' largest edit count, pooling); :class:`DecisionRule` the settings
of one routed policy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from drllm.paths import EXECUTE, REPEAT, SKIP
from drllm.routers.control import apply_control, check_alpha
from drllm.routers.pooling import PoolingSpec

logger = logging.getLogger(__name__)


def check_gate(gate: Optional[float]) -> Optional[float]:
    """``gate`` as a float in ``[0, 1]`` (or ``None``: argmax), else ``ValueError``."""
    if gate is None:
        return None
    value = float(gate)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"gate tau must be in [0, 1] (1: the default path), got {gate!r}")
    return value


@dataclass(frozen=True)
class RouterMeta:
    """What a router checkpoint says about its decisions (``config.json``).

    Attributes:
        logit_adjustment: ``a [3]`` added to the logits before the softmax, or ``None``.
        gate: the calibrated gate (``config.json["calibration"]["gate"]``), or ``None``.
        max_label_edits: the most MCTS edits any training label has (the default edit
            budget), or ``None``.
        pooling: which prompt tokens the routers pool (see :mod:`drllm.routers.pooling`).
    """

    logit_adjustment: Optional[tuple[float, float, float]] = None
    gate: Optional[float] = None
    max_label_edits: Optional[int] = None
    pooling: PoolingSpec = field(default_factory=PoolingSpec)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "RouterMeta":
        adj = config.get("logit_adjustment")
        adjustment = None if adj is None else (float(adj[0]), float(adj[1]), float(adj[2]))
        calibration = config.get("calibration") or {}
        edits = (config.get("label_edits") or {}).get("max")
        return cls(
            logit_adjustment=adjustment,
            gate=check_gate(calibration.get("gate")),
            max_label_edits=None if edits is None else int(edits),
            pooling=PoolingSpec.from_dict(config.get("pooling")),
        )


@dataclass(frozen=True)
class RowRules:
    """The search's path rules, enforced while a row's path is chosen (``None``: no limit)."""

    max_consecutive_skips: Optional[int] = 2
    max_edits: Optional[int] = None
    min_executed: int = 1
    max_cost_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.max_consecutive_skips is not None and self.max_consecutive_skips < 0:
            raise ValueError(f"max_consecutive_skips must be >= 0 or None, "
                             f"got {self.max_consecutive_skips}")
        if self.max_edits is not None and self.max_edits < 0:
            raise ValueError(f"max_edits must be >= 0 or None, got {self.max_edits}")
        if self.min_executed < 0 or not 0 < self.max_cost_factor <= 2:
            raise ValueError("min_executed must be >= 0 and max_cost_factor in (0, 2], got "
                             f"{self.min_executed} and {self.max_cost_factor}")


UNCONSTRAINED = RowRules(max_consecutive_skips=None, max_edits=None, min_executed=0)


@dataclass(frozen=True)
class DecisionRule:
    """One routed policy's decision settings (see the module docstring).

    Attributes:
        alpha: control knob in ``[-1, 1]``.
        gate: ``tau`` in ``[0, 1]``, or ``None`` for the argmax.
        adjust: apply the checkpoint's logit adjustment.
        rules: path rules enforced block by block.
    """

    alpha: float = 0.0
    gate: Optional[float] = None
    adjust: bool = True
    rules: RowRules = field(default_factory=RowRules)

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_alpha(self.alpha))
        object.__setattr__(self, "gate", check_gate(self.gate))


def calibrated_probs(logits: Tensor, adjustment: Optional[Sequence[float]]) -> Tensor:
    """``softmax(logits + adjustment)``: ``[..., 3] -> [..., 3]`` float32."""
    z = logits.float()
    if adjustment is not None:
        z = z + torch.as_tensor(list(adjustment), dtype=z.dtype, device=z.device)
    return torch.softmax(z, dim=-1)


def gated_decisions(probs: Tensor, alpha: float = 0.0, gate: Optional[float] = None) -> Tensor:
    """Decisions ``[...]`` (no path rules) from calibrated probabilities ``[..., 3]``."""
    q = apply_control(probs, alpha)
    if gate is None:
        return q.argmax(dim=-1)
    tau = check_gate(gate)
    deviation = torch.where(q[..., REPEAT] > q[..., SKIP], REPEAT, SKIP)
    best = torch.maximum(q[..., SKIP], q[..., REPEAT])
    return torch.where(best > tau, deviation, torch.full_like(deviation, EXECUTE))


class PathState:
    """The path rules' running state of a batch of rows, block by block (blocks ``0..L-1``)."""

    def __init__(self, rows: int, num_layers: int, rules: RowRules) -> None:
        self.rows, self.num_layers, self.rules = rows, num_layers, rules
        self.run = [0] * rows  # current run of skipped blocks
        self.edits = [0] * rows
        self.executed = [0] * rows  # blocks that run at least once
        self.cost = [0] * rows
        self.cap = math.floor(rules.max_cost_factor * num_layers + 1e-9)

    def allowed(self, row: int, block: int, decision: int) -> bool:
        """Whether ``decision`` at ``block`` keeps ``row``'s path within the rules."""
        r, left = self.rules, self.num_layers - block - 1
        if decision == SKIP:
            new_edit = 1 if self.run[row] % 2 == 0 else 0
            return ((r.max_consecutive_skips is None or self.run[row] < r.max_consecutive_skips)
                    and (r.max_edits is None or self.edits[row] + new_edit <= r.max_edits)
                    and self.executed[row] + left >= r.min_executed)
        if decision == REPEAT:
            return ((r.max_edits is None or self.edits[row] + 1 <= r.max_edits)
                    and self.cost[row] + 2 + left <= self.cap)
        return True

    def take(self, row: int, decision: int) -> None:
        if decision == SKIP:
            self.edits[row] += 1 if self.run[row] % 2 == 0 else 0
            self.run[row] += 1
            return
        self.run[row] = 0
        self.executed[row] += 1
        self.cost[row] += decision
        if decision == REPEAT:
            self.edits[row] += 1

    def step(self, block: int, wanted: Sequence[int]) -> list[int]:
        """The rows' decisions at ``block``: ``wanted`` where allowed, else execute."""
        if len(wanted) != self.rows:
            raise ValueError(f"{len(wanted)} decisions for {self.rows} rows")
        out = []
        for row, d in enumerate(int(x) for x in wanted):
            d = d if self.allowed(row, block, d) else EXECUTE
            self.take(row, d)
            out.append(d)
        return out
