"""Evaluation backends: what runs inside an evaluator actor (or in-process).

A backend turns a batch of :class:`~drllm.types.EvalRequest` (example, path) into graded
:class:`~drllm.types.Evaluation` objects. The actor, the in-process transport and the driver
know backends only through :class:`Evaluator` and the :data:`EVALUATORS` registry, so the real
model-backed backend (``"executor"``, :mod:`drllm.distributed.executor_backend`) and the
:class:`DummyEvaluator` used by tests are interchangeable (lm-evaluation-harness style: a base
class, a registry, a dummy implementation).

This module imports neither torch nor ray.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, Union

from drllm.paths import LayerPath
from drllm.registry import Registry
from drllm.types import EvalRequest, Evaluation

logger = logging.getLogger(__name__)


class WorkerLostError(RuntimeError):
    """The worker holding a backend died. In-process stand-in for a dead Ray actor: the
    transport treats it like a crashed actor (requeue its requests, restart the worker)."""


class InjectedFault(RuntimeError):
    """An error raised on purpose by :class:`DummyEvaluator` fault injection."""


@dataclass(frozen=True)
class EvaluatorContext:
    """Where a backend is being built.

    Attributes:
        worker_index: index of the actor (or in-process worker) in its pool.
        restarted: this worker replaces one that died (Ray restarted the actor).
        in_process: the backend runs inside the driver process (no Ray actor); a backend
            must then never kill the process.
        num_threads: torch threads the worker may use (``None``: leave torch's default).
        device: device the worker was given (``"cuda"`` when the actor holds a GPU), or
            ``None`` to keep the backend's own setting.
    """

    worker_index: int = 0
    restarted: bool = False
    in_process: bool = False
    num_threads: Optional[int] = None
    device: Optional[str] = None


@dataclass(frozen=True)
class EvaluatorInfo:
    """What a backend evaluates with; the driver sizes its trees from ``num_layers``.

    Attributes:
        backend: registry name of the backend.
        model_id: the frozen model (HF id, local dir, GGUF file name, or ``"dummy"``).
        num_layers: L, decoder blocks of the model.
        device: where the model runs (``"cpu"``, ``"cuda:0"``, ...).
    """

    backend: str
    model_id: str
    num_layers: int
    device: str


@dataclass(frozen=True)
class EvalError:
    """A request whose evaluation raised inside the backend (not a dead worker).

    Attributes:
        message: ``"ExceptionType: message"`` of the error.
    """

    message: str


Outcome = Union[Evaluation, EvalError]
"""Per-request result of an actor call, aligned with the call's requests."""


class Evaluator(abc.ABC):
    """A backend that generates along paths and grades the answers.

    Subclasses register in :data:`EVALUATORS` and build from keyword options with
    :meth:`from_options` (the options travel to the actor, so they must be picklable).
    """

    name: ClassVar[str] = ""

    @classmethod
    def from_options(cls, context: EvaluatorContext, **options: Any) -> "Evaluator":
        """Build the backend inside its worker from the spec's options."""
        return cls(**options)

    @property
    @abc.abstractmethod
    def info(self) -> EvaluatorInfo:
        """Model id, L and device of this backend."""

    @abc.abstractmethod
    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        """Evaluate a batch; one :class:`Evaluation` per request, in order.

        May raise; :func:`evaluate_isolating_errors` then attributes the error to requests.
        """

    def close(self) -> None:
        """Release resources (models, threads). Default: nothing to release."""


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator backend")


@dataclass(frozen=True)
class EvaluatorSpec:
    """Which backend each worker builds, and with what options (picklable values).

    Attributes:
        name: registry name (``"executor"``, ``"dummy"``).
        options: keyword arguments of the backend's :meth:`Evaluator.from_options`.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in EVALUATORS:
            raise ValueError(
                f"unknown evaluator backend {self.name!r}; known: {', '.join(EVALUATORS.names())}"
            )
        object.__setattr__(self, "options", dict(self.options))

    def build(self, context: EvaluatorContext = EvaluatorContext()) -> Evaluator:
        """Instantiate the backend (call inside the worker that will use it)."""
        return EVALUATORS.get(self.name).from_options(context, **self.options)


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def evaluate_isolating_errors(
    backend: Evaluator, requests: Sequence[EvalRequest]
) -> list[Outcome]:
    """Evaluate a batch; if it raises, rerun each request alone to find the failing ones.

    Returns one :class:`Evaluation` or :class:`EvalError` per request, in order.
    :class:`WorkerLostError` propagates: it means the worker is gone, not a bad request.
    """
    try:
        results = backend.evaluate(requests)
    except WorkerLostError:
        raise
    except Exception as err:  # noqa: BLE001 - a backend error must never stop the run
        if len(requests) == 1:
            logger.warning("evaluation of %s failed: %s", requests[0].example_id, _error_text(err))
            return [EvalError(_error_text(err))]
        logger.warning(
            "batch of %d failed (%s); evaluating its requests one by one",
            len(requests), _error_text(err),
        )
        return [evaluate_isolating_errors(backend, [r])[0] for r in requests]
    if len(results) != len(requests):
        raise RuntimeError(
            f"backend {type(backend).__name__} returned {len(results)} results for "
            f"{len(requests)} requests"
        )
    return list(results)


# ---------------------------------------------------------------------------- dummy backend


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


@EVALUATORS.register("dummy")
class DummyEvaluator(Evaluator):
    """A model-free backend for tests and dry runs, with delays and fault injection.

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

    def _one(self, request: EvalRequest) -> Evaluation:
        path = LayerPath(request.path)
        if len(path) != self.num_layers:
            raise ValueError(f"path {path} has {len(path)} blocks; the model has {self.num_layers}")
        if request.example_id in self.fail_example_ids:
            raise InjectedFault(f"injected failure for example {request.example_id}")
        if path.to_str() in self.fail_paths:
            raise InjectedFault(f"injected failure for path {path.to_str()}")
        if request.example_id in self.flaky_example_ids:
            key = f"{request.example_id}|{path.to_str()}"
            if key not in self._flaky_seen:
                self._flaky_seen.add(key)
                raise InjectedFault(f"injected flaky failure for example {request.example_id}")
        reward = float(self.reward_fn(request.example_id, path))
        return Evaluation(
            reward=reward,
            response=f"{request.example_id}:{path.to_str()}",
            layers_executed=path.cost * self.tokens_per_response,
            reason="dummy",
        )

    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        """Evaluate in order; sleeps ``batch_delay_s + delay_s * len(requests)`` first."""
        self._maybe_die()
        pause = self.batch_delay_s + self.delay_s * len(requests)
        if pause:
            time.sleep(pause)
        results = [self._one(r) for r in requests]
        self.requests_done += len(requests)
        return results
