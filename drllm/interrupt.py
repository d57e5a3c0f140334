"""Turn SIGTERM into an exception so a job's ``finally`` blocks run before it exits.

``ray job stop`` (and Kubernetes, and most schedulers) stop a job with SIGTERM, whose default
action kills the process at once: a search would lose the finished rows its shard writer still
buffers. Inside :func:`sigterm_raises`, SIGTERM raises :class:`Terminated` in the main thread
instead; it derives from :class:`SystemExit`, so ``except Exception`` handlers let it through
while ``finally`` blocks (flush the writer, stop the actors) run, and the process then exits
with status ``128 + SIGTERM`` like a killed one.

Raised at an arbitrary bytecode, the exception could land inside library code (Ray's Cython
wait loop, the Parquet writer) that does not expect it. A loop that polls can instead hold
:func:`deferred`: the signal is then only recorded, and the loop raises it at a point of its
choosing with :func:`raise_if_requested` (the search driver does this once per poll).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

logger = logging.getLogger(__name__)

_state = {"deferred": 0, "pending": 0}


class Terminated(SystemExit):
    """The process received SIGTERM inside :func:`sigterm_raises`."""


def _handler(signum: int, _frame: object) -> None:
    logger.warning("received signal %d: writing finished rows, then exiting", signum)
    if _state["deferred"]:
        _state["pending"] = signum
        return
    raise Terminated(128 + signum)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere the
    block runs unchanged, since Python delivers signals to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _state["pending"] = 0


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, a SIGTERM is only recorded; :func:`raise_if_requested` raises it."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1
    raise_if_requested()


def raise_if_requested() -> None:
    """Raise :class:`Terminated` if a SIGTERM arrived while deferred."""
    signum, _state["pending"] = _state["pending"], 0
    if signum:
        raise Terminated(128 + signum)
