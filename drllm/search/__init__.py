"""Length-aware MCTS over layer paths (skip / execute / repeat per block), one tree per question.

The evaluator is injected (a function, or a driver feeding :meth:`SearchTree.tell`), so this
package knows nothing of models: it imports neither torch, transformers nor ray.

* :class:`MCTSConfig` — the search knobs, paper defaults plus widening / prior / patience,
  validated at construction.
* :func:`run` — synchronous search with an ``evaluate(path)`` callable.
* :class:`SearchTree` — the same search driven incrementally (``ask`` / ``tell``), for drivers
  that batch evaluations across many questions.
* :class:`Prior`, :class:`UniformPrior`, :class:`BlockPrior` — expansion orders of untried
  edits; :func:`prior_from_config` builds the one ``MCTSConfig.prior`` names.
"""

from drllm.search.config import EXPANSIONS, PRIORS, EvaluateFn, MCTSConfig, as_evaluation
from drllm.search.node import EdgeStats, Node, reachable
from drllm.search.policy import selection_order, should_stop_early, ucb_score, widening_limit
from drllm.search.prior import BlockPrior, Prior, UniformPrior, prior_from_config
from drllm.search.results import Retention
from drllm.search.runner import run
from drllm.search.tree import SearchTree

__all__ = [
    "EXPANSIONS",
    "PRIORS",
    "BlockPrior",
    "EdgeStats",
    "EvaluateFn",
    "MCTSConfig",
    "Node",
    "reachable",
    "Prior",
    "Retention",
    "SearchTree",
    "UniformPrior",
    "as_evaluation",
    "prior_from_config",
    "run",
    "selection_order",
    "should_stop_early",
    "ucb_score",
    "widening_limit",
]
