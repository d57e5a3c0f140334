"""An in-process :class:`~drllm.distributed.pool.Transport`: evaluators in the driver process.

For unit tests (no Ray), debugging, and small single-process runs. Calls run synchronously,
oldest first, one per :meth:`LocalTransport.wait`, so interleavings are deterministic.
Imports neither torch nor ray.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Optional

from drllm.distributed.transport import CallDone, Transport
from drllm.distributed.evaluator import (
    Evaluator,
    EvaluatorContext,
    EvaluatorInfo,
    EvaluatorSpec,
    WorkerLostError,
    evaluate_isolating_errors,
)
from drllm.types import EvalRequest

logger = logging.getLogger(__name__)


class LocalTransport(Transport):
    """Backends in this process; calls run synchronously, oldest first, one per :meth:`wait`.

    An evaluator raising :class:`WorkerLostError` stands for a dead actor: the worker is rebuilt
    (``restarted=True``) up to ``max_restarts`` times, then given up.

    Args:
        spec: the evaluator each worker builds.
        num_workers: workers.
        max_restarts: rebuilds per worker after a death.
    """

    def __init__(self, spec: EvaluatorSpec, num_workers: int = 1, max_restarts: int = 3) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.spec = spec
        self._num_workers = int(num_workers)
        self.max_restarts = int(max_restarts)
        self.evaluators: list[Optional[Evaluator]] = []
        self.restarts = [0] * self._num_workers
        self._calls: deque[tuple[int, int, tuple[EvalRequest, ...], float]] = deque()
        self.call_log: list[tuple[int, int]] = []  # (worker, requests) per call, in send order
        self.max_outstanding = [0] * self._num_workers
        self._pending_losses: list[CallDone] = []

    @property
    def num_workers(self) -> int:
        return self._num_workers

    def start(self) -> EvaluatorInfo:
        self.evaluators = [
            self.spec.build(EvaluatorContext(worker_index=i, in_process=True))
            for i in range(self._num_workers)
        ]
        infos = {b.info for b in self.evaluators}
        if len(infos) != 1:
            raise RuntimeError(f"workers disagree on the model: {sorted(map(str, infos))}")
        return infos.pop()

    def call(self, worker: int, call_id: int, requests: tuple[EvalRequest, ...]) -> None:
        if self.evaluators[worker] is None:
            raise RuntimeError(f"worker {worker} is gone")
        self._calls.append((worker, call_id, requests, time.perf_counter()))
        self.call_log.append((worker, len(requests)))
        outstanding = sum(1 for w, *_ in self._calls if w == worker)
        self.max_outstanding[worker] = max(self.max_outstanding[worker], outstanding)

    def wait(self, timeout_s: float) -> list[CallDone]:
        if self._pending_losses:
            lost, self._pending_losses = self._pending_losses, []
            return lost
        if not self._calls:
            return []
        worker, call_id, requests, sent = self._calls.popleft()
        evaluator = self.evaluators[worker]
        assert evaluator is not None
        try:
            outcomes = evaluate_isolating_errors(evaluator, requests)
        except WorkerLostError as err:
            return self._lose(worker, call_id, err)
        return [CallDone(call_id, worker, tuple(outcomes), seconds=time.perf_counter() - sent)]

    def _lose(
        self, worker: int, call_id: Optional[int], err: WorkerLostError
    ) -> list[CallDone]:
        """Like a dead actor: every outstanding call of the worker fails; restart or give up."""
        logger.warning("in-process worker %d lost: %s", worker, err)
        lost = ([] if call_id is None else [call_id]) + [c[1] for c in self._calls
                                                          if c[0] == worker]
        self._calls = deque(c for c in self._calls if c[0] != worker)
        gone = self.restarts[worker] >= self.max_restarts
        if gone:
            self.evaluators[worker] = None
        else:
            self.restarts[worker] += 1
            self.evaluators[worker] = self.spec.build(
                EvaluatorContext(worker_index=worker, restarted=True, in_process=True)
            )
        return [CallDone(c, worker, worker_lost=True, worker_gone=gone) for c in lost]

    def ready_workers(self) -> list[int]:
        return [w for w, b in enumerate(self.evaluators) if b is not None]

    def kill(self, worker: int) -> None:
        """Like killing a hung actor: its outstanding calls are lost, the worker restarts."""
        self._pending_losses.extend(self._lose(worker, None, WorkerLostError("killed (hung)")))

    def shutdown(self) -> None:
        for evaluator in self.evaluators:
            if evaluator is not None:
                evaluator.close()
        self.evaluators = [None] * len(self.evaluators)
        self._calls.clear()
