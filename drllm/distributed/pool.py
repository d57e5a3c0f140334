"""Dispatching evaluation requests to workers: bounded in-flight calls, requeue, retries.

:class:`EvaluationPool` is what the driver talks to. It keeps a queue of requests, sends them
to workers in calls of at most ``max_batch_size`` requests with at most
``max_in_flight_per_worker`` calls outstanding per worker, and handles faults. Queued requests
are spread evenly over idle workers; a worker that is already busy only gets full batches (a
partial batch would wait behind the running one anyway, and is better merged with the requests
that arrive meanwhile). Faults:

* a worker that dies during a call (a crashed or killed actor) has that call's requests
  requeued at the front of the queue for a restarted or surviving worker;
* a request whose evaluation raised inside the backend is retried up to
  ``max_request_retries`` times, then answered with a **failed** evaluation (``failed=True``,
  the error as reason; counted) -- a failure, not a reward of 0;
* when every worker is gone for good, :class:`PoolExhaustedError` stops the run.

Workers sit behind a :class:`Transport`: :class:`~drllm.distributed.local_transport.LocalTransport` runs
backends in this process (unit tests, debugging); :class:`~drllm.distributed.ray_transport.RayTransport`
runs them in Ray actors. Imports neither torch nor ray.
"""

from __future__ import annotations

import abc
import itertools
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Optional, Sequence

from drllm.distributed.config import PoolConfig
from drllm.distributed.evaluator import EvalError, EvaluatorInfo, Outcome
from drllm.distributed.metrics import SearchMetrics
from drllm.types import EvalRequest, EvalResult, Evaluation

logger = logging.getLogger(__name__)

ERROR_REASON_PREFIX = "evaluation error: "


class PoolExhaustedError(RuntimeError):
    """Every worker of the pool died and none can be restarted."""


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
    """Runs calls (batches of requests) on a fixed set of workers."""

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


@dataclass
class PoolStats:
    """Counters of an :class:`EvaluationPool` (mutable; read them, do not write them).

    Attributes:
        calls: worker calls answered.
        requests_answered: requests answered with an evaluation (retried ones counted once).
        failed: requests answered with reward 0 after exhausting their retries.
        retries: request re-sends after a backend error.
        requeued: request re-sends after their worker died.
        lost_calls: calls whose worker died before answering (their requests were requeued).
        workers_gone: workers given up for good.
        batch_sizes: histogram of requests per call, ``{size: calls}``.
        max_in_flight_calls: most calls outstanding on one worker at any time.
    """

    calls: int = 0
    requests_answered: int = 0
    failed: int = 0
    retries: int = 0
    requeued: int = 0
    lost_calls: int = 0
    workers_gone: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    max_in_flight_calls: int = 0

    @property
    def mean_batch_size(self) -> float:
        total = sum(self.batch_sizes.values())
        return sum(k * v for k, v in self.batch_sizes.items()) / total if total else 0.0


@dataclass
class _Pending:
    request: EvalRequest
    errors: int = 0
    deaths: int = 0
    last_error: str = ""


