"""Failed evaluations are not rewards: never memoized or backpropagated, the search goes on."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drllm.paths import LayerPath
from drllm.search import MCTSConfig, Node, SearchTree, run, reachable
from drllm.types import Evaluation

MODES = ("full", "widening")
FAILED = Evaluation(reward=0.0, reason="backend raised after 3 retries", failed=True)




@pytest.mark.parametrize("mode", MODES)
def test_a_failure_is_dropped_and_the_tree_goes_on(mode: str) -> None:
    tree = SearchTree(6, MCTSConfig(seed=0, expansion=mode, early_stop=False))
    (root,) = tree.ask(1)
    tree.tell(root, Evaluation(0.0, "wrong"))
    (first,) = tree.ask(1)
    tree.tell(first, FAILED)
    assert tree.failed_evaluations == 1 and tree.simulations_started == 2
    # not backpropagated, not a node any more, not memoized (telling it again is refused)
    assert tree.root.visits == 1 and tree.root.reward_sum == 0.0
    assert first not in {n.path for n in reachable(tree.root)}
    with pytest.raises(ValueError, match="already failed"):
        tree.tell(first, 1.0)
    # the search goes on with other edits
    (second,) = tree.ask(1)
    assert second != first
    tree.tell(second, 1.0)
    result = tree.result()
    assert result.failed_evaluations == 1
    assert result.evaluations == 2 == result.simulations  # failures are not evaluations
    assert result.evaluated_depths == (0, 1)
    assert first not in result.good_paths and second in result.good_paths


@pytest.mark.parametrize("mode", MODES)
def test_failures_never_become_labels_and_other_edits_are_found(mode: str) -> None:
    # every path that repeats a block fails; the one correct family (block 3 skipped) is still
    # found, and the failures count against the budget but not as evaluations
    def evaluate(p: LayerPath) -> Evaluation:
        if 2 in p:
            return FAILED
        return Evaluation(float(p[3] == 0))

    for seed in range(5):
        result = run(10, evaluate, MCTSConfig(seed=seed, expansion=mode))
        assert result.solved and result.best_path[3] == 0 and 2 not in result.best_path
        assert all(2 not in p for p in result.good_paths)
        assert result.simulations == result.evaluations + result.memo_hits
        assert len(result.evaluated_depths) == result.evaluations


@pytest.mark.parametrize("mode", MODES)
def test_root_failure_ends_the_search_and_result_raises(mode: str) -> None:
    tree = SearchTree(5, MCTSConfig(expansion=mode))
    (root,) = tree.ask(4)
    assert not tree.default_failed and tree.default_failure_reason is None
    tree.tell(root, Evaluation(0.0, reason="CUDA out of memory", failed=True))
    assert tree.done and tree.default_failed and tree.ask(4) == []
    assert tree.default_failure_reason == "CUDA out of memory"
    assert tree.failed_evaluations == 1
    with pytest.raises(RuntimeError, match=r"default path's evaluation failed \(CUDA out of"):
        tree.result()
    with pytest.raises(RuntimeError, match="default path's evaluation failed"):
        run(5, lambda p: FAILED, MCTSConfig(expansion=mode))


def test_full_mode_duplicates_waiting_on_a_failed_path_are_dropped_too() -> None:
    # L=3, everything in flight: some expansions wait on a pending path; when that path fails,
    # its node and every node waiting on it go, nothing is backpropagated
    tree = SearchTree(3, MCTSConfig(num_simulations=200, early_stop=False, expansion="full"))
    tree.tell(*tree.ask(1), 0.0)
    rng = random.Random(1)
    most_dropped = 0
    while not tree.done:
        tree.ask(40)
        pending = list(tree.pending)
        rng.shuffle(pending)
        for path in pending[: rng.randint(0, len(pending))]:
            if path.cost % 2 == 0:
                tree.tell(path, Evaluation(path.cost / 6))
                continue
            copies = sum(n.path == path for n in reachable(tree.root))
            tree.tell(path, FAILED)
            assert all(n.path != path for n in reachable(tree.root))
            most_dropped = max(most_dropped, copies)
    result = tree.result()
    nodes = reachable(tree.root)
    assert most_dropped > 1  # a failure took waiting duplicates with it
    assert all(n.path.cost % 2 == 0 for n in nodes if n is not tree.root)
    assert result.failed_evaluations > 0
    assert tree.root.visits == result.simulations == result.evaluations + result.memo_hits
    assert tree.root.exhausted


@settings(max_examples=120, deadline=None)
@given(
    num_layers=st.integers(2, 8),
    budget=st.integers(2, 60),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(MODES),
    fail_rate=st.sampled_from([0.1, 0.5, 0.9]),
)
def test_failure_properties(
    num_layers: int, budget: int, k: int, seed: int, mode: str, fail_rate: float
) -> None:
    config = MCTSConfig(num_simulations=budget, seed=seed, expansion=mode, early_stop=False)
    rng = random.Random(seed)
    rewards: dict[LayerPath, float] = {}
    failures: list[LayerPath] = []
    tree = SearchTree(num_layers, config)
    tree.tell(*tree.ask(1), 0.0)  # the root never fails here
    for _ in range(10_000):
        if tree.done:
            break
        tree.ask(k)
        pending = list(tree.pending)
        assert pending or tree.done, "stalled"
        rng.shuffle(pending)
        for path in pending[: rng.randint(1, max(1, len(pending)))]:
            assert path not in rewards, f"{path} handed out again after its reward"
            if rng.random() < fail_rate:
                failures.append(path)
                tree.tell(path, FAILED)
            else:
                rewards[path] = rng.choice([0.0, 0.5, 1.0])
                tree.tell(path, rewards[path])
    assert tree.done
    result = tree.result()
    nodes = reachable(tree.root)
    assert result.failed_evaluations == len(failures) == tree.failed_evaluations
    assert result.evaluations == len(rewards) + 1
    assert result.simulations == result.evaluations + result.memo_hits == tree.root.visits
    assert tree.simulations_started <= budget
    assert all(n.evaluated for n in nodes)  # nothing pending, failed nodes are gone
    assert {n.path for n in nodes} <= set(rewards) | {LayerPath.default(num_layers)}
    # only told rewards were backpropagated
    for node in nodes:
        own = rewards.get(node.path, 0.0)
        assert node.visits == 1 + sum(node.edge_visits)
        assert node.reward_sum == pytest.approx(own + sum(node.edge_reward_sums))
    assert set(result.good_paths) <= set(rewards) | {LayerPath.default(num_layers)}
