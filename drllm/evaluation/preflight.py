"""Before the evaluator actors start: check the routers against the model, measure block influence.

One short-lived worker (a Ray task, or this process) loads the model once and

* loads the router checkpoint against it (``L``, ``d`` and optionally the model id), so a
  checkpoint for another model fails here, naming both values, before any actor starts;
* measures the block influence ``1 - cos(h_in, h_out)`` of each dataset's calibration prompts
  (:func:`drllm.models.importance.layer_importance`) for the static ShortGPT baseline.

It runs before the actors so it never competes with them for CPUs or GPUs.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from drllm.models.executor import PathExecutor
from drllm.models.importance import layer_importance
from drllm.models.loading import load_source
from drllm.routers.module import Routers

logger = logging.getLogger(__name__)


def _preflight(model: Any, routers_dir: Optional[str], check_model_id: bool,
               calibration: Sequence[Sequence[str]], device: Optional[str]) -> list[list[float]]:
    loaded = load_source(model, device)
    if routers_dir is not None:
        Routers.from_pretrained(routers_dir, expected_num_layers=loaded.num_layers,
                                expected_hidden_size=loaded.hidden_size,
                                expected_model_id=loaded.model_id if check_model_id else None)
    executor = PathExecutor(loaded.model, loaded.tokenizer)
    return [[float(x) for x in layer_importance(executor, executor.encode(list(prompts)))]
            if prompts else [] for prompts in calibration]


def preflight(model: Any, *, routers_dir: Optional[str] = None, check_model_id: bool = True,
              calibration: Sequence[Sequence[str]] = (), in_process: bool = False,
              use_gpu: bool = False) -> list[list[float]]:
    """Check the routers (if any) and measure influence per prompt set (``[]`` for an empty one).

    Raises:
        drllm.routers.checkpoint.RouterCheckpointError: the routers were trained for another
            model.
    """
    if routers_dir is None and not any(calibration):
        return [[] for _ in calibration]
    args = (model, routers_dir, check_model_id, [list(p) for p in calibration])
    if in_process:
        return _preflight(*args, None)
    import ray

    task = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0, max_retries=0)(_preflight)
    return ray.get(task.remote(*args, "cuda" if use_gpu else None))
