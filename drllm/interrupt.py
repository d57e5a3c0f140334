"""Turn SIGTERM into an exception so a job's ``finally`` blocks run before it exits.

``ray job stop`` (and Kubernetes, and most schedulers) stop a job with SIGTERM, whose default
action kills the process at once: a search would lose the finished rows its shard writer still
buffers. Inside :func:`sigterm_raises`, SIGTERM raises :class:`Terminated` in the main thread
instead; it derives from :class:`SystemExit`, so ``except Exception`` handlers let it through
while ``finally`` blocks (flush the writer, stop the actors) run, and the process then exits
with status ``128 + SIGTERM`` like a killed one.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

logger = logging.getLogger(__name__)


class Terminated(SystemExit):
    """The process received SIGTERM inside :func:`sigterm_raises`."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere the
    block runs unchanged, since Python delivers signals to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        logger.warning("received signal %d: writing finished rows, then exiting", signum)
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
