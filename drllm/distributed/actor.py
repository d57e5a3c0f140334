"""The evaluator actor: one evaluator (one frozen model) streaming requests in and outcomes out.

:class:`EvaluatorActor` is a plain class; :mod:`drllm.distributed.ray_transport` turns it into a
named Ray actor with the right resources (``ray.remote(EvaluatorActor).options(...)``). It is an
*async* actor with two calls: :meth:`EvaluatorActor.submit` hands it requests (it returns at
once) and :meth:`EvaluatorActor.collect` waits until at least one request is done and returns
every outcome finished since the last collect. A serving loop steps the evaluator in a worker
thread (:meth:`~drllm.distributed.evaluator.Evaluator.step`: one engine step for the
model-backed evaluator), handing it the requests that arrived during the previous step, so a
new request joins the running batch at the next step and each result leaves as soon as it is
done; the event loop keeps accepting calls while the model runs.

Replies carrying whatever has finished (not a Ray streaming generator): the transport keeps one
``collect`` outstanding per actor that holds requests, so a reply costs one Ray call per batch of
outcomes, and outcomes that finish during a reply's trip go out with the next one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import warnings
from typing import Any, Optional, Sequence

from drllm.distributed.evaluator import (
    EvalError,
    EvaluatorContext,
    EvaluatorInfo,
    EvaluatorSpec,
    Tagged,
    error_text,
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
    """Holds one evaluator (one model copy) and streams requests through it.

    Args:
        index: position in the pool (the actor is named ``{prefix}-{index}``).
        spec: which evaluator to build, with its options.
        num_threads: torch intra-op threads (CPU actors: their ``num_cpus``).
        device: device given to the evaluator (``"cuda"`` for a GPU actor), or ``None``.
        metrics_model: ``model`` tag of the actor's metrics (``None``: the evaluator's model id).
    """

    def __init__(
        self,
        index: int,
        spec: EvaluatorSpec,
        *,
        num_threads: Optional[int] = None,
        device: Optional[str] = None,
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
        self._incoming: list[tuple[int, EvalRequest]] = []
        self._finished: list[Tagged] = []
        self._held: set[int] = set()  # tags submitted and not yet finished
        self._work: Optional[asyncio.Event] = None
        self._done: Optional[asyncio.Event] = None
        self._loop_task: Optional[asyncio.Task] = None
        self.steps = 0
        self.requests_done = 0
        self.busy_seconds = 0.0
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

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._work is None or self._done is None:
            self._work, self._done = asyncio.Event(), asyncio.Event()
        return self._work, self._done

    async def submit(self, requests: Sequence[tuple[int, EvalRequest]]) -> None:
        """Take ``(tag, request)`` pairs; they join the evaluator at its next step."""
        work, _ = self._events()
        self._incoming.extend(requests)
        self._held.update(tag for tag, _ in requests)
        work.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._serve())

    async def collect(self) -> list[Tagged]:
        """Wait until a request is done; ``(tag, outcome)`` of every one done since the last
        collect (an :class:`EvalError` for a request whose evaluation raised)."""
        _, done = self._events()
        while not self._finished:
            done.clear()
            await done.wait()
        out, self._finished = self._finished, []
        return out

    async def _serve(self) -> None:
        work, done = self._events()
        while True:
            while not self._incoming and not self._held:
                work.clear()
                await work.wait()
            new, self._incoming = self._incoming, []
            start = time.perf_counter()
            try:
                finished = await asyncio.to_thread(self._step, new)
            except Exception as err:  # noqa: BLE001 - answered as errors, the pool retries them
                finished = self._fail_held(err)
            seconds = time.perf_counter() - start
            self.busy_seconds += seconds
            self.steps += 1
            # Once answered, a tag is answered: what an evaluator still held from a failed step
            # and finishes later is dropped.
            finished = [(tag, outcome) for tag, outcome in finished if tag in self._held]
            if finished:
                self._held.difference_update(tag for tag, _ in finished)
                self.requests_done += len(finished)
                self._finished.extend(finished)
                done.set()
                self.metrics.batch(len(finished), seconds)

    def _step(self, new: list[tuple[int, EvalRequest]]) -> list[Tagged]:
        """Submit the new requests and run one evaluator step (in the worker thread; it touches
        nothing the event loop changes)."""
        for tag, request in new:
            self.evaluator.submit(tag, request)
        return self.evaluator.step()

    def _fail_held(self, err: Exception) -> list[Tagged]:
        """A step raised: every request the evaluator was handed fails (the evaluator's contract
        is to raise only when the worker is lost, which in an actor is the process dying).
        Runs on the event loop, after the step: requests that arrived during it were never
        handed over, so they stay queued for the next step instead of failing unseen."""
        logger.error("%r: evaluator step failed: %s", self, error_text(err))
        waiting = {tag for tag, _ in self._incoming}
        return [(tag, EvalError(error_text(err))) for tag in sorted(self._held - waiting)]

    async def close(self) -> None:
        """Stop serving and release the evaluator (the pool calls this before killing)."""
        task, self._loop_task = self._loop_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.evaluator.close()

    def info(self) -> EvaluatorInfo:
        """Model id, L and device of the evaluator (the pool checks all actors agree)."""
        return self._info

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring, benchmarks and tests.

        ``busy_seconds``: wall time spent in evaluator steps; ``cpu_seconds``: CPU time of the
        actor process (all threads), both since the actor (re)started.
        """
        return {
            "index": self.index,
            "pid": os.getpid(),
            "restarted": self.restarted,
            "steps": self.steps,
            "requests_done": self.requests_done,
            "busy_seconds": self.busy_seconds,
            "cpu_seconds": time.process_time(),
            "held": len(self._held),
            "evaluator": (self.evaluator.stats() if hasattr(self.evaluator, "stats") else {}),
        }

    def __repr__(self) -> str:
        info = getattr(self, "_info", None)
        model = info.model_id if info else "?"
        device = info.device if info else "?"
        return (f"EvaluatorActor(#{self.index}, model={model}, device={device}, "
                f"steps={getattr(self, 'steps', 0)})")
