"""Expansion priors: the order in which a node's untried edits are expanded.

Every node of the tree expands its legal edits (:func:`drllm.paths.legal_actions`) one at a
time; a :class:`Prior` decides the order, from the node's path and the tree's seeded RNG.

* :class:`UniformPrior` — a seeded uniform shuffle (the paper; the default).
* :class:`BlockPrior` — per-block logits for skipping and repeating; the order is a sample
  without replacement with probability ``∝ exp(logit / temperature)`` (Gumbel-top-k, one
  Gumbel draw per edit from the tree RNG, so deterministic per seed). Built from per-block
  layer importance (:meth:`BlockPrior.from_layer_importance`, e.g. ``1 - cos(h_in, h_out)``
  of each block, ShortGPT's block influence) or from a trained router's mean probabilities
  (:meth:`BlockPrior.from_router_probs`).

``MCTSConfig.prior`` / ``prior_temperature`` only name the prior a caller should build
(:func:`prior_from_config`); the tree uses the object it is handed.

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Sequence

from drllm.paths import Action, LayerPath

logger = logging.getLogger(__name__)

REPEAT_OFFSET = math.log(2.3 / 7.6)
"""Repeat logit relative to the mean skip logit in :meth:`BlockPrior.from_layer_importance`:
the log of the paper's label balance of repeats to skips (2.3 % vs 7.6 %), about -1.2. A repeat
is then sampled like the skip of a block 1.2 standard deviations more important than average,
so skips of unimportant blocks come first and repeats before skips of the most important."""

_PROB_FLOOR = 1e-6
"""Smallest router probability used in a log (keeps logits finite for hard 0 / 1 outputs)."""


def seeded_shuffle(items: list, rng: random.Random) -> None:
    """``rng.shuffle(items)``, draw for draw: the same Fisher-Yates swaps from the same
    ``getrandbits`` calls, without a Python call per element (the uniform prior shuffles
    ~90 edits per new node, most of the search tree's time otherwise).

    Falls back to ``rng.shuffle`` for an RNG whose ``_randbelow`` is not CPython's
    getrandbits rejection sampler (a subclass overriding ``random()`` only, say).
    """
    if type(rng)._randbelow is not random.Random._randbelow_with_getrandbits:
        rng.shuffle(items)
        return
    getrandbits = rng.getrandbits
    for i in range(len(items) - 1, 0, -1):
        n = i + 1
        k = n.bit_length()
        j = getrandbits(k)
        while j >= n:
            j = getrandbits(k)
        items[i], items[j] = items[j], items[i]


class Prior:
    """Base class: orders a node's legal edits for expansion.

    Subclasses override :meth:`order`; :meth:`check` lets a prior refuse a model size.
    """

    def check(self, num_layers: int) -> None:
        """Raise ``ValueError`` if this prior cannot order edits of ``num_layers`` blocks."""

    def order(self, path: LayerPath, actions: list[Action], rng: random.Random) -> list[Action]:
        """The same ``actions`` in expansion order (first element expanded first).

        Args:
            path: the node's path (the edits apply to it).
            actions: its legal edits, in :func:`~drllm.paths.legal_actions` order.
            rng: the tree's RNG; draw only from it, so a seed fixes the search.
        """
        raise NotImplementedError


class UniformPrior(Prior):
    """A seeded uniform shuffle: one ``rng.shuffle`` of the legal edits per node."""

    def order(self, path: LayerPath, actions: list[Action], rng: random.Random) -> list[Action]:
        # The tree pops untried edits from the end of the shuffled list, so the expansion order
        # is the shuffle reversed: the same random stream as the original search.
        shuffled = list(actions)
        seeded_shuffle(shuffled, rng)
        shuffled.reverse()
        return shuffled

    def __repr__(self) -> str:
        return "UniformPrior()"


def _finite_list(name: str, values: Sequence[float]) -> list[float]:
    out = []
    for i, v in enumerate(values):
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{i}] must be a number, got {v!r}") from None
        if not math.isfinite(x):
            raise ValueError(f"{name}[{i}] must be finite, got {v!r}")
        out.append(x)
    return out


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


class BlockPrior(Prior):
    """Per-block logits; expansion order sampled without replacement ``∝ exp(logit / T)``.

    An edit's logit is the mean of ``skip_logits`` over the blocks it skips (one or two), or
    ``repeat_logits[start]`` for a repeat. The order is Gumbel-top-k: each edit gets
    ``logit / T + Gumbel(0, 1)`` (drawn from the tree RNG in ``legal_actions`` order) and the
    edits are expanded by decreasing key, which samples them without replacement with
    probability proportional to ``exp(logit / T)``.

    Args:
        skip_logits: ``[L]`` preference for skipping each block (higher = tried earlier).
        repeat_logits: ``[L]`` preference for repeating each block.
        temperature: ``T > 0``; small ``T`` follows the logits almost greedily, large ``T``
            approaches the uniform order.

    Raises:
        ValueError: empty or unequal lengths, a non-finite logit, or a bad temperature.
    """

    def __init__(
        self,
        skip_logits: Sequence[float],
        repeat_logits: Sequence[float],
        temperature: float = 1.0,
    ) -> None:
        skip = _finite_list("skip_logits", skip_logits)
        repeat = _finite_list("repeat_logits", repeat_logits)
        if not skip:
            raise ValueError("skip_logits is empty; BlockPrior needs one logit per block")
        if len(repeat) != len(skip):
            raise ValueError(
                f"repeat_logits has {len(repeat)} entries but skip_logits has {len(skip)}; "
                f"BlockPrior needs one of each per block"
            )
        self.skip_logits = tuple(skip)
        self.repeat_logits = tuple(repeat)
        self.temperature = _check_temperature(temperature)

    @property
    def num_layers(self) -> int:
        """``L``, the number of blocks the logits cover."""
        return len(self.skip_logits)

    def check(self, num_layers: int) -> None:
        if num_layers != self.num_layers:
            raise ValueError(
                f"BlockPrior has logits for {self.num_layers} blocks but the model has "
                f"{num_layers}; build it from per-block values of this model"
            )

    def logit(self, action: Action) -> float:
        """The edit's logit (before the temperature)."""
        if action.kind == "repeat":
            return self.repeat_logits[action.start]
        span = self.skip_logits[action.start : action.start + action.length]
        return sum(span) / len(span)

    def order(self, path: LayerPath, actions: list[Action], rng: random.Random) -> list[Action]:
        keys = []
        for index, action in enumerate(actions):
            u = rng.random()
            gumbel = -math.log(-math.log(u)) if u > 0.0 else -math.inf
            keys.append((self.logit(action) / self.temperature + gumbel, -index))
        ranked = sorted(range(len(actions)), key=lambda i: keys[i], reverse=True)
        return [actions[i] for i in ranked]

    @classmethod
    def from_layer_importance(
        cls, importance: Sequence[float], temperature: float = 1.0
    ) -> "BlockPrior":
        """Skip unimportant blocks first.

        Args:
            importance: ``[L]`` per-block importance ``>= 0``, e.g. ``1 - cos(h_in, h_out)``
                of block ``i`` averaged over tokens (ShortGPT's block influence).
            temperature: ``T`` of the sampling.

        The skip logit of block ``i`` is minus the z-score of its importance (mean 0, one unit
        per standard deviation; all 0 when every block is equally important). Repeats are
        neutral: every repeat logit is the mean skip logit (0) plus :data:`REPEAT_OFFSET`
        (``log(2.3 / 7.6) ~ -1.2``, the paper's repeat-to-skip label ratio).
        """
        values = _finite_list("importance", importance)
        if not values:
            raise ValueError("importance is empty; give one value per block")
        negative = [i for i, v in enumerate(values) if v < 0]
        if negative:
            raise ValueError(f"importance must be >= 0; blocks {negative[:8]} are negative")
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        skip = [-(v - mean) / std if std > 0 else 0.0 for v in values]
        neutral = sum(skip) / len(skip) + REPEAT_OFFSET
        return cls(skip, [neutral] * len(skip), temperature)

    @classmethod
    def from_router_probs(
        cls, probs: Sequence[Sequence[float]], temperature: float = 1.0
    ) -> "BlockPrior":
        """Follow a trained router: logits ``log p_skip - log p_execute`` and
        ``log p_repeat - log p_execute`` per block.

        Args:
            probs: ``[L][3]`` probabilities (skip, execute, repeat) of each block's router,
                e.g. averaged over a dataset's prompts. Rows are renormalized; probabilities
                are floored at 1e-6 so hard 0 / 1 outputs keep finite logits.
            temperature: ``T`` of the sampling.
        """
        skip, repeat = [], []
        if len(probs) == 0:
            raise ValueError("probs is empty; give one [skip, execute, repeat] row per block")
        for i, row in enumerate(probs):
            values = _finite_list(f"probs[{i}]", row)
            if len(values) != 3:
                raise ValueError(
                    f"probs[{i}] has {len(values)} entries; each block needs 3 "
                    f"(skip, execute, repeat)"
                )
            total = sum(values)
            if min(values) < 0 or total <= 0:
                raise ValueError(f"probs[{i}] = {values} is not a probability row")
            p_skip, p_exec, p_repeat = (max(v / total, _PROB_FLOOR) for v in values)
            skip.append(math.log(p_skip) - math.log(p_exec))
            repeat.append(math.log(p_repeat) - math.log(p_exec))
        return cls(skip, repeat, temperature)

    def __repr__(self) -> str:
        return f"BlockPrior(L={self.num_layers}, temperature={self.temperature:g})"


def prior_from_config(
    name: str,
    temperature: float = 1.0,
    *,
    importance: Sequence[float] | None = None,
    router_probs: Sequence[Sequence[float]] | None = None,
) -> Prior:
    """Build the prior ``MCTSConfig.prior`` names.

    Args:
        name: ``"uniform"``, ``"layer_importance"`` (needs ``importance``) or ``"router"``
            (needs ``router_probs``).
        temperature: ``MCTSConfig.prior_temperature``.
        importance: ``[L]`` block importance, for ``"layer_importance"``.
        router_probs: ``[L][3]`` router probabilities, for ``"router"``.
    """
    if name == "uniform":
        return UniformPrior()
    if name == "layer_importance":
        if importance is None:
            raise ValueError("prior 'layer_importance' needs importance=[L] block importances")
        return BlockPrior.from_layer_importance(importance, temperature)
    if name == "router":
        if router_probs is None:
            raise ValueError("prior 'router' needs router_probs=[L][3] router probabilities")
        return BlockPrior.from_router_probs(router_probs, temperature)
    raise ValueError(f"unknown prior {name!r}; use 'uniform', 'layer_importance' or 'router'")
