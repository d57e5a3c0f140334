"""Which evaluated paths a search keeps, which one is its label, and the :class:`SearchResult`.

Labels (DESIGN.md "Labels"). An example is **solved** when the default path or some evaluated
path reaches the success reward (``reward >= success_reward``).

* Solved: ``good_paths`` holds only correct paths whose reward is ``>=`` the default path's,
  ranked highest reward, then lowest cost (blocks per forward pass), then earliest evaluated;
  the best path (the label) is the first of them. When the default is correct it is one of
  them, so the label is the default or a correct path at least as good.
* Unsolved: the label is the default path with its own reward and response, ``good_paths`` is
  empty, ``layers_saved`` is 0 and ``improved`` is false. A cheaper *wrong* path is never a
  label: it would teach routers to skip blocks on the questions the model cannot answer.

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

from drllm.paths import LayerPath
from drllm.types import Evaluation, SearchResult, TraceEntry


class Retention:
    """Correct paths of one search, in evaluation order, with the running best.

    Args:
        num_layers: ``L``, blocks in the model.
        success_reward: reward at or above which a path is correct.
    """

    def __init__(self, num_layers: int, success_reward: float = 1.0) -> None:
        self._num_layers = num_layers
        self._success = float(success_reward)
        self._default: tuple[LayerPath, Evaluation] | None = None
        self._kept: list[tuple[LayerPath, Evaluation]] = []
        self._best: tuple[LayerPath, Evaluation] | None = None
        self._cheapest_correct: int | None = None

    @property
    def default_reward(self) -> float:
        assert self._default is not None, "default path not evaluated yet"
        return float(self._default[1].reward)

    @property
    def solved(self) -> bool:
        """Some evaluated path (the default included) reached the success reward."""
        return self._cheapest_correct is not None

    @property
    def best_cost(self) -> int:
        """Cost of the current label, blocks per forward pass (the default's while unsolved)."""
        assert self._best is not None, "default path not evaluated yet"
        return self._best[0].cost

    @property
    def cheapest_correct_cost(self) -> int:
        """Cost of the cheapest correct path so far (``L``, the default's, if none is).

        This is what the early-stop rule compares a new correct path against: when the default
        is correct it is the default's cost or that of a cheaper correct path.
        """
        assert self._default is not None, "default path not evaluated yet"
        if self._cheapest_correct is None:
            return self._default[0].cost
        return self._cheapest_correct

    def set_default(self, path: LayerPath, evaluation: Evaluation) -> None:
        """Record the default path's outcome; must come before any :meth:`add`."""
        assert self._default is None, "default path recorded twice"
        self._default = (path, evaluation)
        self._best = (path, evaluation)
        self._keep_if_correct(path, evaluation)

    def add(self, path: LayerPath, evaluation: Evaluation) -> None:
        """Record one evaluated non-default path; kept iff correct and ``>=`` the default."""
        assert self._best is not None, "default path must be recorded first"
        if float(evaluation.reward) < self.default_reward:
            return
        self._keep_if_correct(path, evaluation)

    def _keep_if_correct(self, path: LayerPath, evaluation: Evaluation) -> None:
        reward = float(evaluation.reward)
        if reward < self._success:
            return
        assert self._best is not None
        first = not self._kept
        self._kept.append((path, evaluation))
        if self._cheapest_correct is None or path.cost < self._cheapest_correct:
            self._cheapest_correct = path.cost
        best_path, best_eval = self._best
        if first or (reward, -path.cost) > (float(best_eval.reward), -best_path.cost):
            self._best = (path, evaluation)

    def ranked(self) -> list[tuple[LayerPath, Evaluation]]:
        """Retained (correct) paths, best first (reward desc, cost asc, evaluation order)."""
        order = sorted(
            range(len(self._kept)),
            key=lambda i: (-float(self._kept[i][1].reward), self._kept[i][0].cost, i),
        )
        return [self._kept[i] for i in order]

    def to_result(
        self,
        evaluations: int,
        memo_hits: int,
        stopped_early: bool,
        failed_evaluations: int = 0,
        evaluated_depths: tuple[int, ...] = (),
        transposition_hits: int = 0,
        prior_hits: int = 0,
        trace: tuple[TraceEntry, ...] = (),
    ) -> SearchResult:
        """The :class:`SearchResult`; ``simulations = evaluations + memo_hits``.

        Args:
            evaluations: distinct paths evaluated successfully (failures excluded).
            memo_hits: simulations answered from the memo.
            stopped_early: whether the early-stop rule ended the search.
            failed_evaluations: evaluations that failed (not rewards).
            evaluated_depths: edits from the default of every evaluated path, in order.
            transposition_hits: expansions joined to a node already in the tree.
            prior_hits: expansions whose new path was correct.
            trace: every evaluated path, in the order results arrived.
        """
        assert self._default is not None and self._best is not None
        ranked = self.ranked()
        assert not ranked or ranked[0][0] == self._best[0], "running best disagrees with ranking"
        default_path, default_eval = self._default
        best_path, best_eval = self._best
        assert ranked or best_path == default_path, "an unsolved search's label is the default"
        return SearchResult(
            num_layers=self._num_layers,
            default_path=default_path,
            default_reward=float(default_eval.reward),
            default_response=default_eval.response,
            best_path=best_path,
            best_reward=float(best_eval.reward),
            best_response=best_eval.response,
            best_cost=best_path.cost,
            layers_saved=self._num_layers - best_path.cost,
            improved=float(best_eval.reward) > float(default_eval.reward),
            good_paths=tuple(p for p, _ in ranked),
            good_rewards=tuple(float(e.reward) for _, e in ranked),
            simulations=evaluations + memo_hits,
            evaluations=evaluations,
            memo_hits=memo_hits,
            stopped_early=stopped_early,
            solved=self.solved,
            failed_evaluations=failed_evaluations,
            evaluated_depths=tuple(evaluated_depths),
            transposition_hits=transposition_hits,
            prior_hits=prior_hits,
            trace=tuple(trace),
        )
