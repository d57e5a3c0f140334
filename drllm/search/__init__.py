"""Length-aware MCTS over layer paths (skip / execute / repeat per block), one tree per question.

The evaluator is injected (a function, or a driver feeding :meth:`SearchTree.tell`), so this
package knows nothing of models: it imports neither torch, transformers nor ray.

* :class:`MCTSConfig` — the search knobs, paper defaults, validated at construction.
* :func:`run` — synchronous search with an ``evaluate(path)`` callable.
* :class:`SearchTree` — the same search driven incrementally (``ask`` / ``tell``), for drivers
  that batch evaluations across many questions.
"""

from drllm.search.config import EvaluateFn, MCTSConfig, as_evaluation
from drllm.search.policy import selection_order, should_stop_early, ucb_score
from drllm.search.results import Retention
from drllm.search.runner import run
from drllm.search.tree import Node, SearchTree

__all__ = [
    "EvaluateFn",
    "MCTSConfig",
    "Node",
    "Retention",
    "SearchTree",
    "as_evaluation",
    "run",
    "selection_order",
    "should_stop_early",
    "ucb_score",
]
