"""Configuration of the length-aware MCTS and the evaluate-function contract.

Defaults are the paper's (Dr.LLM, arXiv 2510.12773): 50 simulations per question, UCB
exploration ``c = 1.8``, length penalty ``lambda = 3``, random-child probability
``epsilon = 0.1``, at most 2 consecutive skipped blocks, cost at most ``2 L`` blocks per forward
pass, early stop with a 2-block margin.

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Union

from drllm.checks import check_bool, check_choice, check_int, check_real
from drllm.paths import LayerPath, PathConstraints
from drllm.types import Evaluation

EvaluateFn = Callable[[LayerPath], Union[Evaluation, float]]
"""Generate along a path for one question and grade it: an :class:`Evaluation`, or a bare
reward (``float``), which means an empty response."""


EXPANSIONS = ("widening", "full")
"""Values of :attr:`MCTSConfig.expansion`."""

PRIORS = ("uniform", "layer_importance", "router")
"""Values of :attr:`MCTSConfig.prior` (names; the caller builds the prior object)."""


@dataclass(frozen=True)
class MCTSConfig:
    """Knobs of one length-aware MCTS search (one tree per question).

    Attributes:
        num_simulations: simulation budget per question, the default path's evaluation
            (simulation 0) included. Each later simulation expands one untried edit.
        c: UCB exploration constant in ``c * sqrt(ln N_parent / n_child)``.
        length_penalty: ``lambda`` in the selection-only penalty ``lambda * cost / L``
            (cost in blocks per forward pass, ``L`` blocks in the model).
        epsilon: probability, at each selection step, of descending into a uniformly random
            child instead of the UCB argmax.
        max_consecutive_skips: longest allowed run of skipped blocks in any path.
        max_cost_factor: a path's cost must be ``<= max_cost_factor * L``; in ``[1, 2]`` so the
            default path (cost ``L``) is always allowed.
        min_executed: at least this many blocks must run in any path.
        early_stop: enable the paper's early-stop rule (see :mod:`drllm.search.policy`).
        early_stop_margin: blocks a correct path must save against the default path, when the
            default is already correct, to stop early (``cost <= L - margin``).
        improve: search a question the default path answers wrong for a path that answers it
            (the paper). ``False``: such a question is not searched -- its label is the default
            path, unsolved -- and only questions the default answers are searched for cheaper
            paths that keep the answer. For rewards under which a fix is found by luck: measure
            with a placebo control (``dataset.placebo=true``); a search that "improves" a wrong
            gold as often as the true one finds luck, not answers.
        success_reward: reward at or above which a path counts as correct (graders are binary:
            1.0 correct, 0.0 wrong).
        seed: seed of the tree's RNG (untried-action order and epsilon draws); same seed and
            same rewards give the same sequence of evaluated paths.
        expansion: ``"widening"`` or ``"full"``. ``"full"`` is the paper's literal reading:
            descend by UCB through fully expanded nodes and expand one untried edit at the
            first node that has one; with ``L = 30`` the root has 89 legal edits, so 50
            simulations never leave depth 1. ``"widening"`` (progressive widening) lets a node
            with ``N`` visits add a child only while it has fewer than ``ceil(widen_k *
            N ** widen_alpha)`` children, and keeps one node per path (transposition table);
            ``"full"`` keeps the literal per-question memo instead (a path reached again
            through another order of edits is a new node answered from the memo).
        widen_k: ``k`` of the widening limit (> 0). Default ``k = 1, alpha = 0.5``: a node
            with ``N`` visits holds at most ``ceil(sqrt(N))`` children, so after 50
            simulations the root holds 8 and a child with ~6 visits 3 (how deep labels are
            found with each setting: README, *Search depth*).
        widen_alpha: ``alpha`` of the widening limit, in ``[0, 1]``.
        patience: simulations still started after the first path that meets the early-stop
            rule before the search stops (their results awaited); a cheaper correct path found
            meanwhile becomes the best. ``0`` is the paper's rule (stop at once).
        prior: name of the expansion prior a caller builds (``"uniform"``,
            ``"layer_importance"`` or ``"router"``, see :mod:`drllm.search.prior`). The tree
            itself only uses the :class:`~drllm.search.prior.Prior` object it is given.
        prior_temperature: softmax temperature of a block prior (> 0; lower = follow the prior
            more strictly).
    """

    num_simulations: int = 50
    c: float = 1.8
    length_penalty: float = 3.0
    epsilon: float = 0.1
    max_consecutive_skips: int = 2
    max_cost_factor: float = 2.0
    min_executed: int = 1
    early_stop: bool = True
    early_stop_margin: int = 2
    improve: bool = True
    success_reward: float = 1.0
    seed: int = 0
    expansion: str = "widening"
    widen_k: float = 1.0
    widen_alpha: float = 0.5
    patience: int = 0
    prior: str = "uniform"
    prior_temperature: float = 1.0

    def __post_init__(self) -> None:
        o = "MCTSConfig"
        for name, minimum in (("num_simulations", 1), ("max_consecutive_skips", 0),
                              ("min_executed", 0), ("early_stop_margin", 0), ("seed", None),
                              ("patience", 0)):
            check_int(o, name, getattr(self, name), minimum)
        for name, low, high in (("c", 0.0, math.inf), ("length_penalty", 0.0, math.inf),
                                ("epsilon", 0.0, 1.0), ("max_cost_factor", 1.0, 2.0),
                                ("success_reward", -math.inf, math.inf),
                                ("widen_alpha", 0.0, 1.0)):
            check_real(o, name, getattr(self, name), low, high)
        check_bool(o, "early_stop", self.early_stop)
        check_bool(o, "improve", self.improve)
        check_real(o, "widen_k", self.widen_k, 0.0, open_low=True)
        check_real(o, "prior_temperature", self.prior_temperature, 0.0, open_low=True)
        check_choice(o, "expansion", self.expansion, EXPANSIONS)
        check_choice(o, "prior", self.prior, PRIORS)

    @property
    def constraints(self) -> PathConstraints:
        """The path rules every node of the tree obeys."""
        return PathConstraints(
            max_consecutive_skips=self.max_consecutive_skips,
            max_cost_factor=float(self.max_cost_factor),
            min_executed=self.min_executed,
        )


def as_evaluation(value: Evaluation | float) -> Evaluation:
    """Normalize an evaluate-function result; a bare number is a reward with an empty response.

    A failed :class:`Evaluation` (``failed=True``) passes through unchecked: its reward is
    meaningless (often 0.0) and the search never uses it as a reward.

    Raises:
        ValueError: the value is neither an :class:`Evaluation` nor a number, or its reward is
            not finite.
    """
    if isinstance(value, Evaluation):
        result = value
    elif isinstance(value, numbers.Real):
        result = Evaluation(reward=float(value))
    else:
        raise ValueError(
            f"an evaluation must be drllm.types.Evaluation or a float reward, got "
            f"{type(value).__name__}: {value!r}"
        )
    if result.failed:
        return result
    if not isinstance(result.reward, numbers.Real) or not math.isfinite(result.reward):
        raise ValueError(f"reward must be a finite number, got {result.reward!r}")
    return result
