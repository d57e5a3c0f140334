"""The length-aware MCTS tree for one question, driven incrementally (ask / tell).

A driver that searches many questions at once keeps one :class:`SearchTree` per question, asks
each for paths to evaluate, batches the requests across trees, and tells each tree its results
in any order. :func:`drllm.search.run` is the same loop with one path in flight.

Simulation ``0`` evaluates the default path (the root). Every later simulation descends from
the root through fully expanded nodes by the length-aware UCB (:mod:`drllm.search.policy`),
expands **one** untried edit (:func:`drllm.paths.legal_actions`) at the first node that has one,
obtains the new path's reward once and backpropagates it (raw, no length penalty) to the root.

Rewards are memoized per tree: a path reached again through another order of edits is not
evaluated again; its simulation completes at once from the memo (a *memo hit*). A path that is
already handed out and pending is not handed out twice either: the new node waits for the same
result and completes as a memo hit when it arrives.

With several simulations in flight, nodes whose evaluation is pending are not selectable, and
selection backtracks (next-best UCB child) out of subtrees that have nothing expandable until
their results arrive. Subtrees with no edits left anywhere are marked exhausted and never
entered again; an exhausted root ends the search before the budget.

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

import logging
import numbers
import random

from drllm.paths import Action, Path, check_path, legal_actions
from drllm.search.config import MCTSConfig, as_evaluation
from drllm.search.policy import selection_order, should_stop_early
from drllm.search.results import Retention
from drllm.types import Evaluation, SearchResult

logger = logging.getLogger(__name__)


class Node:
    """One path in the tree.

    Attributes:
        path: the node's path (the parent's path with ``action`` applied).
        action: the edit that created it (``None`` for the root).
        parent: parent node (``None`` for the root).
        cost: ``sum(path)``, blocks per forward pass.
        children: expanded children, in expansion order.
        untried: edits not yet expanded, popped from the end (``None`` until selection first
            reaches the node; then the legal edits in a seeded random order).
        visits: simulations backpropagated through this node.
        reward_sum: sum of their raw rewards.
        evaluated: the node's own reward has arrived (selectable from then on).
        exhausted: no untried edit anywhere in the subtree (never selected again).
    """

    __slots__ = (
        "path",
        "action",
        "parent",
        "cost",
        "children",
        "untried",
        "visits",
        "reward_sum",
        "evaluated",
        "exhausted",
    )

    def __init__(self, path: Path, action: Action | None = None, parent: Node | None = None):
        self.path = path
        self.action = action
        self.parent = parent
        self.cost = path.cost
        self.children: list[Node] = []
        self.untried: list[Action] | None = None
        self.visits = 0
        self.reward_sum = 0.0
        self.evaluated = False
        self.exhausted = False

    @property
    def mean_reward(self) -> float:
        """Average raw reward of the simulations through this node (0 before any)."""
        return self.reward_sum / self.visits if self.visits else 0.0

    def __repr__(self) -> str:
        return (
            f"Node({self.path.to_str()}, visits={self.visits}, mean={self.mean_reward:.3f}, "
            f"children={len(self.children)})"
        )


class SearchTree:
    """Incremental length-aware MCTS over the paths of one question.

    Usage::

        tree = SearchTree(num_layers, config)
        while not tree.done:
            for path in tree.ask(k):          # may be [] while results are pending
                submit(path)
            for path, evaluation in finished():
                tree.tell(path, evaluation)   # any order
        result = tree.result()

    ``ask`` never hands out a path twice (pending or already evaluated). The budget
    ``config.num_simulations`` counts simulations *started*, the root's included. ``done`` is
    true once early stop fired (pending results are then no longer needed), or once the budget is
    spent or the tree exhausted **and** nothing is pending. Results told after early stop are
    still recorded (memo, backpropagation, retained paths) but cannot change
    ``stopped_early``; ``ask`` returns ``[]`` after ``done``.
    """

    def __init__(self, num_layers: int, config: MCTSConfig = MCTSConfig()) -> None:
        if not isinstance(num_layers, numbers.Integral) or isinstance(num_layers, bool):
            raise ValueError(f"num_layers must be an integer, got {num_layers!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1 (decoder blocks), got {num_layers}")
        if not isinstance(config, MCTSConfig):
            raise TypeError(f"config must be an MCTSConfig, got {type(config).__name__}")
        self._num_layers = int(num_layers)
        self._config = config
        self._constraints = config.constraints
        reason = check_path(Path.default(self._num_layers), self._num_layers, self._constraints)
        if reason is not None:
            raise ValueError(
                f"the default path of a {self._num_layers}-block model breaks the search "
                f"constraints ({reason}); lower MCTSConfig.min_executed"
            )
        self._rng = random.Random(config.seed)
        self._root = Node(Path.default(self._num_layers))
        self._memo: dict[Path, Evaluation] = {}
        self._pending: dict[Path, list[Node]] = {}
        self._retention = Retention(self._num_layers)
        self._started = 0
        self._evaluations = 0
        self._memo_hits = 0
        self._stopped_early = False

    # ----------------------------------------------------------------- public state
    @property
    def num_layers(self) -> int:
        return self._num_layers

    @property
    def config(self) -> MCTSConfig:
        return self._config

    @property
    def root(self) -> Node:
        """The root node (default path); read it, do not mutate it."""
        return self._root

    @property
    def pending(self) -> tuple[Path, ...]:
        """Paths handed out by :meth:`ask` and not yet told, in hand-out order."""
        return tuple(self._pending)

    @property
    def simulations_started(self) -> int:
        return self._started

    @property
    def stopped_early(self) -> bool:
        return self._stopped_early

    @property
    def done(self) -> bool:
        """True when no further path will be asked for and no pending result is needed."""
        if self._stopped_early:
            return True
        if not self._root.evaluated:
            return False
        finished = self._started >= self._config.num_simulations or self._root.exhausted
        return finished and not self._pending

    # ----------------------------------------------------------------- ask / tell
    def ask(self, k: int = 1) -> list[Path]:
        """Start simulations until ``k`` new paths need evaluating; return those paths.

        Simulations answered by the memo, or waiting on a path already pending, complete or wait
        without handing anything out, so one call may start more than ``k`` simulations (never
        beyond the budget). Returns ``[]`` when done, while the root's reward is pending, or
        while every expandable subtree waits on pending results.
        """
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"ask(k) needs an integer k >= 1, got {k!r}")
        if self._stopped_early:
            return []
        if self._started == 0:
            self._started = 1
            self._pending[self._root.path] = [self._root]
            return [self._root.path]
        out: list[Path] = []
        while (
            len(out) < k
            and self._root.evaluated
            and not self._root.exhausted
            and self._started < self._config.num_simulations
        ):
            leaf = self._find_expandable(self._root)
            if leaf is None:
                break
            child = self._expand(leaf)
            self._started += 1
            memo = self._memo.get(child.path)
            if memo is not None:
                self._memo_hits += 1
                self._backpropagate(child, float(memo.reward))
            elif child.path in self._pending:
                self._pending[child.path].append(child)
            else:
                self._pending[child.path] = [child]
                out.append(child.path)
        assert out or self.done or self._pending, "search stalled with nothing pending"
        return out

    def tell(self, path: tuple[int, ...], evaluation: Evaluation | float) -> None:
        """Report the outcome of a path handed out by :meth:`ask` (any order).

        Raises:
            ValueError: ``path`` is not pending (never handed out, or already told), or the
                evaluation is not an :class:`Evaluation` / finite number.
        """
        key = path if isinstance(path, Path) else Path(path)
        if key not in self._pending:
            state = "was already told" if key in self._memo else "was never handed out by ask()"
            raise ValueError(f"tell({key.to_str()}): this path {state} for this tree")
        ev = as_evaluation(evaluation)
        nodes = self._pending.pop(key)
        self._record(nodes[0].path, ev, is_root=nodes[0] is self._root)
        reward = float(ev.reward)
        self._backpropagate(nodes[0], reward)
        for waiting in nodes[1:]:
            self._memo_hits += 1
            self._backpropagate(waiting, reward)

    def result(self) -> SearchResult:
        """The search outcome so far (final once :attr:`done`).

        ``simulations`` counts completed simulations (``evaluations + memo_hits``); simulations
        abandoned by early stop while pending are not counted.

        Raises:
            RuntimeError: the default path's reward has not arrived yet.
        """
        if not self._root.evaluated:
            raise RuntimeError("result() needs the default path's reward; tell it first")
        return self._retention.to_result(
            evaluations=self._evaluations,
            memo_hits=self._memo_hits,
            stopped_early=self._stopped_early,
        )

    # ----------------------------------------------------------------- internals
    def _record(self, path: Path, ev: Evaluation, is_root: bool) -> None:
        """Memoize a new evaluation, apply the early-stop rule, update the retained paths."""
        self._evaluations += 1
        self._memo[path] = ev
        reward = float(ev.reward)
        retention = self._retention
        if is_root:
            retention.set_default(path, ev)
            return
        cfg = self._config
        if (
            cfg.early_stop
            and not self._stopped_early
            and should_stop_early(
                reward,
                path.cost,
                self._num_layers,
                retention.default_reward,
                retention.best_cost,
                cfg.success_reward,
                cfg.early_stop_margin,
            )
        ):
            self._stopped_early = True
            logger.debug(
                "early stop after %d simulations: %s reward %.3g cost %d (default reward %.3g)",
                self._started,
                path.to_str(),
                reward,
                path.cost,
                retention.default_reward,
            )
        retention.add(path, ev)

    def _find_expandable(self, node: Node) -> Node | None:
        """The node where this simulation expands, or ``None`` if nothing is expandable now.

        Depth-first in selection order: a node with untried edits is the answer; otherwise try
        its evaluated, non-exhausted children best-first (UCB, epsilon-random first pick).
        """
        if node.untried is None:
            node.untried = legal_actions(node.path, self._constraints)
            self._rng.shuffle(node.untried)
        if node.untried:
            return node
        cfg = self._config
        candidates = [ch for ch in node.children if ch.evaluated and not ch.exhausted]
        order = selection_order(
            candidates,
            node.visits,
            self._num_layers,
            cfg.c,
            cfg.length_penalty,
            cfg.epsilon,
            self._rng,
        )
        for index in order:
            found = self._find_expandable(candidates[index])
            if found is not None:
                return found
        if all(ch.exhausted for ch in node.children):
            node.exhausted = True
        return None

    def _expand(self, node: Node) -> Node:
        assert node.untried, "expanding a node without untried edits"
        action = node.untried.pop()
        child = Node(action.apply(node.path), action, node)
        node.children.append(child)
        return child

    @staticmethod
    def _backpropagate(node: Node, reward: float) -> None:
        """Mark ``node`` evaluated and add one visit and the raw ``reward`` up to the root."""
        node.evaluated = True
        current: Node | None = node
        while current is not None:
            current.visits += 1
            current.reward_sum += reward
            current = current.parent
