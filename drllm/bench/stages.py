"""Where a run's wall time goes, by stage: exclusive timers wrapped around chosen methods.

:class:`StageTimer` patches methods (or property getters) of classes with wrappers that time
each call; time spent in a nested wrapped call is charged to the inner stage only (a timer
stack), so the stages add up to the time spent inside the outermost wrapped call. Unlike a
deterministic profiler it adds well under a microsecond per wrapped call and nothing to the
calls it does not wrap, so the split of a hot loop of small calls is not distorted. Passes
of Python's cyclic garbage collector inside timed calls are a stage of their own.

Example::

    timer = StageTimer([(SearchTree, "ask", "tree"), (SearchDriver, "run", "driver loop")])
    with timer.installed():
        driver.run(examples)
    timer.seconds   # {"tree": ..., "driver loop": ...}

Imports neither torch nor ray.
"""

from __future__ import annotations

import functools
import gc
import inspect
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence

Target = tuple[type, str, str]
"""(class, method or property name, stage)."""


class StageTimer:
    """Exclusive wall time per stage over the wrapped methods (see the module docstring).

    Args:
        targets: ``(class, attribute, stage)``; the attribute is a method or a property
            defined on the class or inherited.
        clock: seconds, monotonic (injectable for tests).
    """

    def __init__(self, targets: Sequence[Target],
                 clock: Callable[[], float] = time.perf_counter,
                 gc_stage: Optional[str] = "garbage collection") -> None:
        for cls, name, _ in targets:
            if not hasattr(cls, name):
                raise AttributeError(f"{cls.__name__} has no attribute {name!r} to time")
        self.targets = list(targets)
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list[Any]] = []  # [stage, resumed at]
        self._clock = clock
        self._gc_stage = gc_stage
        self._gc_started: Optional[float] = None

    def _timed(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        stack, seconds, calls, clock = self._stack, self.seconds, self.calls, self._clock

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            now = clock()
            if stack:
                outer = stack[-1]
                seconds[outer[0]] = seconds.get(outer[0], 0.0) + now - outer[1]
            stack.append([stage, now])
            try:
                return fn(*args, **kwargs)
            finally:
                end = clock()
                inner = stack.pop()
                seconds[stage] = seconds.get(stage, 0.0) + end - inner[1]
                calls[stage] = calls.get(stage, 0) + 1
                if stack:
                    stack[-1][1] = end

        return wrapper

    def _on_gc(self, phase: str, info: dict) -> None:
        """A cyclic-GC pass inside a timed call is charged to ``gc_stage``, not to the call
        that happened to allocate when it was due."""
        if not self._stack:
            return
        now = self._clock()
        top = self._stack[-1]
        if phase == "start":
            self.seconds[top[0]] = self.seconds.get(top[0], 0.0) + now - top[1]
            self._gc_started = now
        elif self._gc_started is not None:
            stage = self._gc_stage
            self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._gc_started
            self.calls[stage] = self.calls.get(stage, 0) + 1
            self._gc_started = None
            top[1] = now

    @contextmanager
    def installed(self) -> Iterator["StageTimer"]:
        """Patch the targets for the duration of the block, then restore them."""
        saved: list[tuple[type, str, Any, bool]] = []
        try:
            for cls, name, stage in self.targets:
                static = inspect.getattr_static(cls, name)
                own = name in vars(cls)
                if isinstance(static, property):
                    patched: Any = property(self._timed(static.fget, stage), static.fset,
                                            static.fdel, static.__doc__)
                else:
                    patched = self._timed(getattr(cls, name), stage)
                saved.append((cls, name, static, own))
                setattr(cls, name, patched)
            if self._gc_stage is not None:
                gc.callbacks.append(self._on_gc)
            yield self
        finally:
            if self._on_gc in gc.callbacks:
                gc.callbacks.remove(self._on_gc)
            for cls, name, static, own in reversed(saved):
                if own:
                    setattr(cls, name, static)
                else:
                    delattr(cls, name)

    def shares(self) -> dict[str, float]:
        """Each stage's fraction of the timed total, rounded to 3 places, largest first."""
        total = sum(self.seconds.values()) or 1.0
        return {k: round(v / total, 3)
                for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}
