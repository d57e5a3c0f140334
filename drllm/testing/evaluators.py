"""Test doubles of the evaluator: :class:`DummyEvaluator` and known-answer rewards.

:class:`DummyEvaluator` answers ``(example, path)`` requests from a reward function of the
example id and the path, without a model; faults (errors, delays, worker deaths) can be
injected. :class:`KeyedBlockReward` is a bandit with a known answer. Use it as
``EvaluatorSpec(DummyEvaluator, {"num_layers": L, ...})``.

Imports neither torch nor ray.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from drllm.distributed.evaluator import (
    Evaluator,
    EvaluatorContext,
    EvaluatorInfo,
    WorkerLostError,
)
from drllm.paths import LayerPath
from drllm.types import EvalRequest, Evaluation

logger = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """An error raised on purpose by :class:`DummyEvaluator` fault injection."""


def hash_reward(example_id: str, path: LayerPath) -> float:
    """Deterministic pseudo-random binary reward of ``(example_id, path)`` (P(1) = 1/2)."""
    digest = hashlib.blake2b(f"{example_id}|{path.to_str()}".encode(), digest_size=8).digest()
    return 1.0 if digest[0] < 128 else 0.0


@dataclass(frozen=True)
class KeyedBlockReward:
    """Bandit reward with a known answer: 1.0 iff the path skips the example's key block.

    For an example whose id is in ``key_block``, the default path (nothing skipped) scores
    0 and any path with ``path[key_block[id]] == 0`` scores 1; other examples score
    :func:`hash_reward`.
    """

    key_block: Mapping[str, int]

    def __call__(self, example_id: str, path: LayerPath) -> float:
        block = self.key_block.get(example_id)
        if block is None:
            return hash_reward(example_id, path)
        return 1.0 if path[block] == 0 else 0.0


@dataclass(frozen=True)
class ConstantReward:
    """The same reward for every (example, path): ``0.0`` makes every example unsolved."""

    value: float = 0.0

    def __call__(self, example_id: str, path: LayerPath) -> float:
        return float(self.value)


RewardFn = Callable[[str, LayerPath], float]


def _armed(after: Optional[int], workers: Optional[Sequence[int]], after_restart: bool,
           context: EvaluatorContext) -> bool:
    """Whether a fault injected after ``after`` requests applies to this worker incarnation."""
    targeted = workers is None or context.worker_index in set(workers)
    return after is not None and targeted and (after_restart or not context.restarted)


class DummyEvaluator(Evaluator):
    """A model-free evaluator for tests and dry runs, with delays and fault injection.

    Args:
        num_layers: L the paths must have.
        reward_fn: ``(example_id, path) -> reward``, deterministic and picklable
            (default :func:`hash_reward`).
        delay_s: sleep per request (seconds), to emulate generation time.
        batch_delay_s: sleep per batch (seconds), to emulate per-call overhead that batching
            amortizes.
        tokens_per_response: generated tokens assumed per response; ``layers_executed`` is
            ``path.cost * tokens_per_response``.
        die_after: the worker process dies (``os._exit``) when it starts a batch after having
            evaluated this many requests; in-process it raises :class:`WorkerLostError`.
        die_on_workers: worker indices that die (``None``: all of them).
        die_after_restart: also die in restarted workers (default: only the first incarnation
            dies, so a restart recovers).
        fail_example_ids: requests of these examples always raise :class:`InjectedFault`.
        fail_paths: requests for these paths (compact text, ``"SEERE..."``) always raise
            :class:`InjectedFault`, whatever the example.
        flaky_example_ids: requests of these examples raise on their first attempt in each
            worker, then succeed.
        hang_after: the worker hangs (sleeps ``hang_s`` inside the batch, answering nothing)
            when it starts a batch after having evaluated this many requests -- a stuck
            generation; the pool's ``call_timeout_s`` must kill it. In-process it raises
            :class:`WorkerLostError` (a synchronous call cannot be timed out).
        hang_on_workers: worker indices that hang (``None``: all of them).
        hang_after_restart: also hang in restarted workers (default: only the first
            incarnation, so the killed worker recovers).
        hang_s: how long a hang lasts (seconds).
        model_id: reported model id.
        context: set by :meth:`from_options`.
    """

    name = "dummy"

    def __init__(
        self,
        num_layers: int,
        reward_fn: Optional[RewardFn] = None,
        *,
        delay_s: float = 0.0,
        batch_delay_s: float = 0.0,
        tokens_per_response: int = 4,
        die_after: Optional[int] = None,
        die_on_workers: Optional[Sequence[int]] = None,
        die_after_restart: bool = False,
        fail_example_ids: Sequence[str] = (),
        fail_paths: Sequence[str] = (),
        flaky_example_ids: Sequence[str] = (),
        hang_after: Optional[int] = None,
        hang_on_workers: Optional[Sequence[int]] = None,
        hang_after_restart: bool = False,
        hang_s: float = 3600.0,
        model_id: str = "dummy",
        context: EvaluatorContext = EvaluatorContext(),
    ) -> None:
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(
                f"DummyEvaluator: num_layers must be a positive int, got {num_layers!r}"
            )
        if delay_s < 0 or batch_delay_s < 0:
            raise ValueError("DummyEvaluator: delays must be >= 0 seconds")
        if die_after is not None and die_after < 0:
            raise ValueError(f"DummyEvaluator: die_after must be >= 0, got {die_after}")
        self.num_layers = num_layers
        self.reward_fn: RewardFn = reward_fn if reward_fn is not None else hash_reward
        self.delay_s = float(delay_s)
        self.batch_delay_s = float(batch_delay_s)
        self.tokens_per_response = int(tokens_per_response)
        self.fail_example_ids = frozenset(fail_example_ids)
        self.fail_paths = frozenset(fail_paths)
        self.flaky_example_ids = frozenset(flaky_example_ids)
        self.model_id = model_id
        self.context = context
        targeted = die_on_workers is None or context.worker_index in set(die_on_workers)
        armed = die_after is not None and targeted and (die_after_restart or not context.restarted)
        self.die_after = die_after if armed else None
        self.hang_after = hang_after if _armed(hang_after, hang_on_workers, hang_after_restart,
                                               context) else None
        self.hang_s = float(hang_s)
        self.requests_done = 0
        self._flaky_seen: set[str] = set()

    @classmethod
    def from_options(cls, context: EvaluatorContext, **options: Any) -> "DummyEvaluator":
        return cls(context=context, **options)

    @property
    def info(self) -> EvaluatorInfo:
        return EvaluatorInfo("dummy", self.model_id, self.num_layers, "cpu")

    def _maybe_die(self) -> None:
        if self.die_after is None or self.requests_done < self.die_after:
            return
        logger.warning(
            "dummy evaluator %d: injected death after %d requests",
            self.context.worker_index, self.requests_done,
        )
        if self.context.in_process:
            self.die_after = None  # fire once per object; the transport builds a successor
            raise WorkerLostError(f"injected death of worker {self.context.worker_index}")
        os._exit(1)

    def _maybe_hang(self) -> None:
        if self.hang_after is None or self.requests_done < self.hang_after:
            return
        logger.warning("dummy evaluator %d: injected hang after %d requests (%.0f s)",
                       self.context.worker_index, self.requests_done, self.hang_s)
        self.hang_after = None
        if self.context.in_process:
            raise WorkerLostError(f"injected hang of worker {self.context.worker_index}")
        time.sleep(self.hang_s)

    def _one(self, request: EvalRequest) -> Evaluation:
        path = request.path if isinstance(request.path, LayerPath) else LayerPath(request.path)
        if len(path) != self.num_layers:
            raise ValueError(f"path {path} has {len(path)} blocks; the model has {self.num_layers}")
        if request.example_id in self.fail_example_ids:
            raise InjectedFault(f"injected failure for example {request.example_id}")
        text = path.to_str()
        if text in self.fail_paths:
            raise InjectedFault(f"injected failure for path {text}")
        if request.example_id in self.flaky_example_ids:
            key = f"{request.example_id}|{path.to_str()}"
            if key not in self._flaky_seen:
                self._flaky_seen.add(key)
                raise InjectedFault(f"injected flaky failure for example {request.example_id}")
        reward = float(self.reward_fn(request.example_id, path))
        return Evaluation(
            reward=reward,
            response=f"{request.example_id}:{text}",
            layers_executed=path.cost * self.tokens_per_response,
            reason="dummy",
        )

    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        """Evaluate in order; sleeps ``batch_delay_s + delay_s * len(requests)`` first."""
        self._maybe_die()
        self._maybe_hang()
        pause = self.batch_delay_s + self.delay_s * len(requests)
        if pause:
            time.sleep(pause)
        results = [self._one(r) for r in requests]
        self.requests_done += len(requests)
        return results
