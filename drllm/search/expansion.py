"""Where a simulation grows the tree: selection down the graph, then one expansion.

``full`` (the paper's literal reading) expands at the first node on the way with an untried
edit. ``widening`` expands at a node only while it has fewer than ``ceil(k * N^alpha)``
children (:func:`~drllm.search.policy.widening_limit`), else descends into its best child by
the length-aware UCB; a node with nothing selectable below but untried edits still expands,
so the search never stalls. Untried edits come in the :class:`~drllm.search.prior.Prior`'s
order. Under ``widening`` a transposition table keeps one node per path: an edit reaching a
path already in the graph links that node as a child instead of creating one.

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

import logging
import random

from drllm.paths import Action, LayerPath, legal_actions
from drllm.search.config import MCTSConfig
from drllm.search.node import Node
from drllm.search.policy import selection_order, widening_limit
from drllm.search.prior import BlockPrior, Prior, UniformPrior

logger = logging.getLogger(__name__)

_CHECKED_PRIORS = (UniformPrior, BlockPrior)
"""Priors whose ``order`` is a permutation by construction (and tested so); another prior's
order is checked at every node."""

Trail = list[Node]
"""The nodes one simulation traversed, root first, ending at its expanded node."""


class Expander:
    """Selection and expansion of one tree (owns the RNG and the transposition table).

    Args:
        num_layers: ``L``, blocks in the model.
        config: the search knobs (``expansion``, ``widen_k``, ``widen_alpha``, UCB constants).
        prior: order of each node's untried edits.
        root: the root node (default path).
    """

    def __init__(self, num_layers: int, config: MCTSConfig, prior: Prior, root: Node) -> None:
        self._num_layers = num_layers
        self._config = config
        self._constraints = config.constraints
        self._prior = prior
        self._widening = config.expansion == "widening"
        self._rng = random.Random(config.seed)
        self._table: dict[LayerPath, Node] = {root.path: root}
        self.root = root
        self.transpositions = 0
        """Expansions that reached a path already in the graph (linked, not created)."""

    def select(self) -> Trail | None:
        """The nodes this simulation traverses down to where it expands, or ``None`` if
        nothing is expandable right now (everything waits on pending results, or is
        exhausted)."""
        return self._descend(self.root, [self.root], set())

    def forget(self, node: Node) -> None:
        """Drop a failed node from the transposition table (its path may be reached again)."""
        if self._table.get(node.path) is node:
            del self._table[node.path]

    def _descend(self, node: Node, trail: Trail, dead: set[int]) -> Trail | None:
        """Depth-first in selection order from ``node`` (the end of ``trail``).

        ``node`` expands if it has an untried edit and may widen (``full``: always); otherwise
        its evaluated, non-exhausted children are tried best-first (UCB, epsilon-random first
        pick); if none leads anywhere, ``node`` still expands if it has an untried edit.
        ``dead`` holds nodes already found to lead nowhere during this selection (a DAG
        reaches a node through several parents).
        """
        if node.untried is None:
            node.untried = self._untried(node)
        if node.untried and self._may_widen(node):
            return trail
        cfg = self._config
        candidates = [
            ch for ch in node.children if ch.evaluated and not ch.exhausted and id(ch) not in dead
        ]
        order = selection_order(
            node.selection_stats(candidates),
            node.visits,
            self._num_layers,
            cfg.c,
            cfg.length_penalty,
            cfg.epsilon,
            self._rng,
        )
        for index in order:
            child = candidates[index]
            found = self._descend(child, trail + [child], dead)
            if found is not None:
                return found
        if node.untried:
            return trail
        if all(ch.exhausted for ch in node.children):
            node.exhausted = True
        dead.add(id(node))
        return None

    def _may_widen(self, node: Node) -> bool:
        if not self._widening:
            return True
        cfg = self._config
        return len(node.children) < widening_limit(node.visits, cfg.widen_k, cfg.widen_alpha)

    def _untried(self, node: Node) -> list[Action]:
        """The node's legal edits in the prior's order, reversed (popped from the end)."""
        actions = legal_actions(node.path, self._constraints)
        ordered = list(self._prior.order(node.path, list(actions), self._rng))
        if type(self._prior) in _CHECKED_PRIORS:  # tested to permute: skip the check
            ordered.reverse()
            return ordered
        if len(ordered) != len(actions) or (
            # the same objects reordered is a permutation; else compare by value (hashing
            # ~90 Actions per node costs more than the rest of _untried)
            {id(a) for a in ordered} != {id(a) for a in actions}
            and set(ordered) != set(actions)
        ):
            raise ValueError(
                f"{self._prior!r}.order() must return a permutation of the {len(actions)} "
                f"legal edits of {node.path.to_str()}, got {len(ordered)} edits"
            )
        ordered.reverse()
        return ordered

    def expand(self, node: Node) -> Node | None:
        """Add one new child of ``node`` from its untried edits; ``None`` if every remaining
        edit reached a path already in the graph (widening: linked as transpositions)."""
        assert node.untried, "expanding a node without untried edits"
        while node.untried:
            action = node.untried.pop()
            path = action.apply(node.path)
            existing = self._table.get(path) if self._widening else None
            if existing is None:
                child = Node(path, action, node)
                node.add_child(child)
                if self._widening:
                    self._table[path] = child
                return child
            node.add_child(existing, linked=True)
            self.transpositions += 1
        return None
