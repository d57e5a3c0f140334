"""Which evaluated paths a search keeps, which one is best, and the final :class:`SearchResult`.

Retention rule (paper): keep every evaluated path whose reward is ``>=`` the default path's
reward. Ranking: highest reward, then lowest cost (blocks per forward pass), then earliest
evaluated. The default path is always retained (evaluated first), so when nothing beats it on
reward or cost it is the best path.

Pure Python: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

from drllm.paths import Path
from drllm.types import Evaluation, SearchResult


class Retention:
    """Retained paths of one search, in evaluation order, with the running best.

    Args:
        num_layers: ``L``, blocks in the model.
    """

    def __init__(self, num_layers: int) -> None:
        self._num_layers = num_layers
        self._default: tuple[Path, Evaluation] | None = None
        self._kept: list[tuple[Path, Evaluation]] = []
        self._best: tuple[Path, Evaluation] | None = None

    @property
    def default_reward(self) -> float:
        assert self._default is not None, "default path not evaluated yet"
        return float(self._default[1].reward)

    @property
    def best_cost(self) -> int:
        """Cost of the best retained path so far, blocks per forward pass."""
        assert self._best is not None, "default path not evaluated yet"
        return self._best[0].cost

    def set_default(self, path: Path, evaluation: Evaluation) -> None:
        """Record the default path's outcome; must come before any :meth:`add`."""
        assert self._default is None, "default path recorded twice"
        self._default = (path, evaluation)
        self._kept.append((path, evaluation))
        self._best = (path, evaluation)

    def add(self, path: Path, evaluation: Evaluation) -> None:
        """Record one evaluated non-default path; kept iff its reward ``>=`` the default's."""
        assert self._best is not None, "default path must be recorded first"
        reward = float(evaluation.reward)
        if reward < self.default_reward:
            return
        self._kept.append((path, evaluation))
        best_path, best_eval = self._best
        if (reward, -path.cost) > (float(best_eval.reward), -best_path.cost):
            self._best = (path, evaluation)

    def ranked(self) -> list[tuple[Path, Evaluation]]:
        """Retained paths, best first (reward desc, cost asc, evaluation order)."""
        order = sorted(
            range(len(self._kept)),
            key=lambda i: (-float(self._kept[i][1].reward), self._kept[i][0].cost, i),
        )
        return [self._kept[i] for i in order]

    def to_result(self, evaluations: int, memo_hits: int, stopped_early: bool) -> SearchResult:
        """The :class:`SearchResult`; ``simulations = evaluations + memo_hits``."""
        assert self._default is not None and self._best is not None
        ranked = self.ranked()
        assert ranked[0][0] == self._best[0], "running best disagrees with the ranking"
        default_path, default_eval = self._default
        best_path, best_eval = self._best
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
        )
