"""An asyncio request batcher: merges concurrent calls into batches for one sequential evaluator.

Runs inside an async evaluator actor (``ray.serve.batch`` only works inside Ray Serve). Every
call's requests join one queue; a single loop takes up to ``max_batch_size`` of them, waiting at
most ``wait_s`` after the first for more to arrive, and runs the batch in a worker thread
(:func:`asyncio.to_thread`) so that the event loop keeps accepting calls while the model runs.
Batches run one at a time, in arrival order.

Imports neither torch nor ray.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable, Generic, Optional, Sequence, TypeVar

logger = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")

BatchFn = Callable[[list], list]
"""Blocking function: a batch of requests -> one result per request, in order."""
BatchHook = Callable[[int, float], None]
"""Called after each batch with (batch size in requests, seconds the batch took)."""


class RequestBatcher(Generic[Req, Res]):
    """Queue requests from concurrent callers and run them in batches, one batch at a time.

    Args:
        run_batch: blocking ``list[Req] -> list[Res]`` (same length, same order). If it
            raises, every caller whose request is in that batch gets the exception.
        max_batch_size: requests per batch at most.
        wait_s: after the first request of a batch arrives, wait up to this long (seconds)
            for the batch to fill; 0 runs whatever is queued at once.
        on_batch: optional hook called with (batch size, seconds) after each batch.
    """

    def __init__(
        self,
        run_batch: BatchFn,
        *,
        max_batch_size: int,
        wait_s: float,
        on_batch: Optional[BatchHook] = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0 seconds, got {wait_s}")
        self._run_batch = run_batch
        self.max_batch_size = int(max_batch_size)
        self.wait_s = float(wait_s)
        self._on_batch = on_batch
        self._queue: deque[tuple[Req, asyncio.Future]] = deque()
        self._arrived: Optional[asyncio.Event] = None
        self._loop_task: Optional[asyncio.Task] = None
        self.batches_done = 0
        self.requests_done = 0
        self.busy_seconds = 0.0
        self.busy = False

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    async def submit(self, requests: Sequence[Req]) -> list[Res]:
        """Queue ``requests`` and return their results once their batches have run."""
        if not requests:
            return []
        if self._arrived is None:
            self._arrived = asyncio.Event()
        loop = asyncio.get_running_loop()
        futures = []
        for request in requests:
            future = loop.create_future()
            self._queue.append((request, future))
            futures.append(future)
        self._arrived.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._serve())
        return list(await asyncio.gather(*futures))

    async def close(self) -> None:
        """Stop the batching loop; queued requests are cancelled (idempotent)."""
        task, self._loop_task = self._loop_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        while self._queue:
            _, future = self._queue.popleft()
            future.cancel()

    async def _wait_for_more(self) -> None:
        """Wait until the queue holds a full batch or ``wait_s`` has passed."""
        assert self._arrived is not None
        deadline = time.monotonic() + self.wait_s
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _serve(self) -> None:
        assert self._arrived is not None
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            if self.wait_s > 0:
                await self._wait_for_more()
            size = min(self.max_batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(size)]
            live = [(r, f) for r, f in batch if not f.cancelled()]
            if not live:
                continue
            await self._run(live)

    async def _run(self, batch: list[tuple[Req, asyncio.Future]]) -> None:
        requests = [r for r, _ in batch]
        start = time.perf_counter()
        self.busy = True
        try:
            results = await asyncio.to_thread(self._run_batch, requests)
            if len(results) != len(requests):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(requests)} requests"
                )
        except asyncio.CancelledError:  # close(): the callers of this batch are cancelled too
            for _, future in batch:
                future.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - delivered to every caller of the batch
            logger.warning("batch of %d failed: %s: %s", len(requests), type(err).__name__, err)
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        finally:
            self.busy = False
            self.busy_seconds += time.perf_counter() - start
        seconds = time.perf_counter() - start
        self.batches_done += 1
        self.requests_done += len(requests)
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
        if self._on_batch is not None:
            try:
                self._on_batch(len(requests), seconds)
            except Exception:  # noqa: BLE001 - monitoring must not break evaluation
                logger.exception("batch hook failed")
