"""Synchronous MCTS on injected reward functions whose best paths are known."""

from __future__ import annotations

from typing import Callable

import pytest

from drllm.paths import Path, check_path, legal_actions
from drllm.search import MCTSConfig, SearchTree, run
from drllm.types import Evaluation

SEEDS = range(5)


class Recorder:
    """Evaluate function that records calls and fails on a repeated path (memo broken)."""

    def __init__(self, reward: Callable[[Path], float]) -> None:
        self.reward = reward
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> Evaluation:
        assert path not in self.calls, f"{path} evaluated twice"
        assert isinstance(path, Path)
        self.calls.append(path)
        return Evaluation(reward=self.reward(path), response=f"answer along {path}")


@pytest.mark.parametrize("seed", SEEDS)
def test_a_default_wrong_only_skipping_block_3_is_correct(seed: int) -> None:
    evaluate = Recorder(lambda p: float(p[3] == 0))
    result = run(10, evaluate, MCTSConfig(seed=seed))
    assert evaluate.calls[0] == Path.default(10)
    assert result.default_reward == 0.0 and result.best_reward == 1.0 and result.improved
    assert result.best_path[3] == 0
    assert result.stopped_early and result.simulations < 50
    # the search stopped at the first correct path: it is the last one evaluated
    assert evaluate.calls[-1] == result.best_path
    assert result.best_response == f"answer along {result.best_path}"
    assert result.layers_saved == 10 - result.best_path.cost


@pytest.mark.parametrize("seed", SEEDS)
def test_b_default_right_and_two_blocks_cheaper_path_right(seed: int) -> None:
    def reward(p: Path) -> float:
        return float(p.is_default or (p[4] == 0 and p[5] == 0))

    result = run(10, Recorder(reward), MCTSConfig(seed=seed))
    assert result.default_reward == 1.0 and result.best_reward == 1.0 and not result.improved
    assert result.best_path[4] == result.best_path[5] == 0
    assert result.best_cost <= 8 and result.layers_saved >= 2
    assert result.stopped_early
    assert set(result.good_paths) == {Path.default(10), result.best_path}
    assert result.good_paths[0] == result.best_path


@pytest.mark.parametrize("seed", SEEDS)
def test_c_only_repeating_block_2_is_correct(seed: int) -> None:
    result = run(9, Recorder(lambda p: float(p[2] == 2)), MCTSConfig(seed=seed))
    assert result.improved and result.best_path[2] == 2 and result.stopped_early
    assert result.layers_saved == 9 - result.best_cost


@pytest.mark.parametrize("seed", SEEDS)
def test_d_nothing_beats_the_default(seed: int) -> None:
    result = run(8, Recorder(lambda p: float(p.is_default)), MCTSConfig(seed=seed))
    assert result.best_path == Path.default(8) and result.best_reward == 1.0
    assert not result.improved and result.layers_saved == 0 and not result.stopped_early
    assert result.good_paths == (Path.default(8),) and result.good_rewards == (1.0,)
    assert result.simulations == 50


@pytest.mark.parametrize("seed", SEEDS)
def test_d_correct_but_costlier_paths_are_retained_behind_the_default(seed: int) -> None:
    # correct iff nothing is skipped: repeats keep the answer but cost more
    result = run(8, Recorder(lambda p: float(0 not in p)), MCTSConfig(seed=seed))
    assert result.best_path == Path.default(8) and not result.improved
    assert not result.stopped_early and result.simulations == 50
    assert len(result.good_paths) > 1 and result.good_paths[0] == Path.default(8)
    assert all(r >= result.default_reward for r in result.good_rewards)
    assert all(0 not in p and p.cost > 8 for p in result.good_paths[1:])


@pytest.mark.parametrize("seed", SEEDS)
def test_depth_two_two_separate_skips(seed: int) -> None:
    # needs two edits (blocks 1 and 4 are not adjacent): found below the root's children
    result = run(6, Recorder(lambda p: float(p[1] == 0 and p[4] == 0)), MCTSConfig(seed=seed))
    assert result.improved and result.best_path[1] == result.best_path[4] == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_depth_two_shaped_reward_leads_to_repeat_plus_skip(seed: int) -> None:
    def reward(p: Path) -> float:
        return 0.5 * (p[0] == 2) + 0.5 * (p[0] == 2 and p[3] == 0)

    result = run(5, Recorder(reward), MCTSConfig(seed=seed))
    assert result.best_reward == 1.0 and result.best_path[0] == 2 and result.best_path[3] == 0


def test_early_stop_disabled_spends_the_budget() -> None:
    result = run(10, Recorder(lambda p: float(p[3] == 0)), MCTSConfig(early_stop=False))
    assert not result.stopped_early and result.simulations == 50 and result.best_path[3] == 0


