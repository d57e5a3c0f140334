"""What crosses the actor boundary during an evaluation: a policy's request and its answer.

Both extend the search's types (:class:`~drllm.types.EvalRequest`,
:class:`~drllm.types.Evaluation`) with optional fields, so the evaluation pool, its transports
and actors carry them unchanged. Imports neither torch nor ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from drllm.types import EvalRequest, Evaluation


@dataclass(frozen=True)
class PolicyRequest(EvalRequest):
    """Generate for one example under one policy and grade the answer.

    Attributes:
        alpha: ``None``: follow ``path`` (default, oracle and static policies); a float: let
            the evaluator's routers choose the path during prefill with this control knob
            (``path`` is then ignored).
        gate: routed: the gate ``tau`` (``None``: the argmax of the knob's probabilities).
        max_new_tokens: generated tokens at most (the dataset's budget).
        stop_strings: generation stops once the text holds one of these.
    """

    alpha: Optional[float] = None
    gate: Optional[float] = None
    max_new_tokens: int = 64
    stop_strings: tuple[str, ...] = ()

    @property
    def routed(self) -> bool:
        return self.alpha is not None


@dataclass(frozen=True)
class PolicyEvaluation(Evaluation):
    """An :class:`~drllm.types.Evaluation` with what the evaluation job reports per example.

    Attributes:
        path: the path the answer was generated along (the routers' choice for a routed
            request; the first choice order's with chance shuffles).
        tokens: tokens generated (EOS included).
        prompt_tokens: prompt tokens.
        finish_reason: ``"eos"``, ``"length"`` or ``"stop"``.
        seconds: this row's share of its executor call's wall time (seconds; a call's time is
            split over its rows in proportion to their block-token work).
        router_seconds: this row's share of the time spent in the routers (0 for fixed paths).
    """

    path: tuple[int, ...] = ()
    tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: str = ""
    seconds: float = 0.0
    router_seconds: float = 0.0
