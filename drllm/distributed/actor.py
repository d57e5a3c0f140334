"""The evaluator actor: one evaluator (one frozen model) behind an async request batcher.

:class:`EvaluatorActor` is a plain class; :mod:`drllm.distributed.ray_transport` turns it into a named
Ray actor with the right resources (``ray.remote(EvaluatorActor).options(...)``). It is an
*async* actor: :meth:`EvaluatorActor.evaluate` calls from the driver are accepted concurrently
and merged by a :class:`~drllm.distributed.batcher.RequestBatcher` into batches of at most
``max_batch_size`` requests, which run one at a time in a worker thread, so the event loop keeps
accepting requests while the model runs.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import Any, Optional, Sequence

from drllm.distributed.batcher import RequestBatcher
from drllm.distributed.config import PoolConfig
from drllm.distributed.evaluator import (
    EvaluatorContext,
    EvaluatorInfo,
    EvaluatorSpec,
    Outcome,
    evaluate_isolating_errors,
)
from drllm.distributed.metrics import SearchMetrics
from drllm.types import EvalRequest

logger = logging.getLogger(__name__)


def _was_restarted() -> bool:
    """Whether Ray restarted this actor after a death (False outside an actor).

    Checks ``ray.is_initialized()`` first: ``ray.get_runtime_context()`` would otherwise start
    a local Ray instance in a process that never asked for one.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    try:
        context = ray.get_runtime_context()
        if context.get_actor_id() is None:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(context.was_current_actor_reconstructed)
    except Exception:  # noqa: BLE001 - the API moved: assume a first start
        logger.debug("could not tell whether this actor was restarted", exc_info=True)
        return False


class EvaluatorActor:
    """Holds one evaluator (one model copy) and serves batched evaluation calls.

    Args:
        index: position in the pool (the actor is named ``{prefix}-{index}``).
        spec: which evaluator to build, with its options.
        num_threads: torch intra-op threads (CPU actors: their ``num_cpus``).
        device: device given to the evaluator (``"cuda"`` for a GPU actor), or ``None``.
        max_batch_size: requests per executor batch at most.
        batch_wait_ms: how long a partial batch waits for more requests (milliseconds).
        metrics_model: ``model`` tag of the actor's metrics (``None``: the evaluator's model id).
    """

    def __init__(
        self,
        index: int,
        spec: EvaluatorSpec,
        *,
        num_threads: Optional[int] = None,
        device: Optional[str] = None,
        max_batch_size: int = PoolConfig.max_batch_size,
        batch_wait_ms: float = PoolConfig.batch_wait_ms,
        metrics_model: Optional[str] = None,
    ) -> None:
        self.index = index
        self.restarted = _was_restarted()
        if num_threads is not None:
            self._set_threads(num_threads)
        context = EvaluatorContext(
            worker_index=index,
            restarted=self.restarted,
            in_process=False,
            num_threads=num_threads,
            device=device,
        )
        self.evaluator = spec.build(context)
        self._info = self.evaluator.info
        self.metrics = SearchMetrics(metrics_model or self._info.model_id)
        self.batcher: RequestBatcher[EvalRequest, Outcome] = RequestBatcher(
            self._run_batch,
            max_batch_size=max_batch_size,
            wait_s=batch_wait_ms / 1000.0,
            on_batch=self.metrics.batch,
        )
        logger.info("%r ready (pid %d%s)", self, os.getpid(),
                    ", restarted" if self.restarted else "")

    @staticmethod
    def _set_threads(num_threads: int) -> None:
        """Match OpenMP / torch intra-op threads to the CPUs Ray reserved.

        torch is not imported here just for this (the dummy evaluator never needs it); an evaluator
        that imports torch sets its threads from ``EvaluatorContext.num_threads``.
        """
        os.environ["OMP_NUM_THREADS"] = str(num_threads)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(num_threads)

    def _run_batch(self, requests: list[EvalRequest]) -> list[Outcome]:
        return evaluate_isolating_errors(self.evaluator, requests)

    async def evaluate(self, requests: Sequence[EvalRequest]) -> list[Outcome]:
        """Evaluate ``requests``; one :class:`Evaluation` or :class:`EvalError` each, in order.

        Concurrent calls are merged into batches; this call returns when all of its requests
        are done.
        """
        return await self.batcher.submit(list(requests))

    async def close(self) -> None:
        """Stop batching and release the evaluator (the pool calls this before killing)."""
        await self.batcher.close()
        self.evaluator.close()

    def info(self) -> EvaluatorInfo:
        """Model id, L and device of the evaluator (the pool checks all actors agree)."""
        return self._info

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring, benchmarks and tests.

        ``busy_seconds``: wall time spent running batches; ``cpu_seconds``: CPU time of the
        actor process (all threads), both since the actor (re)started.
        """
        return {
            "index": self.index,
            "pid": os.getpid(),
            "restarted": self.restarted,
            "batches_done": self.batcher.batches_done,
            "requests_done": self.batcher.requests_done,
            "busy_seconds": self.batcher.busy_seconds,
            "cpu_seconds": time.process_time(),
            "queued": self.batcher.queued,
            "busy": self.batcher.busy,
        }

    def __repr__(self) -> str:
        info = getattr(self, "_info", None)
        batcher = getattr(self, "batcher", None)
        model = info.model_id if info else "?"
        device = info.device if info else "?"
        done = batcher.batches_done if batcher else 0
        return f"EvaluatorActor(#{self.index}, model={model}, device={device}, batches={done})"
