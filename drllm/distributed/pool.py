"""Streaming evaluation requests to workers: bounded requests in flight, requeue, retries.

:class:`EvaluationPool` is what the driver talks to. It keeps a queue of requests and streams
them to workers: a worker holds at most ``max_in_flight_per_worker`` requests (sent, not yet
answered; in the worker they are the engine's waiting and running rows), and takes new ones as
soon as any of its requests is answered, one at a time, so the engine's budget stays full while
the driver's trees keep asking. Faults:

* a worker that dies (a crashed or killed actor) has every request it held requeued at the
  front of the queue for a restarted or surviving worker;
* a request whose evaluation raised inside the evaluator is retried up to
  ``max_request_retries`` times, then answered with a **failed** evaluation (``failed=True``,
  the error as reason; counted) -- a failure, not a reward of 0;
* a worker holding requests that answers none of them for ``call_timeout_s`` is hung: it is
  killed (:meth:`Transport.kill`; Ray restarts it) and its requests are requeued;
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
from drllm.distributed.evaluator import EvalError, EvaluatorInfo, EvaluatorSpec
from drllm.distributed.metrics import SearchMetrics
from drllm.distributed.routing import plan_dispatch
from drllm.distributed.transport import Answered, Transport, WorkerLost
from drllm.types import EvalRequest, EvalResult, Evaluation

logger = logging.getLogger(__name__)

ERROR_REASON_PREFIX = "evaluation error: "


class PoolExhaustedError(RuntimeError):
    """Every worker of the pool died and none can be restarted."""


@dataclass
class PoolStats:
    """Counters of an :class:`EvaluationPool` (mutable; read them, do not write them).

    Attributes:
        sends: sends to workers (each carries every request routed to that worker then).
        requests_answered: requests answered with an evaluation (retried ones counted once).
        failed: requests answered with reward 0 after exhausting their retries.
        retries: request re-sends after an evaluator error.
        requeued: request re-sends after their worker died.
        worker_losses: worker losses (deaths, kills) that lost requests, all of them requeued.
        workers_gone: workers given up for good.
        timeouts: workers killed for answering nothing within ``call_timeout_s``.
        sticky_hits: requests sent to the worker that last served their question.
        batch_sizes: histogram of requests per send, ``{size: sends}``.
        max_held: most requests one worker held at once.
    """

    sends: int = 0
    requests_answered: int = 0
    failed: int = 0
    retries: int = 0
    requeued: int = 0
    worker_losses: int = 0
    workers_gone: int = 0
    timeouts: int = 0
    sticky_hits: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    max_held: int = 0

    @property
    def mean_batch_size(self) -> float:
        """Mean requests per send."""
        total = sum(self.batch_sizes.values())
        return sum(k * v for k, v in self.batch_sizes.items()) / total if total else 0.0


@dataclass
class _Pending:
    request: EvalRequest
    errors: int = 0
    deaths: int = 0
    last_error: str = ""


@dataclass
class _Flight:
    worker: int
    pending: _Pending
    sent_at: float


class EvaluationPool:
    """Queue, streaming dispatch and fault handling over a :class:`Transport` (module docstring).

    Args:
        transport: the workers.
        max_in_flight_per_worker: requests a worker holds at most (sent, not yet answered).
        max_request_retries: re-sends of a request after evaluator errors (and after worker
            deaths while evaluating it) before it is answered with reward 0.
        metrics: optional metrics sink (in-flight gauge, request latency, errors, requeues).
        call_timeout_s: a worker holding requests that answers none for this long is killed
            and its requests requeued (``None``: never).
        sticky: send a question's requests to the worker that last served it.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        max_in_flight_per_worker: int = PoolConfig.requests_per_actor,
        max_request_retries: int = PoolConfig.max_request_retries,
        metrics: Optional[SearchMetrics] = None,
        call_timeout_s: Optional[float] = None,
        sticky: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight_per_worker < 1 or max_request_retries < 0:
            raise ValueError(
                "need max_in_flight_per_worker >= 1, max_request_retries >= 0; got "
                f"{max_in_flight_per_worker}, {max_request_retries}"
            )
        self.transport = transport
        self.max_in_flight_per_worker = int(max_in_flight_per_worker)
        self.max_request_retries = int(max_request_retries)
        self.metrics = metrics
        self.call_timeout_s = call_timeout_s
        self.sticky = sticky
        self._clock = clock
        self.stats = PoolStats()
        self.info: Optional[EvaluatorInfo] = None
        self._queue: deque[_Pending] = deque()
        self._flight: dict[int, _Flight] = {}
        self._held: dict[int, int] = {}
        self._heard: dict[int, float] = {}  # worker -> when it last answered (or got work)
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
            config: workers, resources, requests in flight, fault tolerance.
            in_process: run the workers in this process, stepped in turn, without Ray
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
                       max_in_flight_per_worker=config.requests_per_actor,
                       max_request_retries=config.max_request_retries, sticky=config.sticky)
            pool.start()
            return pool
        from drllm.distributed.ray_transport import RayTransport

        pool = cls(RayTransport(spec, config, ready_timeout_s=ready_timeout_s),
                   max_in_flight_per_worker=config.requests_per_actor,
                   max_request_retries=config.max_request_retries,
                   call_timeout_s=config.call_timeout_s, sticky=config.sticky)
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
        """Workers that can take requests now."""
        return len(self._ready())

    @property
    def queued(self) -> int:
        """Requests waiting to be sent."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._flight)

    @property
    def capacity(self) -> int:
        """Requests the live workers can hold in flight: workers x requests per worker."""
        return max(1, self.workers_alive) * self.max_in_flight_per_worker

    @property
    def wants_more(self) -> bool:
        """Whether queued work is below what the workers could take right now."""
        return self.queued + self.in_flight < self.capacity

    @property
    def idle(self) -> bool:
        return not self._queue and not self._flight

    @property
    def held_per_worker(self) -> tuple[int, ...]:
        """Requests each worker holds (sent, not answered)."""
        return tuple(self._held.get(w, 0) for w in range(self.transport.num_workers))

    # ------------------------------------------------------------------ submitting

    def submit(self, requests: Sequence[EvalRequest]) -> None:
        """Queue requests (sent by :meth:`dispatch` / :meth:`wait`)."""
        self._queue.extend(_Pending(r) for r in requests)

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
        """Send queued requests to workers with room; the number of requests sent."""
        if self.info is None:
            raise RuntimeError("EvaluationPool.start() must be called before dispatching")
        if not self._queue:
            return 0
        cap, held = self.max_in_flight_per_worker, self._held
        room = {w: cap - held.get(w, 0) for w in self._ready()}
        if not any(r > 0 for r in room.values()):
            return 0
        sends, rest = plan_dispatch([(p, p.request.example_id) for p in self._queue], room,
                                    self._home, sticky=self.sticky)
        self._queue = deque(rest)
        now = self._clock()
        for worker, batch in sends.items():
            self._send(worker, batch, now)
        if sends and self.metrics is not None:
            self.metrics.in_flight(self.in_flight)
        return sum(len(b) for b in sends.values())

    def _send(self, worker: int, batch: list[_Pending], now: float) -> None:
        if not self._held.get(worker):
            self._heard[worker] = now  # the hang clock starts with its first request
        self._held[worker] = self._held.get(worker, 0) + len(batch)
        self.stats.sends += 1
        self.stats.batch_sizes[len(batch)] += 1
        self.stats.max_held = max(self.stats.max_held, self._held[worker])
        sent = []
        for pending in batch:
            request_id = next(self._ids)
            self._flight[request_id] = _Flight(worker, pending, now)
            key = pending.request.example_id
            if self._home.get(key) == worker:
                self.stats.sticky_hits += 1
            self._home[key] = worker
            sent.append((request_id, pending.request))
        self.transport.send(worker, sent)

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
        if self.idle:
            return []
        results: list[EvalResult] = []
        for report in self.transport.wait(self._wait_budget(timeout_s)):
            if isinstance(report, Answered):
                results.extend(self._answer(report))
            else:
                results.extend(self._lose(report))
        results.extend(self._expire_hung())
        self.transport.maintain()
        self._check_alive()
        self.dispatch()
        if self.metrics is not None:
            self.metrics.in_flight(self.in_flight)
        return results

    def _wait_budget(self, timeout_s: float) -> float:
        """``timeout_s``, shortened so that a hung worker is noticed on time."""
        busy = [self._heard[w] for w, n in self._held.items() if n]
        if self.call_timeout_s is None or not busy:
            return timeout_s
        due = min(busy) + self.call_timeout_s - self._clock()
        return max(0.0, min(timeout_s, due))

    def _expire_hung(self) -> list[EvalResult]:
        """Kill workers that held requests and answered none for ``call_timeout_s``; requeue."""
        if self.call_timeout_s is None:
            return []
        now = self._clock()
        hung = [w for w, n in self._held.items()
                if n and now - self._heard[w] >= self.call_timeout_s]
        results: list[EvalResult] = []
        for worker in hung:
            self.stats.timeouts += 1
            logger.error("evaluator worker %d answered none of its %d requests within %.0f s "
                         "(pool.call_timeout_s): killing it, requeueing the requests",
                         worker, self._held[worker], self.call_timeout_s)
            for flight in self._flight.values():
                if flight.worker == worker:
                    flight.pending.last_error = f"worker hung for {self.call_timeout_s:g} s"
            results.extend(self._lose(WorkerLost(worker, gone=False)))
            self._home = {k: w for k, w in self._home.items() if w != worker}
            try:
                self.transport.kill(worker)
            except Exception:  # noqa: BLE001 - the worker may be dead already
                logger.warning("killing hung worker %d failed", worker, exc_info=True)
        return results

    def _check_alive(self) -> None:
        if self.workers_alive or self.transport.pending_workers or self.idle:
            return
        raise PoolExhaustedError(
            f"all {self.transport.num_workers} evaluator workers died and cannot be restarted "
            f"({len(self._queue) + self.in_flight} requests unanswered); check the actor "
            "logs (out of memory? a crashing model?) or raise max_restarts"
        )

    def _answer(self, report: Answered) -> list[EvalResult]:
        flight = self._flight.pop(report.request_id, None)
        if flight is None:  # requeued already (its worker was given up as hung)
            return []
        worker, pending = flight.worker, flight.pending
        self._held[worker] -= 1
        now = self._clock()
        self._heard[worker] = now
        if self.metrics is not None:
            self.metrics.call_latency(now - flight.sent_at)
        outcome = report.outcome
        if isinstance(outcome, EvalError):
            pending.errors += 1
            pending.last_error = outcome.message
            if pending.errors <= self.max_request_retries:
                self.stats.retries += 1
                self._queue.append(pending)
                return []
            return [self._give_up(pending)]
        self.stats.requests_answered += 1
        return [EvalResult(pending.request.example_id, pending.request.path, outcome)]

    def _lose(self, report: WorkerLost) -> list[EvalResult]:
        """A worker died: requeue what it held (or give up requests that died too often)."""
        worker, gone = report.worker, report.gone
        lost = [rid for rid, f in self._flight.items() if f.worker == worker]
        batch = [self._flight.pop(rid).pending for rid in lost]
        self._held[worker] = 0
        if gone and worker not in self._gone:
            self._gone.add(worker)
            self.stats.workers_gone += 1
            logger.error("evaluator worker %d is gone for good (%d left, %d pending)", worker,
                         self.workers_alive, self.transport.pending_workers)
        if not batch:
            return []
        self.stats.worker_losses += 1
        logger.warning("evaluator worker %d was lost; requeueing its %d requests", worker,
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
