"""Length-aware UCB, selection order, the early-stop rule and path retention: known answers."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from drllm.paths import LayerPath
from drllm.search import (
    Retention,
    selection_order,
    should_stop_early,
    ucb_score,
    widening_limit,
)
from drllm.types import Evaluation


@dataclass
class Stats:
    visits: int
    reward_sum: float
    cost: int


def test_ucb_known_values() -> None:
    # mean 0.5, exploration 1.8 * sqrt(ln 10 / 4), penalty 3 * 8 / 10
    expected = 0.5 + 1.8 * math.sqrt(math.log(10) / 4) - 3.0 * 8 / 10
    assert ucb_score(2.0, 4, 10, 8, 10, 1.8, 3.0) == pytest.approx(expected, abs=1e-12)
    # parent with a single visit: no exploration bonus (ln 1 = 0), no division by zero
    assert ucb_score(1.0, 1, 1, 10, 10, 1.8, 3.0) == pytest.approx(1.0 - 3.0)
    # the penalty grows with cost: repeating costs more than executing, skipping less
    costs = [ucb_score(1.0, 1, 5, cost, 10, 1.8, 3.0) for cost in (8, 10, 12)]
    assert costs[0] > costs[1] > costs[2]
    assert costs[0] - costs[1] == pytest.approx(3.0 * 2 / 10)


def test_selection_prefers_the_argmax_then_ucb_order() -> None:
    children = [Stats(2, 1.0, 10), Stats(2, 2.0, 10), Stats(2, 1.0, 8), Stats(2, 1.0, 8)]
    # epsilon 0, same exploration bonus: 2 and 3 (mean 0.5 - 2.4) tie, earlier first; then
    # 1 (mean 1.0 - 3.0); then 0 (mean 0.5 - 3.0)
    order = selection_order(children, 9, 10, 1.8, 3.0, 0.0, random.Random(0))
    assert order == [2, 3, 1, 0]
    scores = [ucb_score(c.reward_sum, c.visits, 9, c.cost, 10, 1.8, 3.0) for c in children]
    assert order == sorted(range(4), key=lambda i: (-scores[i], i))
    # without length penalty the higher mean wins outright
    assert selection_order(children, 9, 10, 1.8, 0.0, 0.0, random.Random(0))[0] == 1
    assert selection_order([], 9, 10, 1.8, 3.0, 0.5, random.Random(0)) == []


def test_epsilon_picks_a_uniformly_random_child_first() -> None:
    children = [Stats(1, 1.0, 10)] + [Stats(1, 0.0, 10) for _ in range(3)]
    rng = random.Random(123)
    firsts = [selection_order(children, 4, 10, 1.8, 3.0, 1.0, rng)[0] for _ in range(4000)]
    counts = [firsts.count(i) for i in range(4)]
    assert all(900 < n < 1100 for n in counts), counts
    rng = random.Random(7)
    firsts = [selection_order(children, 4, 10, 1.8, 3.0, 0.1, rng)[0] for _ in range(4000)]
    # argmax (child 0) first unless the epsilon draw fires (0.1) and picks another (3/4)
    assert 0.05 < 1 - firsts.count(0) / 4000 < 0.10
    # every order is a permutation
    order = selection_order(children, 4, 10, 1.8, 3.0, 1.0, random.Random(1))
    assert sorted(order) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("reward", "cost", "default_reward", "best_cost", "margin", "stop"),
    [
        (0.0, 5, 0.0, 10, 2, False),  # a wrong path never stops
        (1.0, 12, 0.0, 10, 2, True),  # default wrong: any correct path stops, even a costly one
        (1.0, 10, 0.0, 10, 2, True),
        (1.0, 9, 1.0, 10, 2, False),  # default right: 1 block cheaper is under the margin
        (1.0, 8, 1.0, 10, 2, True),  # default right: 2 blocks cheaper stops
        (1.0, 8, 1.0, 8, 2, False),  # not strictly cheaper than the best so far
        (1.0, 7, 1.0, 8, 2, True),
        (1.0, 12, 1.0, 10, 2, False),  # a correct repeat path is not cheaper
        (1.0, 9, 1.0, 10, 1, True),  # margin 1
        (1.0, 10, 1.0, 10, 0, False),  # margin 0 still needs strictly cheaper than the best
        (0.5, 8, 0.5, 10, 2, False),  # partial reward is not correct
        (1.0, 8, 0.5, 10, 2, True),  # default partially right counts as wrong
    ],
)
def test_early_stop_rule(
    reward: float, cost: int, default_reward: float, best_cost: int, margin: int, stop: bool
) -> None:
    assert should_stop_early(reward, cost, 10, default_reward, best_cost, 1.0, margin) is stop


def test_retention_keeps_at_least_default_and_ranks_reward_then_cost() -> None:
    # success reward 0.5: the default (0.5) is correct, so every path >= it is kept
    retention = Retention(4, success_reward=0.5)
    default = LayerPath.default(4)
    retention.set_default(default, Evaluation(0.5, "d"))
    entries = [
        ("SEEE", 0.0),  # below the default: dropped
        ("REEE", 1.0),  # cost 5
        ("ESEE", 0.5),  # cost 3, equal reward: kept
        ("ESSE", 1.0),  # cost 2: best
        ("EESS", 1.0),  # cost 2, later: after ESSE
        ("RRSE", 0.5),  # cost 5
    ]
    for text, reward in entries:
        retention.add(LayerPath.parse(text), Evaluation(reward, text.lower()))
    result = retention.to_result(evaluations=7, memo_hits=2, stopped_early=False)
    assert result.solved
    assert [p.to_str() for p in result.good_paths] == [
        "ESSE", "EESS", "REEE", "ESEE", "EEEE", "RRSE"
    ]
    assert result.good_rewards == (1.0, 1.0, 1.0, 0.5, 0.5, 0.5)
    assert (result.best_path, result.best_reward, result.best_response) == (
        LayerPath.parse("ESSE"), 1.0, "esse"
    )
    assert (result.best_cost, result.layers_saved, result.improved) == (2, 2, True)
    assert (result.default_reward, result.default_response) == (0.5, "d")
    assert (result.simulations, result.evaluations, result.memo_hits) == (9, 7, 2)


def test_retention_best_is_default_when_nothing_beats_it() -> None:
    retention = Retention(3)
    retention.set_default(LayerPath.default(3), Evaluation(1.0, "ok"))
    retention.add(LayerPath.parse("REE"), Evaluation(1.0))  # correct but costlier
    retention.add(LayerPath.parse("SEE"), Evaluation(0.0))
    result = retention.to_result(3, 0, False)
    assert result.best_path == LayerPath.default(3) and not result.improved
    assert result.layers_saved == 0 and result.best_response == "ok"
    assert result.good_paths == (LayerPath.default(3), LayerPath.parse("REE"))


def test_retention_with_binary_success_keeps_only_correct_paths() -> None:
    # the same entries with success reward 1.0: the default (0.5) is wrong, the example is
    # solved by the correct paths, and only they are kept
    retention = Retention(4)
    retention.set_default(LayerPath.default(4), Evaluation(0.5, "d"))
    for text, reward in [("SEEE", 0.0), ("REEE", 1.0), ("ESEE", 0.5), ("ESSE", 1.0)]:
        retention.add(LayerPath.parse(text), Evaluation(reward, text.lower()))
    result = retention.to_result(evaluations=5, memo_hits=0, stopped_early=False)
    assert result.solved and result.improved
    assert [p.to_str() for p in result.good_paths] == ["ESSE", "REEE"]
    assert result.good_rewards == (1.0, 1.0)
    assert (result.best_path.to_str(), result.best_response, result.layers_saved) == (
        "ESSE", "esse", 2
    )


def test_retention_unsolved_label_is_the_default() -> None:
    # nothing reaches the success reward: a cheaper path with the default's reward (or a
    # higher partial one) must not become the label
    retention = Retention(4)
    retention.set_default(LayerPath.default(4), Evaluation(0.0, "wrong"))
    retention.add(LayerPath.parse("SSES"), Evaluation(0.0, "also wrong, cheaper"))
    retention.add(LayerPath.parse("ESEE"), Evaluation(0.5, "partial"))
    assert not retention.solved and retention.cheapest_correct_cost == 4
    result = retention.to_result(evaluations=3, memo_hits=0, stopped_early=False)
    assert not result.solved and not result.improved
    assert (result.best_path, result.best_reward, result.best_response) == (
        LayerPath.default(4), 0.0, "wrong"
    )
    assert result.best_cost == 4 and result.layers_saved == 0
    assert result.good_paths == () and result.good_rewards == ()


def test_retention_cheapest_correct_cost_is_what_early_stop_reads() -> None:
    # a correct costlier path with a higher reward is the label, but early stop compares new
    # paths with the cheapest correct one
    retention = Retention(10)
    retention.set_default(LayerPath.default(10), Evaluation(1.0))
    assert retention.cheapest_correct_cost == 10
    retention.add(LayerPath.parse("REEEEEEEEE"), Evaluation(1.5))
    retention.add(LayerPath.parse("EEEEEEEESE"), Evaluation(1.0))
    assert retention.best_cost == 11 and retention.cheapest_correct_cost == 9
    result = retention.to_result(3, 0, False)
    assert result.best_path == LayerPath.parse("REEEEEEEEE") and result.solved
    assert [p.to_str() for p in result.good_paths] == ["REEEEEEEEE", "EEEEEEEESE", "EEEEEEEEEE"]


def test_widening_limit() -> None:
    # ceil(k * N^alpha), at least one child
    assert [widening_limit(n, 1.0, 0.5) for n in (0, 1, 2, 4, 5, 9, 10, 50)] == [
        1, 1, 2, 2, 3, 3, 4, 8
    ]
    assert widening_limit(50, 2.0, 0.5) == 15 and widening_limit(7, 0.5, 1.0) == 4
    assert widening_limit(100, 0.1, 0.0) == 1
