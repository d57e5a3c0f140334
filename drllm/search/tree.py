"""The length-aware MCTS for one question, driven incrementally (ask / tell).

A driver that searches many questions at once keeps one :class:`SearchTree` per question, asks
each for paths to evaluate, batches the requests across trees, and tells each tree its results
in any order. :func:`drllm.search.run` is the same loop with one path in flight.

Simulation ``0`` evaluates the default path (the root). Every later simulation descends from
the root by the length-aware UCB (:mod:`drllm.search.policy`), expands **one** untried edit
(:func:`drllm.paths.legal_actions`, in the order of the :class:`~drllm.search.prior.Prior`),
obtains the new path's reward once and backpropagates it (raw, no length penalty) along the
nodes the simulation traversed. Where it expands depends on ``MCTSConfig.expansion``:

* ``"full"`` (the paper's literal reading): at the first node on the way that has an untried
  edit. Paths are memoized per tree: a path reached again through another order of edits is
  a new node whose simulation completes at once from the memo (a *memo hit*), or waits for
  the same pending result.
* ``"widening"``: a node with ``N`` visits expands only while it has fewer than
  ``ceil(k * N^alpha)`` children, else selection descends into its best child; a node with
  nothing selectable below but untried edits still expands, so the search never stalls. A
  transposition table keeps one node per path: an expansion reaching a path already in the
  tree links that node as a child (a DAG), counts a *transposition hit*, evaluates nothing
  and moves on to the next untried edit without spending a simulation.

With several simulations in flight, nodes whose evaluation is pending are not selectable, and
selection backtracks (next-best UCB child) out of parts that have nothing expandable until
their results arrive. Nodes with no edits left anywhere below are marked exhausted and never
entered again; an exhausted root ends the search before the budget.

A failed evaluation (``Evaluation.failed``) is not a reward: never memoized nor
backpropagated, counted in ``failed_evaluations``; its node is removed (the simulation still
counts against the budget) and the search goes on with other edits. If the root fails the
tree is done at once and :meth:`SearchTree.result` raises.

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

import logging
import numbers

from drllm.paths import LayerPath, check_path
from drllm.search.config import MCTSConfig, as_evaluation
from drllm.search.expansion import Expander, Trail
from drllm.search.node import Node, backpropagate
from drllm.search.policy import should_stop_early
from drllm.search.prior import Prior, UniformPrior
from drllm.search.results import Retention
from drllm.types import Evaluation, SearchResult, TraceEntry

logger = logging.getLogger(__name__)


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

    ``ask`` never hands out a path twice (pending or already evaluated), except a path whose
    evaluation failed and that another expansion reaches again. The budget
    ``config.num_simulations`` counts simulations *started*, the root's and failed ones
    included. ``done`` is true once early stop fired (pending results are then no longer
    needed), once the default path failed, or once the budget is spent or the tree exhausted
    **and** nothing is pending. Results told after early stop are still recorded (memo,
    backpropagation, retained paths) but cannot change ``stopped_early``; ``ask`` returns
    ``[]`` after ``done``.

    Args:
        num_layers: ``L``, decoder blocks in the model.
        config: search knobs.
        prior: expansion order of untried edits (``None``: :class:`UniformPrior`). The tree
            uses this object only; ``config.prior`` just names what a caller should build.
    """

    def __init__(
        self, num_layers: int, config: MCTSConfig = MCTSConfig(), prior: Prior | None = None
    ) -> None:
        if not isinstance(num_layers, numbers.Integral) or isinstance(num_layers, bool):
            raise ValueError(f"num_layers must be an integer, got {num_layers!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1 (decoder blocks), got {num_layers}")
        if not isinstance(config, MCTSConfig):
            raise TypeError(f"config must be an MCTSConfig, got {type(config).__name__}")
        self._num_layers = int(num_layers)
        self._config = config
        reason = check_path(LayerPath.default(self._num_layers), self._num_layers, config.constraints)
        if reason is not None:
            raise ValueError(
                f"the default path of a {self._num_layers}-block model breaks the search "
                f"constraints ({reason}); lower MCTSConfig.min_executed"
            )
        self._prior = self._check_prior(prior)
        self._root = Node(LayerPath.default(self._num_layers))
        self._expander = Expander(self._num_layers, config, self._prior, self._root)
        self._memo: dict[LayerPath, Evaluation] = {}
        self._pending: dict[LayerPath, list[Trail]] = {}
        self._retention = Retention(self._num_layers, config.success_reward)
        self._started = self._evaluations = self._memo_hits = self._failed = 0
        self._prior_hits = 0
        self._depths: list[int] = []
        self._failed_paths: set[LayerPath] = set()
        self._stopped_early = False
        self._wrong_default_kept = False  # improve=False and the default is wrong: no search
        self._default_failure: str | None = None
        self._deadline: int | None = None  # patience: no simulation starts from here on
        self._grace: set[LayerPath] = set()  # paths started during patience
        self._simulation_of: dict[LayerPath, int] = {}  # pending path -> simulation index
        self._trace: list[TraceEntry] = []

    def _check_prior(self, prior: Prior | None) -> Prior:
        if prior is None:  # config.prior is only a name for the caller: no object, uniform
            return UniformPrior()
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a drllm.search.Prior, got {type(prior).__name__}")
        prior.check(self._num_layers)
        return prior

    # ----------------------------------------------------------------- public state
    @property
    def num_layers(self) -> int:
        return self._num_layers

    @property
    def config(self) -> MCTSConfig:
        return self._config

    @property
    def prior(self) -> Prior:
        return self._prior

    @property
    def root(self) -> Node:
        """The root node (default path); read it, do not mutate it."""
        return self._root

    @property
    def pending(self) -> tuple[LayerPath, ...]:
        """Paths handed out by :meth:`ask` and not yet told, in hand-out order."""
        return tuple(self._pending)

    @property
    def simulations_started(self) -> int:
        return self._started

    @property
    def stopped_early(self) -> bool:
        return self._stopped_early

    @property
    def failed_evaluations(self) -> int:
        """Evaluations told with ``failed=True`` so far."""
        return self._failed

    @property
    def transposition_hits(self) -> int:
        return self._expander.transpositions

    @property
    def default_failed(self) -> bool:
        """The default path's evaluation failed: the example cannot be labelled."""
        return self._default_failure is not None

    @property
    def default_failure_reason(self) -> str | None:
        """The failed default evaluation's ``reason`` (``None`` unless it failed)."""
        return self._default_failure

    @property
    def done(self) -> bool:
        """True when no further path will be asked for and no pending result is needed."""
        if self._stopped_early or self.default_failed or self._wrong_default_kept:
            return True
        if not self._root.evaluated:
            return False
        finished = self._started >= self._budget() or self._root.exhausted
        return finished and not self._pending

    def _budget(self) -> int:
        if self._deadline is None:
            return self._config.num_simulations
        return min(self._config.num_simulations, self._deadline)

    # ----------------------------------------------------------------- ask / tell
    def ask(self, k: int = 1) -> list[LayerPath]:
        """Start simulations until ``k`` new paths need evaluating; return those paths.

        Simulations answered by the memo, or waiting on a path already pending, complete or wait
        without handing anything out, so one call may start more than ``k`` simulations (never
        beyond the budget). Returns ``[]`` when done, while the root's reward is pending, or
        while every expandable part of the tree waits on pending results.
        """
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"ask(k) needs an integer k >= 1, got {k!r}")
        if self._stopped_early or self.default_failed or self._wrong_default_kept:
            return []
        if self._started == 0:
            self._started = 1
            self._pending[self._root.path] = [[self._root]]
            self._simulation_of[self._root.path] = 0
            return [self._root.path]
        out: list[LayerPath] = []
        while (
            len(out) < k
            and self._root.evaluated
            and not self._root.exhausted
            and self._started < self._budget()
        ):
            trail = self._expander.select()
            if trail is None:
                break
            child = self._expander.expand(trail[-1])
            if child is None:  # every edit left there led to a node already in the tree
                continue
            self._start(trail + [child], out)
        self._check_patience()
        assert out or self.done or self._pending, "search stalled with nothing pending"
        return out

    def _start(self, trail: Trail, out: list[LayerPath]) -> None:
        """Count a new simulation ending at ``trail[-1]``: memo hit, wait, or hand out."""
        self._started += 1
        path = trail[-1].path
        if self._deadline is not None:
            self._grace.add(path)
        memo = self._memo.get(path)
        if memo is not None:
            self._memo_hits += 1
            backpropagate(trail, float(memo.reward))
        elif path in self._pending:
            self._pending[path].append(trail)
        else:
            self._pending[path] = [trail]
            self._simulation_of[path] = self._started - 1
            out.append(path)

    def tell(self, path: tuple[int, ...], evaluation: Evaluation | float) -> None:
        """Report the outcome of a path handed out by :meth:`ask` (any order).

        A failed :class:`Evaluation` (``failed=True``) is recorded as a failure, not a reward.

        Raises:
            ValueError: ``path`` is not pending (never handed out, or already told), or the
                evaluation is not an :class:`Evaluation` / finite number.
        """
        key = path if isinstance(path, LayerPath) else LayerPath(path)
        if key not in self._pending:
            if key in self._memo:
                state = "was already told"
            elif key in self._failed_paths:
                state = "already failed and is not pending again"
            else:
                state = "was never handed out by ask()"
            raise ValueError(f"tell({key.to_str()}): this path {state} for this tree")
        ev = as_evaluation(evaluation)
        trails = self._pending.pop(key)
        self._trace.append(TraceEntry(key, ev, self._simulation_of.pop(key)))
        if ev.failed:
            self._fail(key, trails, ev)
        else:
            self._record(key, ev, is_root=trails[0][-1] is self._root)
            reward = float(ev.reward)
            backpropagate(trails[0], reward)
            for waiting in trails[1:]:
                self._memo_hits += 1
                backpropagate(waiting, reward)
        self._check_patience()

    def result(self) -> SearchResult:
        """The search outcome so far (final once :attr:`done`).

        ``simulations`` counts completed simulations (``evaluations + memo_hits``); simulations
        abandoned by early stop while pending, and failed ones, are not counted.

        Raises:
            RuntimeError: the default path's reward has not arrived yet, or its evaluation
                failed (the example cannot be labelled and must not be written).
        """
        if self._default_failure is not None:
            raise RuntimeError(
                f"the default path's evaluation failed ({self._default_failure}); this example "
                f"has no reward to compare against and no search result"
            )
        if not self._root.evaluated:
            raise RuntimeError("result() needs the default path's reward; tell it first")
        return self._retention.to_result(
            evaluations=self._evaluations,
            memo_hits=self._memo_hits,
            stopped_early=self._stopped_early,
            failed_evaluations=self._failed,
            evaluated_depths=tuple(self._depths),
            transposition_hits=self._expander.transpositions,
            prior_hits=self._prior_hits,
            trace=tuple(self._trace),
        )

    # ----------------------------------------------------------------- recording
    def _fail(self, path: LayerPath, trails: list[Trail], ev: Evaluation) -> None:
        """A failed evaluation: count it, drop its node(s) so other edits get tried."""
        self._failed += 1
        self._failed_paths.add(path)
        reason = ev.reason or "no reason given"
        if trails[0][-1] is self._root:
            self._default_failure = reason
            logger.warning("default path evaluation failed (%s): search abandoned", reason)
            return
        for trail in trails:
            trail[-1].detach()
            self._expander.forget(trail[-1])
        logger.debug("evaluation of %s failed (%s); node removed", path.to_str(), reason)

    def _record(self, path: LayerPath, ev: Evaluation, is_root: bool) -> None:
        """Memoize a new evaluation, apply the early-stop rule, update the retained paths."""
        self._evaluations += 1
        self._memo[path] = ev
        self._depths.append(path.edits)
        reward = float(ev.reward)
        retention = self._retention
        if is_root:
            retention.set_default(path, ev)
            self._wrong_default_kept = (not self._config.improve
                                        and reward < self._config.success_reward)
            return
        cfg = self._config
        self._prior_hits += int(reward >= cfg.success_reward)
        if (
            cfg.early_stop
            and not self._stopped_early
            and self._deadline is None
            and should_stop_early(
                reward,
                path.cost,
                self._num_layers,
                retention.default_reward,
                retention.cheapest_correct_cost,
                cfg.success_reward,
                cfg.early_stop_margin,
            )
        ):
            if cfg.patience == 0:
                self._stopped_early = True
            else:
                self._deadline = self._started + cfg.patience
            logger.debug(
                "early stop %s after %d simulations: %s reward %.3g cost %d (default %.3g)",
                "now" if cfg.patience == 0 else f"after {cfg.patience} more",
                self._started,
                path.to_str(),
                reward,
                path.cost,
                retention.default_reward,
            )
        retention.add(path, ev)

    def _check_patience(self) -> None:
        """Fire a deferred early stop once the patience simulations started and finished."""
        if self._deadline is None or self._stopped_early:
            return
        if self._started >= self._deadline and not any(p in self._pending for p in self._grace):
            self._stopped_early = True
