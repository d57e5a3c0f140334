"""The incremental ask / tell interface: equivalence with run, out-of-order results, properties.

Every test runs in both expansion modes except the one about pending duplicates, which exist
only in ``full`` mode (without a transposition table); its ``widening`` counterpart checks
that edit orders meeting on a pending path are linked to its node instead.
"""

from __future__ import annotations

import random
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drllm.paths import LayerPath, check_path
from drllm.search import MCTSConfig, Node, SearchTree, run, reachable
from drllm.types import Evaluation

MODES = ("full", "widening")




def _subtree(node: Node) -> list[Node]:
    """Nodes below ``node`` through its children, with repetition (a plain tree in full)."""
    out, stack = [], [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(current.children)
    return out


def drive(
    tree: SearchTree,
    reward: Callable[[LayerPath], float],
    k: int,
    rng: random.Random,
) -> list[LayerPath]:
    """Ask for up to ``k`` paths, tell a random subset of the pending ones in random order,
    until done; check the hand-out invariants on the way. Returns the paths handed out."""
    constraints = tree.config.constraints
    handed: list[LayerPath] = []
    for _ in range(100_000):
        if tree.done:
            return handed
        new = tree.ask(k)
        assert len(new) <= k
        for path in new:
            assert isinstance(path, LayerPath)
            assert check_path(path, tree.num_layers, constraints) is None, path
            assert path not in handed, f"{path} handed out twice"
            handed.append(path)
        pending = list(tree.pending)
        assert set(new) <= set(pending)
        if not pending:  # memo hits or exhaustion may finish the search inside ask
            assert tree.done, "not done, nothing handed out and nothing pending: stalled"
            continue
        rng.shuffle(pending)
        for path in pending[: rng.randint(1, len(pending))]:
            tree.tell(path, reward(path))
    raise AssertionError("search did not finish")


@pytest.mark.parametrize("mode", MODES)
def test_root_is_evaluated_alone_first(mode: str) -> None:
    tree = SearchTree(6, MCTSConfig(seed=2, expansion=mode))
    assert tree.ask(8) == [LayerPath.default(6)] and tree.ask(8) == []
    tree.tell(LayerPath.default(6), 0.0)
    batch = tree.ask(8)
    assert len(batch) == 8 and len(set(batch)) == 8 and LayerPath.default(6) not in batch
    assert tree.pending == tuple(batch) and tree.simulations_started == 9


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(4))
def test_incremental_k1_matches_run(seed: int, mode: str) -> None:
    def reward(p: LayerPath) -> Evaluation:
        return Evaluation(reward=float(sum(p[:3]) == 2), response=p.to_str())

    run_calls: list[LayerPath] = []

    def evaluate(p: LayerPath) -> Evaluation:
        run_calls.append(p)
        return reward(p)

    config = MCTSConfig(seed=seed, epsilon=0.3, expansion=mode)
    expected = run(9, evaluate, config)
    tree = SearchTree(9, config)
    calls: list[LayerPath] = []
    while not tree.done:
        for path in tree.ask(1):
            calls.append(path)
            tree.tell(path, reward(path))
    assert calls == run_calls
    assert tree.result() == expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(5))
def test_k4_shuffled_results_still_find_the_skip_of_block_3(seed: int, mode: str) -> None:
    tree = SearchTree(10, MCTSConfig(seed=seed, expansion=mode))
    drive(tree, lambda p: float(p[3] == 0), k=4, rng=random.Random(seed))
    result = tree.result()
    assert result.improved and result.best_path[3] == 0 and result.stopped_early
    assert tree.done and tree.ask(4) == []


