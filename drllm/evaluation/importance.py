"""Block influence for the static ShortGPT baseline, measured in one short-lived worker.

Runs :func:`drllm.models.importance.layer_importance` (``1 - cos(h_in, h_out)`` per block over
calibration prompts, default path) in a Ray task (or in this process), before the evaluator
actors start, so it never competes with them for CPUs or GPUs.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from drllm.models.executor import PathExecutor
from drllm.models.importance import layer_importance
from drllm.models.loading import load_source

logger = logging.getLogger(__name__)


def _measure(model: Any, prompts: Sequence[str], device: Optional[str]) -> list[float]:
    loaded = load_source(model, device)
    executor = PathExecutor(loaded.model, loaded.tokenizer)
    return [float(x) for x in layer_importance(executor, executor.encode(list(prompts)))]


def measure_importance(model: Any, prompts: Sequence[str], *, in_process: bool = False,
                       use_gpu: bool = False) -> list[float]:
    """Per-block influence (length L) of ``model`` (a ``ModelSource``) over rendered prompts."""
    if not prompts:
        raise ValueError("the block-influence measurement needs at least one prompt")
    if in_process:
        return _measure(model, prompts, None)
    import ray

    task = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0)(_measure)
    return ray.get(task.remote(model, list(prompts), "cuda" if use_gpu else None))
