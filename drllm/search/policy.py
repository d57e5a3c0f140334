"""Selection and stopping rules of the length-aware MCTS (pure functions, no tree state).

Selection score of an evaluated child ``j`` of a node with ``N`` visits::

    UCB(j) = mean_reward(j) + c * sqrt(ln N / n_j) - lambda * cost(j) / L

``cost(j)`` is the child's path cost in blocks per forward pass and ``L`` the number of blocks,
so the penalty is ``lambda`` for the default path, less for paths that skip, more for paths that
repeat. The penalty shapes **selection only**: the rewards backpropagated and averaged are raw.

Progressive widening lets a node with ``N`` visits hold at most ``ceil(k * N ** alpha)``
children before selection must descend into one of them (:func:`widening_limit`).

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

import math
import random
from typing import Protocol, Sequence


class ChildStats(Protocol):
    """What selection reads from a tree node."""

    @property
    def visits(self) -> int: ...

    @property
    def reward_sum(self) -> float: ...

    @property
    def cost(self) -> int: ...


def ucb_score(
    reward_sum: float,
    visits: int,
    parent_visits: int,
    cost: int,
    num_layers: int,
    c: float,
    length_penalty: float,
) -> float:
    """Length-aware UCB of one child.

    Args:
        reward_sum: sum of raw rewards backpropagated through the child.
        visits: ``n_j >= 1``, simulations backpropagated through the child (unvisited children
            are never scored: every simulation expands a fresh child and evaluates it).
        parent_visits: ``N >= n_j``, simulations backpropagated through the parent.
        cost: the child's path cost, blocks per forward pass.
        num_layers: ``L``, blocks in the model.
        c: exploration constant.
        length_penalty: ``lambda``.
    """
    assert visits >= 1 and parent_visits >= visits, (visits, parent_visits)
    exploration = c * math.sqrt(math.log(parent_visits) / visits)
    return reward_sum / visits + exploration - length_penalty * cost / num_layers


def selection_order(
    children: Sequence[ChildStats],
    parent_visits: int,
    num_layers: int,
    c: float,
    length_penalty: float,
    epsilon: float,
    rng: random.Random,
) -> list[int]:
    """Indices of ``children`` in the order selection should try them.

    With probability ``epsilon`` (one draw from ``rng`` per call, even if ``epsilon`` is 0, so
    the random stream does not depend on it) a uniformly random child comes first; otherwise the
    UCB argmax does. The rest follow by decreasing UCB; ties go to the earlier child (the one
    expanded first). Later entries only matter when the first one leads nowhere expandable
    right now (its subtree waits on pending evaluations).

    Args:
        children: evaluated, selectable children (each with ``visits >= 1``).
        parent_visits: visits of their parent.
        rng: the tree's RNG.
    """
    if not children:
        return []
    scores = [
        ucb_score(ch.reward_sum, ch.visits, parent_visits, ch.cost, num_layers, c, length_penalty)
        for ch in children
    ]
    order = sorted(range(len(children)), key=lambda i: (-scores[i], i))
    if rng.random() < epsilon:
        pick = rng.randrange(len(children))
        order.remove(pick)
        order.insert(0, pick)
    return order


def widening_limit(visits: int, k: float, alpha: float) -> int:
    """Children a node with ``visits`` simulations through it may hold: ``ceil(k * N^alpha)``.

    At least 1, so a freshly evaluated node (``N = 1``) may always add its first child.
    """
    return max(1, math.ceil(k * max(visits, 1) ** alpha))


def should_stop_early(
    reward: float,
    cost: int,
    num_layers: int,
    default_reward: float,
    best_cost: int,
    success_reward: float,
    margin: int,
) -> bool:
    """The paper's early-stop rule, checked when a new (non-default) path's reward arrives.

    Stop iff the new path is correct (``reward >= success_reward``) and either

    * the default path was wrong (``default_reward < success_reward``), or
    * the new path is strictly cheaper than the cheapest correct path so far
      (``cost < best_cost``, taken *before* this path is added) **and** at least
      ``margin`` blocks cheaper than the default (``cost <= num_layers - margin``).

    The default path's own evaluation never stops the search.

    Args:
        reward: the new path's reward.
        cost: its cost, blocks per forward pass.
        num_layers: ``L`` (the default path's cost).
        default_reward: the default path's reward.
        best_cost: cost of the cheapest correct path before this one (when the default is
            correct: the default itself, ``num_layers``, or a cheaper correct path); only read
            when the default is correct.
        success_reward: reward at or above which a path is correct.
        margin: required saving against the default, in blocks per forward pass.
    """
    if reward < success_reward:
        return False
    if default_reward < success_reward:
        return True
    return cost < best_cost and cost <= num_layers - margin