class EvaluationPool:
    """Queue, dispatch and fault handling over a :class:`Transport` (see module docstring).

    Args:
        transport: the workers.
        max_batch_size: requests per call at most.
        max_in_flight_per_worker: calls outstanding per worker at most.
        max_request_retries: re-sends of a request after backend errors (and after worker
            deaths while evaluating it) before it is answered with reward 0.
        metrics: optional metrics sink (in-flight gauge, call latency, errors, requeues).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        max_batch_size: int = PoolConfig.max_batch_size,
        max_in_flight_per_worker: int = PoolConfig.max_in_flight_per_actor,
        max_request_retries: int = PoolConfig.max_request_retries,
        metrics: Optional[SearchMetrics] = None,
    ) -> None:
        if max_batch_size < 1 or max_in_flight_per_worker < 1 or max_request_retries < 0:
            raise ValueError(
                "need max_batch_size >= 1, max_in_flight_per_worker >= 1, "
                f"max_request_retries >= 0; got {max_batch_size}, {max_in_flight_per_worker}, "
                f"{max_request_retries}"
            )
        self.transport = transport
        self.max_batch_size = int(max_batch_size)
        self.max_in_flight_per_worker = int(max_in_flight_per_worker)
        self.max_request_retries = int(max_request_retries)
        self.metrics = metrics
        self.stats = PoolStats()
        self.info: Optional[EvaluatorInfo] = None
        self._queue: deque[_Pending] = deque()
        self._calls: dict[int, tuple[int, list[_Pending]]] = {}
        self._worker_calls: list[int] = []
        self._alive: list[bool] = []
        self._ids = itertools.count()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EvaluatorInfo:
        """Start the workers; returns what they evaluate with (model id, L, device)."""
        self.info = self.transport.start()
        n = self.transport.num_workers
        self._worker_calls = [0] * n
        self._alive = [True] * n
        logger.info("evaluation pool: %d workers, %s (L=%d) on %s", n, self.info.model_id,
                    self.info.num_layers, self.info.device)
        return self.info

    def close(self) -> None:
        self.transport.shutdown()

    def __enter__(self) -> "EvaluationPool":
        if self.info is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state

    @property
    def workers_alive(self) -> int:
        return sum(self._alive)

    @property
    def queued(self) -> int:
        """Requests waiting to be sent."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return sum(len(batch) for _, batch in self._calls.values())

    @property
    def capacity(self) -> int:
        """Requests the live workers can hold in flight: workers x calls x batch size."""
        return self.workers_alive * self.max_in_flight_per_worker * self.max_batch_size

    @property
    def wants_more(self) -> bool:
        """Whether queued work is below what the workers could take right now."""
        return self.queued + self.in_flight < self.capacity

    @property
    def idle(self) -> bool:
        return not self._queue and not self._calls

    @property
    def calls_per_worker(self) -> tuple[int, ...]:
        """Calls outstanding on each worker."""
        return tuple(self._worker_calls)

    # ------------------------------------------------------------------ submitting

    def submit(self, requests: Sequence[EvalRequest]) -> None:
        """Queue requests (sent by :meth:`dispatch` / :meth:`wait`)."""
        self._queue.extend(_Pending(r) for r in requests)

    def cancel(self, example_id: str) -> int:
        """Drop queued (not yet sent) requests of ``example_id``; how many were dropped."""
        before = len(self._queue)
        self._queue = deque(p for p in self._queue if p.request.example_id != example_id)
        return before - len(self._queue)

    def _free_workers(self) -> list[int]:
        free = [w for w in range(len(self._alive))
                if self._alive[w] and self._worker_calls[w] < self.max_in_flight_per_worker]
        return sorted(free, key=lambda w: (self._worker_calls[w], w))

    def dispatch(self) -> int:
        """Send queued requests to free workers; the number of calls made."""
        if self.info is None:
            raise RuntimeError("EvaluationPool.start() must be called before dispatching")
        calls = 0
        while self._queue:
            free = self._free_workers()
            if not free:
                break
            idle = [w for w in free if self._worker_calls[w] == 0]
            if idle:  # spread what is queued evenly over the idle workers
                worker = idle[0]
                size = min(self.max_batch_size, math.ceil(len(self._queue) / len(idle)))
            elif len(self._queue) >= self.max_batch_size:  # a busy worker gets full batches
                worker, size = free[0], self.max_batch_size
            else:  # hold partial batches until a worker is idle: they merge with later work
                break
            batch = [self._queue.popleft() for _ in range(size)]
            call_id = next(self._ids)
            self._calls[call_id] = (worker, batch)
            self._worker_calls[worker] += 1
            self.stats.max_in_flight_calls = max(self.stats.max_in_flight_calls,
                                                 self._worker_calls[worker])
            self.transport.call(worker, call_id, tuple(p.request for p in batch))
            calls += 1
        if calls and self.metrics is not None:
            self.metrics.in_flight(self.in_flight)
        return calls

    # ------------------------------------------------------------------ collecting

    def wait(self, timeout_s: float) -> list[EvalResult]:
        """Dispatch, then wait up to ``timeout_s`` for answers; the finished results.

        Requests that failed for good come back as failed evaluations (``failed=True``) whose
        reason starts with :data:`ERROR_REASON_PREFIX`. Requeued and retried requests are sent again.

        Raises:
            PoolExhaustedError: every worker is gone and requests remain.
        """
        self.dispatch()
        self._check_alive()
        if not self._calls:
            return []
        results: list[EvalResult] = []
        for done in self.transport.wait(timeout_s):
            results.extend(self._handle(done))
        self._check_alive()
        self.dispatch()
        if self.metrics is not None:
            self.metrics.in_flight(self.in_flight)
        return results

    def _check_alive(self) -> None:
        if self.workers_alive == 0 and (self._queue or self._calls):
            raise PoolExhaustedError(
                f"all {len(self._alive)} evaluator workers died and cannot be restarted "
                f"({len(self._queue) + self.in_flight} requests unanswered); check the actor "
                "logs (out of memory? a crashing model?) or raise max_restarts"
            )

    def _handle(self, done: CallDone) -> list[EvalResult]:
        worker, batch = self._calls.pop(done.call_id)
        assert worker == done.worker, (worker, done.worker)
        self._worker_calls[worker] -= 1
        if done.worker_lost or done.worker_gone:
            return self._requeue_lost(worker, batch, done.worker_gone)
        self.stats.calls += 1
        self.stats.batch_sizes[len(batch)] += 1
        if self.metrics is not None:
            self.metrics.call_latency(done.seconds)
        outcomes = done.outcomes
        if outcomes is None:
            outcomes = tuple(EvalError(done.error or "call failed") for _ in batch)
        assert len(outcomes) == len(batch), (len(outcomes), len(batch))
        results: list[EvalResult] = []
        retry: list[_Pending] = []
        for pending, outcome in zip(batch, outcomes):
            if isinstance(outcome, EvalError):
                pending.errors += 1
                pending.last_error = outcome.message
                if pending.errors <= self.max_request_retries:
                    self.stats.retries += 1
                    retry.append(pending)
                    continue
                results.append(self._give_up(pending))
            else:
                self.stats.requests_answered += 1
                results.append(EvalResult(pending.request.example_id, pending.request.path,
                                          outcome))
        self._queue.extend(retry)
        return results

    def _requeue_lost(self, worker: int, batch: list[_Pending], gone: bool) -> list[EvalResult]:
        self.stats.lost_calls += 1
        if gone and self._alive[worker]:
            self._alive[worker] = False
            self.stats.workers_gone += 1
            logger.error("evaluator worker %d is gone for good (%d left)", worker,
                         self.workers_alive)
        else:
            logger.warning("evaluator worker %d died; requeueing %d requests", worker, len(batch))
        results, requeue = [], []
        for pending in batch:
            pending.deaths += 1
            if pending.deaths > self.max_request_retries + 1:
                pending.last_error = f"worker died {pending.deaths} times while evaluating it"
                results.append(self._give_up(pending))
            else:
                requeue.append(pending)
        self.stats.requeued += len(requeue)
        if self.metrics is not None:
            self.metrics.requeued(len(requeue))
        self._queue.extendleft(reversed(requeue))
        return results

    def _give_up(self, pending: _Pending) -> EvalResult:
        self.stats.failed += 1
        if self.metrics is not None:
            self.metrics.evaluation_errors(1)
        req = pending.request
        logger.error("giving up on %s path %s: %s", req.example_id, req.path, pending.last_error)
        evaluation = Evaluation(reward=0.0, reason=ERROR_REASON_PREFIX + pending.last_error,
                                failed=True)
        return EvalResult(req.example_id, req.path, evaluation)


def is_error_result(result: EvalResult) -> bool:
    """Whether a result stands for a request that failed for good (not a reward)."""
    return result.evaluation.failed
