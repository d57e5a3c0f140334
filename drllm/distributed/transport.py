"""The worker side of the evaluation pool: :class:`Transport` and what it reports.

A transport streams requests to workers and their outcomes back, one request at a time:
:meth:`Transport.send` hands a worker requests (each with the pool's request id) without
waiting; they join the worker's running evaluator (:meth:`~drllm.distributed.evaluator.
Evaluator.submit`) and :meth:`Transport.wait` reports each one as soon as it is done
(:class:`Answered`), or a worker lost with everything it held (:class:`WorkerLost`).
:class:`~drllm.distributed.pool.EvaluationPool` decides what to send where. Implementations:
:class:`~drllm.distributed.local_transport.LocalTransport` (in process) and
:class:`~drllm.distributed.ray_transport.RayTransport` (Ray actors). Imports neither torch nor
ray.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence, Union

from drllm.distributed.evaluator import EvaluatorInfo, Outcome
from drllm.types import EvalRequest


@dataclass(frozen=True)
class Answered:
    """A request a worker finished.

    Attributes:
        worker: worker index.
        request_id: the id given to :meth:`Transport.send`.
        outcome: its :class:`~drllm.types.Evaluation`, or an
            :class:`~drllm.distributed.evaluator.EvalError` (its evaluation raised, or the
            worker failed to take it).
    """

    worker: int
    request_id: int
    outcome: Outcome


@dataclass(frozen=True)
class WorkerLost:
    """A worker died (or was killed): every request it held and had not answered is lost.

    Attributes:
        worker: worker index.
        gone: the worker will not come back (restarts exhausted).
    """

    worker: int
    gone: bool = False


Report = Union[Answered, WorkerLost]
"""What :meth:`Transport.wait` reports."""

Sent = tuple[int, EvalRequest]
"""A request as sent to a worker: (the pool's request id, the request)."""


class Transport(abc.ABC):
    """Streams requests to workers (whose number may grow) and their outcomes back."""

    @property
    @abc.abstractmethod
    def num_workers(self) -> int:
        """Workers, alive or not (indices ``0 .. num_workers - 1``)."""

    @abc.abstractmethod
    def start(self) -> EvaluatorInfo:
        """Create the workers, wait until they are ready; the model they all evaluate with."""

    @abc.abstractmethod
    def send(self, worker: int, requests: Sequence[Sent]) -> None:
        """Hand ``requests`` to ``worker`` without waiting: they join what it is running, and
        :meth:`wait` reports each as it finishes."""

    @abc.abstractmethod
    def wait(self, timeout_s: float) -> list[Report]:
        """Block until something is reported or ``timeout_s`` passed; the reports."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop every worker (idempotent)."""

    def ready_workers(self) -> Sequence[int]:
        """Workers that can take requests now (default: all of them)."""
        return range(self.num_workers)

    @property
    def pending_workers(self) -> int:
        """Workers requested but not ready yet (being placed, loading, restarting)."""
        return 0

    def maintain(self) -> None:
        """Periodic upkeep: notice placed workers, add workers for new nodes, enforce
        deadlines (raising when one is missed). Called by the pool between waits."""

    def kill(self, worker: int) -> None:
        """Kill a hung worker so that it restarts; it is reported lost (:class:`WorkerLost`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot kill a hung worker")
