"""Which worker gets which queued requests: sticky questions, the least loaded worker.

:func:`plan_dispatch` is the pool's dispatch decision as a pure function (no I/O, no clock), so
it is tested without workers. Workers stream (a request joins the worker's running engine and
leaves it when done), so there are no batches to fill: a worker takes requests while it holds
fewer than its bound. Rules, in queue order:

* **sticky**: a request whose question (example id) was last served by a ready worker goes to
  that worker -- it keeps the question's caches (prefix states, KV) warm -- and waits in the
  queue while that worker is full (it frees a place as soon as any of its requests finishes);
* any other request goes to the worker with the most room (the least loaded; the lowest index
  on ties).

Imports neither torch nor ray.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence, TypeVar

Item = TypeVar("Item")


def plan_dispatch(
    queue: Sequence[tuple[Item, Hashable]],
    room: Mapping[int, int],
    home: Mapping[Hashable, int],
    *,
    sticky: bool = True,
) -> tuple[dict[int, list[Item]], list[Item]]:
    """Decide what to send now.

    Args:
        queue: ``(item, question)`` of the queued requests, oldest first.
        room: ready workers -> requests each may still take (0: full); a home worker not
            in it (dead, restarting) is forgotten for the request.
        home: question -> the worker that last served it.
        sticky: send a question to its home worker.

    Returns:
        ``(sends, rest)``: worker -> the items to send it (in queue order), and the items that
        stay queued, in their order.
    """
    left = {w: r for w, r in room.items() if r > 0}
    sends: dict[int, list[Item]] = {}
    rest: list[Item] = []
    for item, key in queue:
        target = home.get(key) if sticky else None
        if target is None or target not in room:
            target = max(left, key=lambda w: (left[w], -w)) if left else None
        if target is None or left.get(target, 0) <= 0:
            rest.append(item)
            continue
        sends.setdefault(target, []).append(item)
        left[target] -= 1
    return sends, rest
