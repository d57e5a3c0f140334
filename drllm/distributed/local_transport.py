"""An in-process :class:`~drllm.distributed.transport.Transport`: evaluators in the driver process.

For unit tests (no Ray), debugging, and small single-process runs (``ray.mode=in_process``).
Sent requests join their worker's evaluator at once (:meth:`Evaluator.submit`); each
:meth:`LocalTransport.wait` steps the workers that hold requests, in index order
(:meth:`Evaluator.step`: one engine step for the model-backed evaluator), until one of them
finishes something, so interleavings are deterministic. Imports neither torch nor ray.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from drllm.distributed.evaluator import (
    Evaluator,
    EvaluatorContext,
    EvaluatorInfo,
    EvaluatorSpec,
    WorkerLostError,
    error_text,
)
from drllm.distributed.transport import Answered, Report, Sent, Transport, WorkerLost

logger = logging.getLogger(__name__)


class LocalTransport(Transport):
    """Evaluators in this process, stepped in turn by :meth:`wait`.

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
        #: (worker, requests) per send, in order (tests read it).
        self.send_log: list[tuple[int, int]] = []
        #: Requests each worker held at once at most.
        self.max_held = [0] * self._num_workers
        self._held = [0] * self._num_workers
        self._pending_losses: list[Report] = []

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

    def send(self, worker: int, requests: Sequence[Sent]) -> None:
        evaluator = self.evaluators[worker]
        if evaluator is None:
            raise RuntimeError(f"worker {worker} is gone")
        self.send_log.append((worker, len(requests)))
        for request_id, request in requests:
            evaluator.submit(request_id, request)
        self._held[worker] += len(requests)
        self.max_held[worker] = max(self.max_held[worker], self._held[worker])

    def wait(self, timeout_s: float) -> list[Report]:
        """Step the workers holding requests until something is reported (or none holds any)."""
        if self._pending_losses:
            lost, self._pending_losses = self._pending_losses, []
            return lost
        while any(self._held):
            out: list[Report] = []
            for worker, evaluator in enumerate(self.evaluators):
                if evaluator is None or not self._held[worker]:
                    continue
                try:
                    done = evaluator.step()
                except WorkerLostError as err:
                    out.append(self._lose(worker, err))
                    continue
                except Exception as err:  # noqa: BLE001 - a broken evaluator, not a dead one
                    logger.error("in-process worker %d failed a step: %s", worker,
                                 error_text(err))
                    out.append(self._lose(worker, WorkerLostError(error_text(err))))
                    continue
                self._held[worker] -= len(done)
                out.extend(Answered(worker, tag, outcome) for tag, outcome in done)
            if out:
                return out
        return []

    def _lose(self, worker: int, err: WorkerLostError) -> WorkerLost:
        """Like a dead actor: what the worker held is lost; restart it or give it up."""
        logger.warning("in-process worker %d lost: %s", worker, err)
        self._held[worker] = 0
        gone = self.restarts[worker] >= self.max_restarts
        if gone:
            self.evaluators[worker] = None
        else:
            self.restarts[worker] += 1
            self.evaluators[worker] = self.spec.build(
                EvaluatorContext(worker_index=worker, restarted=True, in_process=True)
            )
        return WorkerLost(worker, gone)

    def ready_workers(self) -> list[int]:
        return [w for w, b in enumerate(self.evaluators) if b is not None]

    def kill(self, worker: int) -> None:
        """Like killing a hung actor: what it held is lost, the worker restarts."""
        self._pending_losses.append(self._lose(worker, WorkerLostError("killed (hung)")))

    def shutdown(self) -> None:
        for evaluator in self.evaluators:
            if evaluator is not None:
                evaluator.close()
        self.evaluators = [None] * len(self.evaluators)
        self._held = [0] * self._num_workers
