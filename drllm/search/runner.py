"""Synchronous length-aware MCTS for one question: the incremental tree with one path in flight.

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

import logging

from drllm.search.config import EvaluateFn, MCTSConfig
from drllm.search.prior import Prior
from drllm.search.tree import SearchTree
from drllm.types import SearchResult

logger = logging.getLogger(__name__)


def run(
    num_layers: int,
    evaluate: EvaluateFn,
    config: MCTSConfig = MCTSConfig(),
    prior: Prior | None = None,
) -> SearchResult:
    """Search the edited paths of a model with ``num_layers`` blocks for one question.

    Built on :class:`SearchTree` with ``ask(1)`` / ``tell`` so it can never diverge from a
    batched driver running the same tree with one path in flight.

    Args:
        num_layers: ``L``, decoder blocks in the model.
        evaluate: generates along a path and grades it; returns an
            :class:`~drllm.types.Evaluation` or a bare float reward. Called once per distinct
            path, the default path first. Exceptions propagate; an evaluator that could not
            produce a reward returns ``Evaluation(..., failed=True)`` (see :class:`SearchTree`).
        config: search knobs.
        prior: expansion order of untried edits (``None``: uniform).

    Raises:
        RuntimeError: the default path's evaluation failed.
    """
    tree = SearchTree(num_layers, config, prior)
    while not tree.done:
        paths = tree.ask(1)
        # Memo hits or an exhausted tree can finish the search without handing out a path.
        assert paths or tree.done, "a synchronous search that is not done must hand out a path"
        for path in paths:
            tree.tell(path, evaluate(path))
    result = tree.result()
    logger.debug(
        "search L=%d: best %s reward %.3g cost %d (default reward %.3g), %d simulations, "
        "%d evaluations (%d failed), %d transpositions, stopped early: %s",
        num_layers,
        result.best_path.to_str(),
        result.best_reward,
        result.best_cost,
        result.default_reward,
        result.simulations,
        result.evaluations,
        result.failed_evaluations,
        result.transposition_hits,
        result.stopped_early,
    )
    return result
