"""Evaluation backends: what runs inside an evaluator actor (or in-process).

A backend turns a batch of :class:`~drllm.types.EvalRequest` (example, path) into graded
:class:`~drllm.types.Evaluation` objects. The actor, the in-process transport and the driver
know backends only through :class:`Evaluator` and the picklable :class:`EvaluatorSpec` (the
backend class and its options; the class travels to the worker by reference), so the real
model-backed backend (:class:`~drllm.distributed.executor_backend.ExecutorEvaluator`) and the
dummy used by tests (:class:`drllm.testing.DummyEvaluator`) are interchangeable.

This module imports neither torch nor ray.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

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

    Subclasses build from keyword options with :meth:`from_options`, called inside the worker
    by :meth:`EvaluatorSpec.build` (the options travel to the actor, so they must be picklable).
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


@dataclass(frozen=True)
class EvaluatorSpec:
    """Which backend each worker builds, and with what options: a picklable factory.

    Attributes:
        backend: the :class:`Evaluator` subclass (pickled by reference: the worker imports
            its module), e.g. ``ExecutorEvaluator`` or ``drllm.testing.DummyEvaluator``.
        options: keyword arguments of the backend's :meth:`Evaluator.from_options`.
    """

    backend: type[Evaluator]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.backend, type) and issubclass(self.backend, Evaluator)):
            raise ValueError(
                f"EvaluatorSpec.backend must be an Evaluator subclass (e.g. ExecutorEvaluator, "
                f"drllm.testing.DummyEvaluator), got {self.backend!r}"
            )
        object.__setattr__(self, "options", dict(self.options))

    def build(self, context: EvaluatorContext = EvaluatorContext()) -> Evaluator:
        """Instantiate the backend (call inside the worker that will use it)."""
        return self.backend.from_options(context, **self.options)

    def __repr__(self) -> str:
        return f"EvaluatorSpec({self.backend.__name__}, {dict(self.options)!r})"


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
