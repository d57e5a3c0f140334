"""Which worker gets which queued requests: even spreading, full batches, sticky questions.

:func:`plan_dispatch` is the pool's dispatch decision as a pure function (no I/O, no clock of its
own), so it is tested without workers. Rules, in order:

* **sticky**: a request whose question (example id) was last served by a live worker waits
  for that worker -- the worker keeps per-question caches (prefix states, KV) warm -- unless it
  has waited ``sticky_wait_s`` already, or its home worker is dead; then any worker takes it;
* an **idle** worker (no call outstanding) takes what is queued, spread evenly over the idle
  workers;
* a **busy** worker (calls outstanding, below the in-flight bound) only takes full batches: a
  partial batch would wait behind the running one anyway, and is better merged with the
  requests that arrive meanwhile.

Imports neither torch nor ray.
"""

from __future__ import annotations

import math
from typing import Generic, Hashable, Mapping, NamedTuple, Optional, Sequence, TypeVar

Item = TypeVar("Item")


class Queued(NamedTuple, Generic[Item]):
    """A queued request as routing sees it (a named tuple: the pool builds one per queued
    request at every dispatch, and a tuple is several times cheaper than a frozen dataclass).

    Attributes:
        item: the pool's pending request (opaque here).
        key: its question (example id).
        waited_s: how long it has been queued (seconds).
    """

    item: Item
    key: Hashable
    waited_s: float


def plan_dispatch(
    queue: Sequence[Queued[Item]],
    free: Mapping[int, int],
    home: Mapping[Hashable, int],
    alive: frozenset[int],
    *,
    max_batch_size: int,
    sticky_wait_s: Optional[float],
) -> tuple[list[tuple[int, list[Item]]], list[Item]]:
    """Decide the calls to make now.

    Args:
        queue: queued requests, oldest first.
        free: workers that may take a call now -> calls they have outstanding.
        home: question -> the worker that last served it.
        alive: workers that are up (free or not); a home outside it is dead.
        max_batch_size: requests per call at most.
        sticky_wait_s: how long a request waits for its home worker; ``None``: not sticky.

    Returns:
        ``(calls, rest)``: one ``(worker, items)`` per call to make (a worker appears at most
        once), and the items that stay queued, in their order.
    """
    # Items travel with their queue position, so that what stays queued is put back in
    # queue order by sorting the leftovers alone.
    batches: dict[int, list[tuple[int, Item]]] = {w: [] for w in free}
    waiting: list[tuple[int, Item]] = []  # (queue position, item) kept for their home
    loose: list[tuple[int, Item]] = []
    for pos, q in enumerate(queue):
        target = home.get(q.key) if sticky_wait_s is not None else None
        if target is not None and target in alive and q.waited_s < sticky_wait_s:
            if target in batches and len(batches[target]) < max_batch_size:
                batches[target].append((pos, q.item))
            else:
                waiting.append((pos, q.item))
        else:
            loose.append((pos, q.item))
    leftover = _spread(loose, batches, free, max_batch_size)
    calls = []
    for worker, items in batches.items():
        if not items:
            continue
        if free[worker] > 0 and len(items) < max_batch_size:  # busy: full batches only
            leftover.extend(items)  # partials keep their place in the queue
            continue
        calls.append((worker, [it for _, it in items]))
    rest = [it for _, it in sorted(waiting + leftover, key=lambda pi: pi[0])]
    return calls, rest


def _spread(
    loose: list[tuple[int, Item]], batches: dict[int, list[tuple[int, Item]]],
    free: Mapping[int, int], max_batch_size: int,
) -> list[tuple[int, Item]]:
    """Top up the workers' batches with unbound requests; the requests no worker took."""
    pending = list(loose)
    idle = sorted((w for w in free if free[w] == 0), key=lambda w: (len(batches[w]), w))
    if idle and pending:
        share = math.ceil((len(pending) + sum(len(batches[w]) for w in idle)) / len(idle))
        for w in idle:
            room = min(max_batch_size, max(share, len(batches[w]))) - len(batches[w])
            take, pending = pending[:room], pending[room:]
            batches[w].extend(take)
    busy = sorted((w for w in free if free[w] > 0), key=lambda w: (free[w], w))
    for w in busy:
        room = max_batch_size - len(batches[w])
        if len(pending) >= room > 0:
            take, pending = pending[:room], pending[room:]
            batches[w].extend(take)
    return pending