def test_pending_duplicate_paths_wait_instead_of_being_handed_out_twice() -> None:
    """``full`` only: duplicate nodes of one path exist only without a transposition table."""
    # L=3 has many edit orders meeting on one path; with everything in flight at once, some
    # expansions land on a path that is still pending and must wait for it
    config = MCTSConfig(num_simulations=200, early_stop=False, epsilon=0.0, expansion="full")
    tree = SearchTree(3, config)
    rng = random.Random(0)
    handed: list[LayerPath] = []
    most_waiting = 0
    while not tree.done:
        handed.extend(tree.ask(50))
        # started = completed (root visits) + handed out and pending + waiting on those
        waiting = tree.simulations_started - tree.root.visits - len(tree.pending)
        most_waiting = max(most_waiting, waiting)
        pending = list(tree.pending)
        rng.shuffle(pending)
        for path in pending[: rng.randint(0, len(pending))]:
            tree.tell(path, path.cost / 6)
    result = tree.result()
    assert most_waiting > 0
    assert len(handed) == len(set(handed)) == result.evaluations
    assert result.memo_hits > 0
    assert result.simulations == tree.simulations_started == len(reachable(tree.root))
    assert tree.root.exhausted  # every edit order of every L=3 path was expanded


def test_pending_paths_reached_again_are_linked_not_handed_out_twice() -> None:
    # the widening counterpart: with everything in flight, expansions that reach a pending
    # path link its node (a transposition) and spend no simulation; nothing waits
    config = MCTSConfig(num_simulations=200, early_stop=False, epsilon=0.0, expansion="widening")
    tree = SearchTree(3, config)
    rng = random.Random(0)
    handed: list[LayerPath] = []
    linked_pending = 0
    while not tree.done:
        handed.extend(tree.ask(50))
        assert tree.simulations_started - tree.root.visits == len(tree.pending)  # no waiting
        pending = set(tree.pending)
        linked_pending += sum(
            ch.path in pending and len(ch.parents) > 1 for ch in reachable(tree.root)
        )
        order = list(tree.pending)
        rng.shuffle(order)
        for path in order[: rng.randint(0, len(order))]:
            tree.tell(path, path.cost / 6)
    result = tree.result()
    assert linked_pending > 0
    assert len(handed) == len(set(handed)) == result.evaluations == len(reachable(tree.root))
    assert result.memo_hits == 0 and result.transposition_hits > 0
    assert result.simulations == tree.simulations_started
    assert tree.root.exhausted


@pytest.mark.parametrize("mode", MODES)
def test_late_results_after_early_stop_are_recorded(mode: str) -> None:
    tree = SearchTree(8, MCTSConfig(seed=0, expansion=mode))
    (root,) = tree.ask(1)
    tree.tell(root, 0.0)
    batch = tree.ask(6)
    correct = batch[2]
    tree.tell(correct, Evaluation(1.0, "yes"))
    assert tree.done and tree.stopped_early and tree.ask(3) == []
    assert set(tree.pending) == set(batch) - {correct}
    assert tree.result().simulations == 2 and tree.result().best_path == correct
    late = batch[0]
    tree.tell(late, Evaluation(1.0, "also"))  # cheaper or not, it is recorded
    result = tree.result()
    assert result.simulations == result.evaluations == 3 and result.stopped_early
    assert late in result.good_paths and correct in result.good_paths