def test_early_stop_margin_is_respected() -> None:
    # correct iff block 7 skipped (cost 9) or blocks 1..2 skipped (cost 8); margin 2 means
    # only the cost-8 path may stop the search, and nothing cheaper is correct
    def reward(p: Path) -> float:
        return float(p.is_default or p == Path.parse("EEEEEEESEE") or (p[1] == p[2] == 0))

    passed_over = 0
    for seed in SEEDS:
        evaluate = Recorder(reward)
        result = run(10, evaluate, MCTSConfig(seed=seed))
        assert result.stopped_early and result.best_path[1] == result.best_path[2] == 0
        assert evaluate.calls[-1] == result.best_path
        passed_over += Path.parse("EEEEEEESEE") in evaluate.calls[:-1]
    assert passed_over >= 1  # the 1-block saving was seen and did not stop the search


def test_length_penalty_steers_selection_to_cheap_children() -> None:
    # constant reward: after the root's 3L-1 = 11 edits are expanded, UCB differs only by the
    # penalty; the first node expanded one level deeper hangs under the earliest cheapest child
    tree = SearchTree(4, MCTSConfig(epsilon=0.0, early_stop=False, num_simulations=13))
    while not tree.done:
        for path in tree.ask(1):
            tree.tell(path, 0.0)
    root = tree.root
    assert len(root.children) == 11 and sum(len(ch.children) for ch in root.children) == 1
    cheapest = min(ch.cost for ch in root.children)
    expected = next(ch for ch in root.children if ch.cost == cheapest)
    assert cheapest == 2 and len(expected.children) == 1
    # without the penalty every child ties: the earliest expanded one is descended into
    tree = SearchTree(
        4, MCTSConfig(epsilon=0.0, early_stop=False, num_simulations=13, length_penalty=0.0)
    )
    while not tree.done:
        for path in tree.ask(1):
            tree.tell(path, 0.0)
    assert len(tree.root.children[0].children) == 1


def _reachable(num_layers: int, config: MCTSConfig) -> set[Path]:
    seen = {Path.default(num_layers)}
    frontier = list(seen)
    while frontier:
        path = frontier.pop()
        for action in legal_actions(path, config.constraints):
            child = action.apply(path)
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return seen


@pytest.mark.parametrize(("num_layers", "skips"), [(1, 2), (2, 2), (3, 1), (3, 2)])
def test_exhaustive_search_evaluates_every_reachable_path_once(num_layers: int, skips: int) -> None:
    config = MCTSConfig(num_simulations=100_000, max_consecutive_skips=skips, early_stop=False)
    evaluate = Recorder(lambda p: (sum(i * d for i, d in enumerate(p)) % 7) / 7)
    result = run(num_layers, evaluate, config)
    reachable = _reachable(num_layers, config)
    assert set(evaluate.calls) == reachable and result.evaluations == len(reachable)
    assert all(check_path(p, num_layers, config.constraints) is None for p in evaluate.calls)
    assert result.simulations == result.evaluations + result.memo_hits < 100_000
    if num_layers == 1:
        assert evaluate.calls == [Path.parse("E"), Path.parse("R")] and result.memo_hits == 0


def test_memo_hits_when_edit_orders_meet() -> None:
    # L=3: skip 0 then repeat 2 and repeat 2 then skip 0 reach the same path; the evaluator
    # (Recorder) fails on any second evaluation, and memo hits must appear in a full search
    result = run(3, Recorder(lambda p: 0.0), MCTSConfig(num_simulations=60, early_stop=False))
    assert result.memo_hits > 0
    assert result.simulations == 60 == result.evaluations + result.memo_hits


def test_float_rewards_mean_empty_responses() -> None:
    result = run(6, lambda p: float(p[0] == 0), MCTSConfig(seed=1))
    assert result.improved and result.best_response == "" and result.default_response == ""


def test_same_seed_same_sequence_other_seed_differs() -> None:
    def reward(p: Path) -> float:
        return (sum(i * d for i, d in enumerate(p)) % 5) / 5

    sequences = []
    for seed in (11, 11, 12):
        evaluate = Recorder(reward)
        run(8, evaluate, MCTSConfig(seed=seed, early_stop=False))
        sequences.append(evaluate.calls)
    assert sequences[0] == sequences[1]
    assert sequences[0] != sequences[2]


def test_budget_of_one_evaluates_only_the_default() -> None:
    evaluate = Recorder(lambda p: 1.0)
    result = run(5, evaluate, MCTSConfig(num_simulations=1))
    assert evaluate.calls == [Path.default(5)] and result.simulations == 1
    assert result.best_path == Path.default(5)
