"""Expansion priors of the search trees, built from the frozen model before the search starts.

``MCTSConfig.prior`` names the prior; the trees themselves (pure Python) take a
:class:`~drllm.search.prior.Prior` object. This module makes that object:

* ``uniform`` -- ``None`` (each tree's seeded shuffle);
* ``layer_importance`` -- one :class:`BlockPrior` for every example, from the block influence
  ``1 - cos(h_in, h_out)`` measured once on the rendered prompts of the first
  ``calibration_examples`` examples (low-influence blocks are tried as skips first);
* ``router`` -- one :class:`BlockPrior` per example, from a trained router checkpoint's
  probabilities along that example's default path.

The model is loaded in one Ray task (or in this process without Ray), used, and released; the
evaluator actors are not involved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from drllm.checks import check_int
from drllm.search import MCTSConfig
from drllm.search.prior import Prior, prior_from_config
from drllm.types import Example

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class PriorSource:
    """What the search's expansion prior (``MCTSConfig.prior``) is built from.

    Attributes:
        checkpoint: ``prior=router``: a router checkpoint directory (``Routers.save_pretrained``).
        calibration_examples: ``prior=layer_importance``: prompts the block influence is
            measured on (the first ones of the dataset).
    """

    checkpoint: Optional[str] = None
    calibration_examples: int = 32

    def __post_init__(self) -> None:
        check_int("PriorSource", "calibration_examples", self.calibration_examples, 1)
        if self.checkpoint is not None and (not isinstance(self.checkpoint, str)
                                            or not self.checkpoint):
            raise ValueError(f"PriorSource.checkpoint must be None or a non-empty path, "
                             f"got {self.checkpoint!r}")


@dataclass(frozen=True)
class PriorPlan:
    """The prior of every tree, and what it was built from (for the run summary).

    Attributes:
        name: ``MCTSConfig.prior``.
        per_example: example id -> prior (``router``); empty otherwise.
        shared: the prior of every tree (``layer_importance``), ``None`` for uniform.
        importance: measured block influence per block (``layer_importance``), length L.
        calibration_examples: prompts the measurement read.
    """

    name: str = "uniform"
    per_example: dict[str, Prior] = field(default_factory=dict)
    shared: Optional[Prior] = None
    importance: tuple[float, ...] = ()
    calibration_examples: int = 0

    def __call__(self, example: Example) -> Optional[Prior]:
        return self.per_example.get(str(example.id), self.shared)

    def describe(self) -> dict[str, Any]:
        return {"prior": self.name, "importance": list(self.importance),
                "calibration_examples": self.calibration_examples,
                "per_example_priors": len(self.per_example)}


def _measure(model_spec: Any, prompts: Sequence[str], routers_dir: Optional[str]) -> Any:
    """Load the model, tokenize, measure: importance ``[L]`` or router probs ``[N][L][3]``."""
    from drllm.models.executor import PathExecutor
    from drllm.models.importance import layer_importance
    from drllm.models.loading import load_model

    loaded = load_model(model_spec)
    executor = PathExecutor(loaded.model, loaded.tokenizer)
    ids = executor.encode(list(prompts))
    if routers_dir is None:
        return layer_importance(executor, ids)
    from drllm.inference.router_probs import router_path_probs

    return router_path_probs(routers_dir, loaded, ids)


def _run(fn: Callable[..., Any], model_spec: Any, *args: Any, in_process: bool) -> Any:
    if in_process:
        return fn(model_spec, *args)
    import ray

    gpus = 1 if str(model_spec.device).startswith("cuda") else 0
    return ray.get(ray.remote(num_cpus=1, num_gpus=gpus)(fn).remote(model_spec, *args))


def build_prior_plan(
    mcts: MCTSConfig,
    examples: Sequence[Example],
    render: Callable[[Example], str],
    *,
    model_spec: Any,
    routers_dir: Optional[str] = None,
    calibration_examples: int = 32,
    in_process: bool = False,
) -> PriorPlan:
    """The :class:`PriorPlan` for ``mcts.prior`` over ``examples``.

    Raises:
        ValueError: ``router`` without ``routers_dir``, or no examples (the name itself is
            validated by :class:`MCTSConfig`).
    """
    name = mcts.prior
    if name == "uniform":
        return PriorPlan()
    if not examples:
        raise ValueError(f"the {name} prior needs examples to measure")
    if name == "layer_importance":
        chosen = list(examples[:calibration_examples])
        importance = _run(_measure, model_spec, [render(e) for e in chosen], None,
                          in_process=in_process)
        prior = prior_from_config(name, mcts.prior_temperature, importance=importance)
        return PriorPlan(name, shared=prior, importance=tuple(float(x) for x in importance),
                         calibration_examples=len(chosen))
    if not routers_dir:
        raise ValueError("search.prior=router needs prior.checkpoint=<routers dir> "
                         "(a drllm.jobs.train checkpoint for this model)")
    probs = _run(_measure, model_spec, [render(e) for e in examples], routers_dir,
                 in_process=in_process)
    per_example = {str(e.id): prior_from_config(name, mcts.prior_temperature, router_probs=p)
                   for e, p in zip(examples, probs, strict=True)}
    return PriorPlan(name, per_example=per_example, calibration_examples=len(examples))
