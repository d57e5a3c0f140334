"""The worker side of the evaluation pool: :class:`Transport` and its :class:`CallDone` reports.

A transport runs calls (batches of :class:`~drllm.types.EvalRequest`) on workers and reports
their answers; :class:`~drllm.distributed.pool.EvaluationPool` decides what to send where.
Implementations: :class:`~drllm.distributed.local_transport.LocalTransport` (in process) and
:class:`~drllm.distributed.ray_transport.RayTransport` (Ray actors). Imports neither torch nor ray.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional, Sequence

from drllm.distributed.evaluator import EvaluatorInfo, Outcome
from drllm.types import EvalRequest


@dataclass(frozen=True)
class CallDone:
    """A finished worker call, as reported by a :class:`Transport`.

    Attributes:
        call_id: the id given to :meth:`Transport.call`.
        worker: worker index.
        outcomes: one :class:`Evaluation` / :class:`EvalError` per request, or ``None`` when
            the call failed as a whole.
        error: why the call failed as a whole (``outcomes is None``).
        worker_lost: the worker died during the call; its requests were not answered.
        worker_gone: the worker will not come back (restarts exhausted).
        seconds: wall time from sending the call to its answer.
    """

    call_id: int
    worker: int
    outcomes: Optional[tuple[Outcome, ...]] = None
    error: str = ""
    worker_lost: bool = False
    worker_gone: bool = False
    seconds: float = 0.0


class Transport(abc.ABC):
    """Runs calls (batches of requests) on workers, whose number may grow."""

    @property
    @abc.abstractmethod
    def num_workers(self) -> int:
        """Workers, alive or not (indices ``0 .. num_workers - 1``)."""

    @abc.abstractmethod
    def start(self) -> EvaluatorInfo:
        """Create the workers, wait until they are ready; the model they all evaluate with."""

    @abc.abstractmethod
    def call(self, worker: int, call_id: int, requests: tuple[EvalRequest, ...]) -> None:
        """Send ``requests`` to ``worker`` without waiting; reported later by :meth:`wait`."""

    @abc.abstractmethod
    def wait(self, timeout_s: float) -> list[CallDone]:
        """Block until at least one call finished or ``timeout_s`` passed; the finished calls."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop every worker (idempotent)."""

    def ready_workers(self) -> Sequence[int]:
        """Workers that can take calls now (default: all of them)."""
        return range(self.num_workers)

    @property
    def pending_workers(self) -> int:
        """Workers requested but not ready yet (being placed, loading, restarting)."""
        return 0

    def maintain(self) -> None:
        """Periodic upkeep: notice placed workers, add workers for new nodes, enforce
        deadlines (raising when one is missed). Called by the pool between waits."""

    def kill(self, worker: int) -> None:
        """Kill a hung worker so that it restarts; its outstanding calls are reported lost."""
        raise NotImplementedError(f"{type(self).__name__} cannot kill a hung worker")


