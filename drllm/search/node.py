"""Nodes of the search graph, their edge statistics and backpropagation along a traversal.

With a transposition table (``expansion: widening``) one node stands for one path, and a node
reached through another order of edits is linked as a child of every parent that reaches it,
so the tree is a DAG (acyclic: every edit turns an executed block into a skip or a repeat,
never back). Statistics therefore live on both nodes and edges:

* ``node.visits`` / ``node.reward_sum``: simulations that traversed the node (through any
  parent), and the sum of their raw rewards. A node's own evaluation is one of them.
* ``parent.edge_visits[i]`` / ``parent.edge_reward_sums[i]``: simulations that went from
  ``parent`` into ``parent.children[i]``.

Selection scores a child by the node's mean (information shared by all its parents) with the
edge count as ``n`` in the exploration term; a link made by a transposition counts as one
virtual edge visit, as if the child had just been expanded there. In a plain tree (one parent
per node, ``expansion: full``) the edge statistics equal the child's, so this is the usual UCB.

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import pairwise
from typing import Sequence

from drllm.paths import Action, LayerPath

logger = logging.getLogger(__name__)


class Node:
    """One path in the search graph.

    Attributes:
        path: the node's path (the creating parent's path with ``action`` applied).
        action: the edit that created it (``None`` for the root).
        parent: the node it was first expanded from (``None`` for the root).
        parents: every node it is a child of (``parent`` and transposition links).
        cost: ``sum(path)``, blocks per forward pass.
        children: children (expanded or linked), in the order they were added.
        edge_visits: per child, simulations that went from this node into it.
        edge_reward_sums: per child, the sum of those simulations' raw rewards.
        linked: per child, whether it joined by a transposition (one virtual edge visit).
        untried: edits not yet expanded, popped from the end (``None`` until selection first
            reaches the node; then the legal edits in the prior's order, reversed).
        visits: simulations that traversed this node.
        reward_sum: sum of their raw rewards.
        evaluated: the node's own reward has arrived (selectable from then on).
        exhausted: no untried edit anywhere below (never selected again).
    """

    __slots__ = (
        "path",
        "action",
        "parent",
        "parents",
        "cost",
        "children",
        "edge_visits",
        "edge_reward_sums",
        "linked",
        "untried",
        "visits",
        "reward_sum",
        "evaluated",
        "exhausted",
    )

    def __init__(self, path: LayerPath, action: Action | None = None, parent: Node | None = None):
        self.path = path
        self.action = action
        self.parent = parent
        self.parents: list[Node] = []
        self.cost = path.cost
        self.children: list[Node] = []
        self.edge_visits: list[int] = []
        self.edge_reward_sums: list[float] = []
        self.linked: list[bool] = []
        self.untried: list[Action] | None = None
        self.visits = 0
        self.reward_sum = 0.0
        self.evaluated = False
        self.exhausted = False

    @property
    def mean_reward(self) -> float:
        """Average raw reward of the simulations through this node (0 before any)."""
        return self.reward_sum / self.visits if self.visits else 0.0

    def add_child(self, child: Node, linked: bool = False) -> None:
        """Append ``child`` (``linked``: joined by a transposition, not expanded here)."""
        self.children.append(child)
        self.edge_visits.append(0)
        self.edge_reward_sums.append(0.0)
        self.linked.append(linked)
        child.parents.append(self)

    def child_index(self, child: Node) -> int:
        """Position of ``child`` (by identity) in :attr:`children`."""
        for i, candidate in enumerate(self.children):
            if candidate is child:
                return i
        raise AssertionError(f"{child!r} is not a child of {self!r}")

    def remove_child(self, child: Node) -> None:
        """Drop ``child`` and its edge (a failed, never evaluated node)."""
        i = self.child_index(child)
        for column in (self.children, self.edge_visits, self.edge_reward_sums, self.linked):
            del column[i]
        child.parents.remove(self)

    def detach(self) -> None:
        """Remove this node from every parent (its evaluation failed; it has no children)."""
        assert not self.children and not self.evaluated, "only a failed pending node detaches"
        for parent in list(self.parents):
            parent.remove_child(self)

    def selection_stats(self, children: Sequence[Node]) -> list["Node | EdgeStats"]:
        """What selection scores for each of ``children`` (evaluated children of this node).

        A child entered only through this edge is scored by its own statistics (exactly the
        plain-tree UCB); a shared child by its mean reward with this edge's count (real
        traversals plus one virtual visit for a transposition link) as ``n``.
        """
        out: list[Node | EdgeStats] = []
        for child in children:
            i = self.child_index(child)
            n = self.edge_visits[i] + int(self.linked[i])
            if n == child.visits:
                out.append(child)
            else:
                out.append(EdgeStats(n, child.mean_reward * n, child.cost))
        return out

    def __repr__(self) -> str:
        return (
            f"Node({self.path.to_str()}, visits={self.visits}, mean={self.mean_reward:.3f}, "
            f"children={len(self.children)})"
        )


@dataclass(frozen=True)
class EdgeStats:
    """A shared child as selection sees it from one parent (``ChildStats``).

    Attributes:
        visits: edge count ``n >= 1`` (a transposition link counts one virtual visit).
        reward_sum: the child's mean reward times ``n``.
        cost: the child's cost, blocks per forward pass.
    """

    visits: int
    reward_sum: float
    cost: int


def backpropagate(trail: Sequence[Node], reward: float) -> None:
    """Complete one simulation: mark its last node evaluated, add one visit and the raw
    ``reward`` to every node **and edge** it traversed (root first), not to other parents."""
    trail[-1].evaluated = True
    for node in reversed(trail):
        node.visits += 1
        node.reward_sum += reward
    for parent, child in pairwise(trail):
        i = parent.child_index(child)
        parent.edge_visits[i] += 1
        parent.edge_reward_sums[i] += reward


def reachable(root: Node) -> list[Node]:
    """Every node reachable from ``root`` through ``children``, once each (depth-first).

    Under widening the tree is a DAG (a node can have several parents), so a plain recursive
    walk would visit shared nodes more than once.
    """
    out: list[Node] = []
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        out.append(node)
        stack.extend(node.children)
    return out
