"""The evaluator before the engine, kept as the baseline of ``bench search-engine``.

:class:`CallEvaluator` is :class:`~drllm.distributed.executor_evaluator.ExecutorEvaluator` with the
generation of each call done as it was before :mod:`drllm.engine`: one executor batch per
actor call that runs until its longest row finishes, and the per-question reuse cache driven
from the evaluator (a missing default path generated first, its states rebuilt by a second,
teacher-forced pass; edited rows resumed in one batch). Same tokens and rewards as the
engine; only the scheduling differs, which is what the benchmark measures.
"""

from __future__ import annotations

import time
from typing import Any

from drllm.distributed.evaluator import Evaluator
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.engine import EngineRequest, ReuseKey
from drllm.engine.reuse import default_generation
from drllm.paths import LayerPath
from drllm.types import Generation


class CallEvaluator(ExecutorEvaluator):
    """Per-call executor batches, the reuse cache driven per call (the old design); it uses
    the engine's cache manager (:attr:`cache`) as a store, not the engine's scheduler. It
    does not stream: a worker's :meth:`step` evaluates every request queued since the last
    one as one batch (:class:`~drllm.distributed.evaluator.Evaluator`'s default)."""

    name = "executor-calls"
    submit = Evaluator.submit
    step = Evaluator.step
    streaming = Evaluator.streaming

    @property
    def cache(self) -> Any:
        return self.engine.cache

    def _generate(self, requests: list[EngineRequest]) -> list[Generation]:
        start = time.perf_counter()
        try:
            return self._generate_per_call(requests)
        finally:
            self.generate_s = getattr(self, "generate_s", 0.0) + time.perf_counter() - start

    def stats(self) -> dict[str, Any]:
        """The evaluator's counters and ``generate_s``: seconds in generation (executor calls,
        the default paths' teacher-forced passes), grading excluded."""
        return {**super().stats(), "generate_s": getattr(self, "generate_s", 0.0)}

    def _generate_per_call(self, requests: list[EngineRequest]) -> list[Generation]:
        g = self.generation
        prompts = [list(r.ids) for r in requests]
        paths = [LayerPath(r.path) for r in requests]
        finals = [r.final for r in requests]
        if not g.reuse_prefix:
            return self.executor.generate(prompts, paths, finals=finals,
                                          max_new_tokens=g.max_new_tokens,
                                          stop_strings=g.stop_strings)
        keys: list[ReuseKey] = [r.reuse for r in requests]  # type: ignore[misc]
        entries: dict[ReuseKey, Any] = {}
        missing: dict[ReuseKey, Any] = {}
        for key, final in zip(keys, finals):
            if key not in entries and key not in missing:
                entry = self.cache.entry(key)
                if entry is None:
                    missing[key] = final
                else:
                    entries[key] = entry
        if missing:  # the default path first, then a teacher-forced pass for its states
            prompts_ = [list(key.prompt) for key in missing]
            gens = self.executor.generate(prompts_, None, finals=list(missing.values()),
                                          max_new_tokens=g.max_new_tokens,
                                          stop_strings=g.stop_strings)
            for key, gen, entry in zip(missing, gens,
                                       self.executor.record_prefixes(prompts_, gens)):
                entries[key] = entry
                self.cache.store_default(key, entry, gen)
        out: list[Any] = [None] * len(keys)
        edited = []
        for i, (key, path) in enumerate(zip(keys, paths)):
            if all(d == 1 for d in path):
                out[i] = default_generation(entries[key], len(path))
            else:
                edited.append(i)
        if edited:
            rows = [self.cache.resume_row(entries[keys[i]], tuple(paths[i]), finals[i])
                    for i in edited]
            resumed, states = self.executor.resume(
                rows, max_new_tokens=g.max_new_tokens, stop_strings=g.stop_strings,
                keep_states=g.reuse_paths)
            for i, row, gen, st in zip(edited, rows, resumed, states):
                out[i] = gen
                self.cache.resumed(keys[i], row, gen, st)
        return out
