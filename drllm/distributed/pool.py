"""Dispatching evaluation requests to workers: bounded in-flight calls, requeue, retries.

:class:`EvaluationPool` is what the driver talks to. It keeps a queue of requests, sends them
to workers in calls of at most ``max_batch_size`` requests with at most
``max_in_flight_per_worker`` calls outstanding per worker, and handles faults. Queued requests
are spread evenly over idle workers; a worker that is already busy only gets full batches (a
partial batch would wait behind the running one anyway, and is better merged with the requests
that arrive meanwhile). Faults:

* a worker that dies during a call (a crashed or killed actor) has that call's requests
  requeued at the front of the queue for a restarted or surviving worker;
* a request whose evaluation raised inside the evaluator is retried up to
  ``max_request_retries`` times, then answered with a **failed** evaluation (``failed=True``,
  the error as reason; counted) -- a failure, not a reward of 0;
* a call unanswered after ``call_timeout_s`` is a hung worker: the worker is killed
  (:meth:`Transport.kill`; Ray restarts it) and the call's requests are requeued;
* when every worker is gone for good (and none is still being placed),
  :class:`PoolExhaustedError` stops the run.

The pool is **elastic**: workers are used as soon as the transport reports them ready
(:meth:`Transport.ready_workers`), and the transport may add workers while the run goes on
(:meth:`Transport.maintain`: an autoscaler adding nodes). Routing is **sticky** (see
:mod:`drllm.distributed.routing`): a question's requests go to the worker that last served it.

Workers sit behind a :class:`Transport`: :class:`~drllm.distributed.local_transport.LocalTransport` runs
evaluators in this process (unit tests, debugging); :class:`~drllm.distributed.ray_transport.RayTransport`
runs them in Ray actors. Imports neither torch nor ray.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional, Sequence

from drllm.distributed.config import PoolConfig
from drllm.distributed.evaluator import EvalError, EvaluatorInfo, EvaluatorSpec, Outcome
from drllm.distributed.metrics import SearchMetrics
from drllm.distributed.routing import Queued, plan_dispatch
from drllm.distributed.transport import CallDone, Transport
from drllm.types import EvalRequest, EvalResult, Evaluation

logger = logging.getLogger(__name__)

ERROR_REASON_PREFIX = "evaluation error: "


class PoolExhaustedError(RuntimeError):
    """Every worker of the pool died and none can be restarted."""


@dataclass
class PoolStats:
    """Counters of an :class:`EvaluationPool` (mutable; read them, do not write them).

    Attributes:
        calls: worker calls answered.
        requests_answered: requests answered with an evaluation (retried ones counted once).
        failed: requests answered with reward 0 after exhausting their retries.
        retries: request re-sends after an evaluator error.
        requeued: request re-sends after their worker died.
        lost_calls: calls whose worker died before answering (their requests were requeued).
        workers_gone: workers given up for good.
        timeouts: calls given up after ``call_timeout_s`` (their worker was killed).
        sticky_hits: requests sent to the worker that last served their question.
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
    timeouts: int = 0
    sticky_hits: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    max_in_flight_calls: int = 0

    @property
    def mean_batch_size(self) -> float:
        total = sum(self.batch_sizes.values())
        return sum(k * v for k, v in self.batch_sizes.items()) / total if total else 0.0


@dataclass
class _Pending:
    request: EvalRequest
    queued_at: float = 0.0
    errors: int = 0
    deaths: int = 0
    last_error: str = ""


@dataclass
class _Call:
    worker: int
    batch: list[_Pending]
    sent_at: float


