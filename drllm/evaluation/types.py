"""What crosses the actor boundary during an evaluation: a policy's request and its answer.

Both are the search's own types (:class:`~drllm.types.EvalRequest`,
:class:`~drllm.types.Evaluation`) parameterised by the evaluation's extra fields
(``EvalRequest[PolicyOptions]``, ``Evaluation[PolicyMeasures]``, as mctx's
``PolicyOutput[T]``), so the evaluation pool, its transports and actors carry them unchanged
and every reader gets typed fields. Imports neither torch nor ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from drllm.types import EvalRequest, Evaluation


@dataclass(frozen=True)
class PolicyOptions:
    """How a policy generates (the ``extra`` of a :data:`PolicyRequest`).

    Attributes:
        alpha: ``None``: follow the request's ``path`` (default, oracle and static policies);
            a float: let the evaluator's routers choose the path during prefill with this
            control knob (``path`` is then ignored).
        gate: routed: the gate ``tau`` (``None``: the argmax of the knob's probabilities).
        max_new_tokens: generated tokens at most (the dataset's budget).
        stop_strings: generation stops once the text holds one of these.
        loglik_norm: a request with choices ranks them per character (lm-eval ``acc_norm``).
    """

    alpha: Optional[float] = None
    gate: Optional[float] = None
    max_new_tokens: int = 64
    stop_strings: tuple[str, ...] = ()
    loglik_norm: bool = False

    @property
    def routed(self) -> bool:
        return self.alpha is not None


@dataclass(frozen=True)
class PolicyMeasures:
    """What the evaluation job reports per answer beyond an :class:`~drllm.types.Evaluation`
    (the ``extra`` of a :data:`PolicyEvaluation`).

    Attributes:
        path: the path the answer was generated along (the routers' choice for a routed
            request; the first choice order's with chance shuffles).
        prompt_tokens: prompt tokens.
        seconds: this answer's share of its executor calls' wall time (seconds; a call's time
            is split over its rows in proportion to their block-token work; summed over the
            choice orders).
        router_seconds: its share of the time spent in the routers (0 for fixed paths).
    """

    path: tuple[int, ...] = ()
    prompt_tokens: int = 0
    seconds: float = 0.0
    router_seconds: float = 0.0


PolicyRequest = EvalRequest[PolicyOptions]
"""Generate for one example under one policy and grade the answer."""
PolicyEvaluation = Evaluation[PolicyMeasures]
"""A policy's graded answer with its :class:`PolicyMeasures`."""


def options_of(request: EvalRequest) -> PolicyOptions:
    """A request's policy options (``PolicyOptions()``: a plain request follows its path)."""
    return request.extra if isinstance(request.extra, PolicyOptions) else PolicyOptions()


def measures_of(evaluation: Evaluation) -> PolicyMeasures:
    """An evaluation's measures (``PolicyMeasures()`` for one that never reached a policy
    evaluator, e.g. a failed one)."""
    extra = evaluation.extra
    return extra if isinstance(extra, PolicyMeasures) else PolicyMeasures()
