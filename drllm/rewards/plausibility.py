"""The plausibility guard: an edited path's accepted answer must read like the default model's.

A grader can be fooled; the default model is harder to fool. Every response a grader accepts is
scored teacher-forced under the **default** path: its mean token log-likelihood (nats per token,
the final EOS included when generated). An edited path's accepted response whose score is below
``min_mean_loglik`` is rejected (reward 0, ``implausible=True``): broken text that happens to
state the gold (``'The answer is 2. zx the the the'``) reads as garbage to the default model.
The default path's own responses are scored too (never rejected): they are the reference
distribution a threshold is chosen from (the search report shows both).

Pure Python: the score comes from the evaluator (``drllm.distributed.likelihood``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from drllm.types import Evaluation


@dataclass(frozen=True)
class PlausibilityGuard:
    """Reject accepted edited-path responses the default model finds implausible.

    Attributes:
        min_mean_loglik: the least mean token log-likelihood (nats, <= 0) under the default
            path an edited path's accepted response may have; None turns the guard off (the
            scores are still recorded).
        success_reward: reward at or above which a response counts as accepted.
    """

    min_mean_loglik: float | None = -1.0
    success_reward: float = 1.0

    def __post_init__(self) -> None:
        m = self.min_mean_loglik
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float))
                              or not math.isfinite(m) or m > 0):
            raise ValueError("PlausibilityGuard.min_mean_loglik must be a finite number <= 0 "
                             f"(nats per token) or None, got {m!r}")

    def accepted(self, evaluation: Evaluation) -> bool:
        """Whether the grader accepted the response (it then needs a plausibility score)."""
        return not evaluation.failed and float(evaluation.reward) >= self.success_reward

    def judge(self, evaluation: Evaluation, score: float | None, edited: bool) -> Evaluation:
        """``evaluation`` with its plausibility recorded; rejected when too unlikely.

        Args:
            evaluation: the graded outcome of one row.
            score: the response's mean token log-likelihood under the default path (None when
                it was not scored: a rejected or empty response).
            edited: the row's path is not the default path (only edited paths are rejected).
        """
        if score is None:
            return evaluation
        judged = dataclasses.replace(evaluation, plausibility=float(score))
        limit = self.min_mean_loglik
        if not edited or limit is None or not self.accepted(evaluation) or score >= limit:
            return judged
        return dataclasses.replace(
            judged, reward=0.0, implausible=True,
            reason=f"implausible: {evaluation.reason}, but mean log-likelihood {score:.2f} "
                   f"< {limit:g} nats/token under the default path",
        )
