"""Evaluators: what turns (example, path) requests into graded evaluations.

An :class:`Evaluator` turns :class:`~drllm.types.EvalRequest` (example, path) objects into
graded :class:`~drllm.types.Evaluation` objects, as a batch (:meth:`Evaluator.evaluate`) or
streamed (:meth:`Evaluator.submit` each request with a tag, :meth:`Evaluator.step` until its
outcome comes back); workers stream. It runs inside an evaluator actor (Ray) or in the driver
process (the in-process transport). Actors, the in-process transport and the driver know
evaluators only through :class:`Evaluator` and the picklable factory :class:`EvaluatorSpec`
(the evaluator class and its options; the class travels to the actor by reference), so the
model-backed :class:`~drllm.distributed.executor_evaluator.ExecutorEvaluator` and the test
double :class:`drllm.testing.DummyEvaluator` are interchangeable.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

from drllm.types import EvalRequest, Evaluation

logger = logging.getLogger(__name__)


class WorkerLostError(RuntimeError):
    """The worker holding an evaluator died. In-process stand-in for a dead Ray actor: the
    transport treats it like a crashed actor (requeue its requests, restart the worker)."""


@dataclass(frozen=True)
class EvaluatorContext:
    """Where an evaluator is being built.

    Attributes:
        worker_index: index of the actor (or in-process worker) in its pool.
        restarted: this worker replaces one that died (Ray restarted the actor).
        in_process: the evaluator runs inside the driver process (no Ray actor); an evaluator
            must then never kill the process.
        num_threads: torch threads the worker may use (``None``: leave torch's default).
        device: device the worker was given (``"cuda"`` when the actor holds a GPU), or
            ``None`` to keep the evaluator's own setting.
    """

    worker_index: int = 0
    restarted: bool = False
    in_process: bool = False
    num_threads: Optional[int] = None
    device: Optional[str] = None


@dataclass(frozen=True)
class EvaluatorInfo:
    """What an evaluator evaluates with; the driver sizes its trees from ``num_layers``.

    Attributes:
        evaluator: short name of the evaluator kind (e.g. ``"executor"``, ``"dummy"``).
        model_id: the frozen model (HF id, local dir, GGUF file name, or ``"dummy"``).
        num_layers: L, decoder blocks of the model.
        device: where the model runs (``"cpu"``, ``"cuda:0"``, ...).
    """

    evaluator: str
    model_id: str
    num_layers: int
    device: str


@dataclass(frozen=True)
class EvalError:
    """A request whose evaluation raised inside the evaluator (not a dead worker).

    Attributes:
        message: ``"ExceptionType: message"`` of the error.
    """

    message: str


Outcome = Union[Evaluation, EvalError]
"""What one request ends with: its evaluation, or the error its evaluation raised."""

Tagged = tuple[int, Outcome]
"""A finished streamed request: the tag it was submitted with, its outcome."""


class Evaluator(abc.ABC):
    """An evaluator that generates along paths and grades the answers.

    Subclasses build from keyword options with :meth:`from_options`, called inside the worker
    by :meth:`EvaluatorSpec.build` (the options travel to the actor, so they must be picklable).
    """

    name: ClassVar[str] = ""

    @classmethod
    def from_options(cls, context: EvaluatorContext, **options: Any) -> "Evaluator":
        """Build the evaluator inside its worker from the spec's options."""
        return cls(**options)

    @property
    @abc.abstractmethod
    def info(self) -> EvaluatorInfo:
        """Model id, L and device of this evaluator."""

    @abc.abstractmethod
    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        """Evaluate a batch; one :class:`Evaluation` per request, in order.

        May raise; :func:`evaluate_isolating_errors` then attributes the error to requests.
        """

    # Streaming: what workers use. A request submitted with a tag comes back from a later
    # :meth:`step` as ``(tag, outcome)`` once it is done, whatever else is in progress.

    def submit(self, tag: int, request: EvalRequest) -> None:
        """Queue ``request`` for streaming evaluation; :meth:`step` returns its outcome with
        ``tag``. Default: queued for the next :meth:`step`'s batch."""
        self.__dict__.setdefault("_stream_queue", []).append((tag, request))

    def step(self) -> list[Tagged]:
        """Advance the submitted requests; ``(tag, outcome)`` of each one finished meanwhile.

        Default: every request queued since the last step, evaluated as one batch
        (:func:`evaluate_isolating_errors`). Raises only :class:`WorkerLostError`: a failed
        request comes back as an :class:`EvalError`.
        """
        items = self.__dict__.get("_stream_queue")
        if not items:
            return []
        self._stream_queue: list[tuple[int, EvalRequest]] = []
        outcomes = evaluate_isolating_errors(self, [r for _, r in items])
        return [(tag, outcome) for (tag, _), outcome in zip(items, outcomes, strict=True)]

    @property
    def streaming(self) -> int:
        """Requests submitted and not yet returned by :meth:`step`."""
        return len(self.__dict__.get("_stream_queue", ()))

    def close(self) -> None:
        """Release resources (models, threads). Default: nothing to release."""


@dataclass(frozen=True)
class EvaluatorSpec:
    """Which evaluator each worker builds, and with what options: a picklable factory.

    Attributes:
        evaluator: the :class:`Evaluator` subclass (pickled by reference: the worker imports
            its module), e.g. ``ExecutorEvaluator`` or ``drllm.testing.DummyEvaluator``.
        options: keyword arguments of the evaluator's :meth:`Evaluator.from_options`.
    """

    evaluator: type[Evaluator]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.evaluator, type) and issubclass(self.evaluator, Evaluator)):
            raise ValueError(
                f"EvaluatorSpec.evaluator must be an Evaluator subclass (e.g. ExecutorEvaluator, "
                f"drllm.testing.DummyEvaluator), got {self.evaluator!r}"
            )
        object.__setattr__(self, "options", dict(self.options))

    def build(self, context: EvaluatorContext = EvaluatorContext()) -> Evaluator:
        """Instantiate the evaluator (call inside the worker that will use it)."""
        return self.evaluator.from_options(context, **self.options)

    def __repr__(self) -> str:
        return f"EvaluatorSpec({self.evaluator.__name__}, {dict(self.options)!r})"


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def evaluate_isolating_errors(
    evaluator: Evaluator, requests: Sequence[EvalRequest]
) -> list[Outcome]:
    """Evaluate a batch; if it raises, rerun each request alone to find the failing ones.

    Returns one :class:`Evaluation` or :class:`EvalError` per request, in order.
    :class:`WorkerLostError` propagates: it means the worker is gone, not a bad request.
    """
    try:
        results = evaluator.evaluate(requests)
    except WorkerLostError:
        raise
    except Exception as err:  # noqa: BLE001 - an evaluator error must never stop the run
        if len(requests) == 1:
            logger.warning("evaluation of %s failed: %s", requests[0].example_id, error_text(err))
            return [EvalError(error_text(err))]
        logger.warning(
            "batch of %d failed (%s); evaluating its requests one by one",
            len(requests), error_text(err),
        )
        return [evaluate_isolating_errors(evaluator, [r])[0] for r in requests]
    if len(results) != len(requests):
        raise RuntimeError(
            f"evaluator {type(evaluator).__name__} returned {len(results)} results for "
            f"{len(requests)} requests"
        )
    return list(results)