@settings(max_examples=200, deadline=None)
@given(
    num_layers=st.integers(1, 9),
    skips=st.integers(0, 3),
    cost_factor=st.sampled_from([1.0, 1.25, 2.0]),
    min_executed=st.integers(0, 2),
    budget=st.integers(1, 60),
    k=st.integers(1, 6),
    epsilon=st.sampled_from([0.0, 0.1, 1.0]),
    early_stop=st.booleans(),
    seed=st.integers(0, 2**16),
    late=st.booleans(),
    mode=st.sampled_from(MODES),
    widen=st.sampled_from([(1.0, 0.5), (0.5, 0.3), (3.0, 1.0)]),
    patience=st.sampled_from([0, 0, 0, 3]),
)
def test_search_properties(
    num_layers: int,
    skips: int,
    cost_factor: float,
    min_executed: int,
    budget: int,
    k: int,
    epsilon: float,
    early_stop: bool,
    seed: int,
    late: bool,
    mode: str,
    widen: tuple[float, float],
    patience: int,
) -> None:
    config = MCTSConfig(
        num_simulations=budget,
        max_consecutive_skips=skips,
        max_cost_factor=cost_factor,
        min_executed=min(min_executed, num_layers),
        epsilon=epsilon,
        early_stop=early_stop,
        seed=seed,
        expansion=mode,
        widen_k=widen[0],
        widen_alpha=widen[1],
        patience=patience,
    )
    table_rng = random.Random(seed + 1)
    table: dict[LayerPath, float] = {}

    def reward(p: LayerPath) -> float:
        return table.setdefault(p, table_rng.choice([0.0, 0.0, 0.5, 1.0]))

    tree = SearchTree(num_layers, config)
    handed = drive(tree, reward, k, random.Random(seed + 2))
    if late:
        for path in tree.pending:
            tree.tell(path, reward(path))
    result = tree.result()
    nodes = reachable(tree.root)

    # accounting: every simulation started made one node; completed ones were evaluated or
    # answered from the memo; each distinct path was evaluated once
    assert tree.simulations_started == len(nodes) <= budget
    assert result.evaluations == len(handed) - len(tree.pending) == len(table)
    assert result.simulations == result.evaluations + result.memo_hits
    assert result.simulations == sum(n.evaluated for n in nodes)
    if not tree.pending:
        assert result.simulations == tree.simulations_started
    if not result.stopped_early and not tree.root.exhausted:
        assert tree.simulations_started == budget
    if mode == "widening":  # transposition table: one node per path, no memo hits
        assert len({n.path for n in nodes}) == len(nodes) and result.memo_hits == 0
    else:
        assert result.transposition_hits == 0

    # backpropagation carries raw rewards (the length penalty is selection-only) along the
    # traversed nodes and edges: every visit of a node came in through one edge and either
    # ended there (its own evaluation) or went on through one edge
    incoming: dict[int, int] = {}
    for node in nodes:
        own = table[node.path] if node.evaluated else 0.0
        assert node.visits == int(node.evaluated) + sum(node.edge_visits)
        assert node.reward_sum == pytest.approx(own + sum(node.edge_reward_sums))
        for child, n in zip(node.children, node.edge_visits):
            incoming[id(child)] = incoming.get(id(child), 0) + n
        if mode == "full":  # a plain tree: a node's visits are the evaluated nodes below it
            below = [n for n in _subtree(node) if n.evaluated]
            assert node.visits == len(below)
            assert node.reward_sum == pytest.approx(sum(table[n.path] for n in below))
    assert all(incoming.get(id(n), 0) == n.visits for n in nodes if n is not tree.root)

    # labels: solved iff some told path is correct; only correct paths >= the default are kept
    told = {p: table[p] for p in handed if p not in tree.pending}
    default_reward = table[LayerPath.default(num_layers)]
    assert result.default_reward == default_reward
    solved = any(r >= 1.0 for r in told.values())
    assert result.solved == solved
    if solved:
        good = {p for p, r in told.items() if r >= 1.0 and r >= default_reward}
        assert set(result.good_paths) == good
        assert all(r >= max(1.0, default_reward) for r in result.good_rewards)
        keys = [(-r, p.cost) for p, r in zip(result.good_paths, result.good_rewards)]
        assert keys == sorted(keys)
        assert result.best_path == result.good_paths[0]
        assert result.best_reward == result.good_rewards[0]
    else:
        assert result.good_paths == () and result.good_rewards == ()
        assert result.best_path == LayerPath.default(num_layers)
        assert result.best_reward == default_reward and result.layers_saved == 0
    assert result.improved == (result.best_reward > default_reward)
    assert result.layers_saved == num_layers - result.best_cost
    assert result.best_cost == result.best_path.cost
    assert sorted(result.evaluated_depths) == sorted(p.edits for p in told)
    assert result.evaluated_depths[0] == 0 and result.failed_evaluations == 0
    assert result.prior_hits == sum(r >= 1.0 for p, r in told.items() if not p.is_default)

    # early stop fired iff its rule was met by some told path (patience: only if met)
    met = any(
        r >= 1.0 and (default_reward < 1.0 or p.cost <= num_layers - 2)
        for p, r in told.items()
        if not p.is_default
    )
    if patience == 0:
        assert result.stopped_early == (early_stop and met)
    else:
        assert not result.stopped_early or (early_stop and met)
