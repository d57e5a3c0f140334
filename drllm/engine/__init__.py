"""The evaluator engine: continuous batching of path-edited greedy generation.

One :class:`~drllm.engine.engine.Engine` per evaluator: requests (:mod:`drllm.engine.request`)
enter a waiting queue; every step the scheduler admits waiting rows (prefill, chunked when
long) under a token budget and decodes the running ones, a finished row leaving at once
(:mod:`drllm.engine.batch` joins and drops rows of the running batch). The per-question reuse
cache (default-path states, edited paths' states, drafts) lives behind the engine's
:class:`~drllm.engine.reuse.CacheManager`, keyed by :class:`~drllm.engine.request.ReuseKey`.
"""

from drllm.engine.engine import Engine, EngineStats
from drllm.engine.request import EngineRequest, EngineResult, ReuseKey, Settings

__all__ = ["Engine", "EngineRequest", "EngineResult", "EngineStats", "ReuseKey", "Settings"]