class EvaluationPool:
    """Queue, dispatch and fault handling over a :class:`Transport` (see module docstring).

    Args:
        transport: the workers.
        max_batch_size: requests per call at most.
        max_in_flight_per_worker: calls outstanding per worker at most.
        max_request_retries: re-sends of a request after evaluator errors (and after worker
            deaths while evaluating it) before it is answered with reward 0.
        metrics: optional metrics sink (in-flight gauge, call latency, errors, requeues).
        call_timeout_s: a call unanswered this long is given up and its worker killed
            (``None``: never).
        sticky_wait_s: how long a request waits for the worker that last served its question
            (``None``: no sticky routing).
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        max_batch_size: int = PoolConfig.max_batch_size,
        max_in_flight_per_worker: int = PoolConfig.max_in_flight_per_actor,
        max_request_retries: int = PoolConfig.max_request_retries,
        metrics: Optional[SearchMetrics] = None,
        call_timeout_s: Optional[float] = None,
        sticky_wait_s: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
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
        self.call_timeout_s = call_timeout_s
        self.sticky_wait_s = sticky_wait_s
        self._clock = clock
        self.stats = PoolStats()
        self.info: Optional[EvaluatorInfo] = None
        self._queue: deque[_Pending] = deque()
        self._calls: dict[int, _Call] = {}
        self._worker_calls: dict[int, int] = {}
        self._gone: set[int] = set()
        self._home: dict[Hashable, int] = {}
        self._ids = itertools.count()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, spec: EvaluatorSpec, config: PoolConfig = PoolConfig(), *,
               in_process: bool = False, enable_metrics: bool = True,
               ready_timeout_s: float = 1800.0) -> "EvaluationPool":
        """The one way to get a started pool of ``spec`` evaluators.

        Args:
            spec: the evaluator every worker builds.
            config: workers, resources, batching, fault tolerance.
            in_process: run the workers in this process, one call at a time, without Ray
                (tests, debugging, ``ray.mode=in_process``); otherwise start Ray actors on the
                connected cluster.
            enable_metrics: Ray actors: record the pool's metrics (tagged with the model id
                the actors report); the actors record theirs in any case.
            ready_timeout_s: Ray actors: how long to wait for them to load the model (s).

        Returns:
            A started pool; close it (or use ``with``) to stop its workers.
        """
        if in_process:
            from drllm.distributed.local_transport import LocalTransport

            pool = cls(LocalTransport(spec, config.num_actors or 1, config.max_restarts),
                       max_batch_size=config.max_batch_size,
                       max_in_flight_per_worker=config.max_in_flight_per_actor,
                       max_request_retries=config.max_request_retries)
            pool.start()
            return pool
        from drllm.distributed.ray_transport import RayTransport

        pool = cls(RayTransport(spec, config, ready_timeout_s=ready_timeout_s),
                   max_batch_size=config.max_batch_size,
                   max_in_flight_per_worker=config.max_in_flight_per_actor,
                   max_request_retries=config.max_request_retries,
                   call_timeout_s=config.call_timeout_s,
                   sticky_wait_s=config.sticky_wait_s if config.sticky else None)
        info = pool.start()
        if enable_metrics:
            pool.metrics = SearchMetrics(info.model_id)
        return pool

    def start(self) -> EvaluatorInfo:
        """Start the workers; returns what they evaluate with (model id, L, device)."""
        self.info = self.transport.start()
        logger.info("evaluation pool: %d workers ready (%d pending), %s (L=%d) on %s",
                    len(self._ready()), self.transport.pending_workers, self.info.model_id,
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

    def _ready(self) -> list[int]:
        return [w for w in self.transport.ready_workers() if w not in self._gone]

    @property
    def workers_alive(self) -> int:
        """Workers that can take calls now."""
        return len(self._ready())

    @property
    def queued(self) -> int:
        """Requests waiting to be sent."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return sum(len(call.batch) for call in self._calls.values())

    @property
    def capacity(self) -> int:
        """Requests the live workers can hold in flight: workers x calls x batch size."""
        return max(1, self.workers_alive) * self.max_in_flight_per_worker * self.max_batch_size

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
        return tuple(self._worker_calls.get(w, 0) for w in range(self.transport.num_workers))

    # ------------------------------------------------------------------ submitting

    def submit(self, requests: Sequence[EvalRequest]) -> None:
        """Queue requests (sent by :meth:`dispatch` / :meth:`wait`)."""
        now = self._clock()
        self._queue.extend(_Pending(r, queued_at=now) for r in requests)

    def cancel(self, example_id: str) -> int:
        """Drop queued (not yet sent) requests of ``example_id``; how many were dropped."""
        before = len(self._queue)
        self._queue = deque(p for p in self._queue if p.request.example_id != example_id)
        self._home.pop(example_id, None)
        return before - len(self._queue)

    def forget(self, example_id: str) -> None:
        """Drop what the pool remembers of a finished question that has nothing queued (its
        home worker), without scanning the queue as :meth:`cancel` does."""
        self._home.pop(example_id, None)

    def dispatch(self) -> int:
        """Send queued requests to free workers; the number of calls made."""
        if self.info is None:
            raise RuntimeError("EvaluationPool.start() must be called before dispatching")
        if not self._queue:
            return 0
        ready = self._ready()
        free = {w: self._worker_calls.get(w, 0) for w in ready
                if self._worker_calls.get(w, 0) < self.max_in_flight_per_worker}
        if not free:
            return 0
        now = self._clock()
        queue = [Queued(p, p.request.example_id, now - p.queued_at) for p in self._queue]
        plan, rest = plan_dispatch(queue, free, self._home, frozenset(ready),
                                   max_batch_size=self.max_batch_size,
                                   sticky_wait_s=self.sticky_wait_s)
        self._queue = deque(rest)
        for worker, batch in plan:
            self._send(worker, batch, now)
        if plan and self.metrics is not None:
            self.metrics.in_flight(self.in_flight)
        return len(plan)

    def _send(self, worker: int, batch: list[_Pending], now: float) -> None:
        call_id = next(self._ids)
        self._calls[call_id] = _Call(worker, batch, now)
        self._worker_calls[worker] = self._worker_calls.get(worker, 0) + 1
        self.stats.max_in_flight_calls = max(self.stats.max_in_flight_calls,
                                             self._worker_calls[worker])
        for pending in batch:
            key = pending.request.example_id
            if self._home.get(key) == worker:
                self.stats.sticky_hits += 1
            self._home[key] = worker
        self.transport.call(worker, call_id, tuple(p.request for p in batch))

    # ------------------------------------------------------------------ collecting

    def wait(self, timeout_s: float) -> list[EvalResult]:
        """Dispatch, then wait up to ``timeout_s`` for answers; the finished results.

        Requests that failed for good come back as failed evaluations (``failed=True``) whose
        reason starts with :data:`ERROR_REASON_PREFIX`. Requeued and retried requests are sent again.

        Raises:
            PoolExhaustedError: every worker is gone and requests remain.
        """
        self.transport.maintain()
        self.dispatch()
        self._check_alive()
        if not self._calls and not self._queue:
            return []
        results: list[EvalResult] = []
        for done in self.transport.wait(self._wait_budget(timeout_s)):
            results.extend(self._handle(done))
        results.extend(self._expire_hung())
        self.transport.maintain()
        self._check_alive()
        self.dispatch()
        if self.metrics is not None:
            self.metrics.in_flight(self.in_flight)
        return results

    def _wait_budget(self, timeout_s: float) -> float:
        """``timeout_s``, shortened so that a hung call is noticed on time."""
        if self.call_timeout_s is None or not self._calls:
            return timeout_s
        oldest = min(call.sent_at for call in self._calls.values())
        due = oldest + self.call_timeout_s - self._clock()
        return max(0.0, min(timeout_s, due))

    def _expire_hung(self) -> list[EvalResult]:
        """Give up calls older than ``call_timeout_s``: kill their worker, requeue them."""
        if self.call_timeout_s is None:
            return []
        now = self._clock()
        hung = [cid for cid, call in self._calls.items()
                if now - call.sent_at >= self.call_timeout_s]
        results: list[EvalResult] = []
        for call_id in hung:
            call = self._calls.pop(call_id, None)
            if call is None:
                continue
            self._worker_calls[call.worker] -= 1
            self.stats.timeouts += 1
            logger.error("evaluator worker %d did not answer a call of %d requests within "
                         "%.0f s (pool.call_timeout_s): killing it, requeueing the requests",
                         call.worker, len(call.batch), self.call_timeout_s)
            for pending in call.batch:
                pending.last_error = f"call timed out after {self.call_timeout_s:g} s"
                if self._home.get(pending.request.example_id) == call.worker:
                    del self._home[pending.request.example_id]
            results.extend(self._requeue_lost(call.worker, call.batch, gone=False))
            try:
                self.transport.kill(call.worker)
            except Exception:  # noqa: BLE001 - the worker may be dead already
                logger.warning("killing hung worker %d failed", call.worker, exc_info=True)
        return results

    def _check_alive(self) -> None:
        if self.workers_alive or self.transport.pending_workers or not (self._queue or self._calls):
            return
        raise PoolExhaustedError(
            f"all {self.transport.num_workers} evaluator workers died and cannot be restarted "
            f"({len(self._queue) + self.in_flight} requests unanswered); check the actor "
            "logs (out of memory? a crashing model?) or raise max_restarts"
        )

    def _handle(self, done: CallDone) -> list[EvalResult]:
        call = self._calls.pop(done.call_id, None)
        if call is None:  # given up already (timed out); its requests were requeued
            return []
        worker, batch = call.worker, call.batch
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
        if gone and worker not in self._gone:
            self._gone.add(worker)
            self.stats.workers_gone += 1
            logger.error("evaluator worker %d is gone for good (%d left, %d pending)", worker,
                         self.workers_alive, self.transport.pending_workers)
        else:
            logger.warning("evaluator worker %d lost a call; requeueing %d requests", worker,
                           len(batch))
        results, requeue = [], []
        for pending in batch:
            pending.deaths += 1
            if pending.deaths > self.max_request_retries + 1:
                pending.last_error = (f"worker died {pending.deaths} times while evaluating it"
                                      + (f" ({pending.last_error})" if pending.last_error else ""))
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
