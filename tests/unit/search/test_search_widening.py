"""Progressive widening, the transposition table, patience, and the counters of a search."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drllm.paths import Action, LayerPath, PathConstraints, edit_count, legal_actions
from drllm.search import BlockPrior, MCTSConfig, Node, SearchTree, run, reachable
from drllm.types import Evaluation




def _sync(tree: SearchTree, reward: Callable[[LayerPath], float]) -> list[LayerPath]:
    calls: list[LayerPath] = []
    while not tree.done:
        for path in tree.ask(1):
            assert path not in calls, f"{path} evaluated twice"
            calls.append(path)
            tree.tell(path, reward(path))
    return calls


# ---------------------------------------------------------------- edit_count
@pytest.mark.parametrize(
    ("text", "edits"),
    [
        ("EEEE", 0),
        ("SEEE", 1),
        ("SSEE", 1),  # one 2-block skip
        ("SSES", 2),
        ("SESE", 2),
        ("REER", 2),
        ("SSRS", 3),
        ("RRRR", 4),
        ("SS", 1),
        ("S", 1),
        ("ESSESSESSE", 3),
    ],
)
def test_edit_count_known_values(text: str, edits: int) -> None:
    assert edit_count(LayerPath.parse(text)) == edits == LayerPath.parse(text).edits


def test_edit_count_counts_runs_longer_than_two_in_pairs() -> None:
    # runs of 3 and 4 skipped blocks are not legal paths by default, but the count is defined
    assert edit_count(LayerPath.parse("SSSE")) == 2 and edit_count(LayerPath.parse("SSSSR")) == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=6))
def test_edit_count_is_the_bfs_depth_from_the_default(decisions: list[int]) -> None:
    # minimal number of legal actions from the default path (permissive constraints)
    target = LayerPath(decisions)
    rules = PathConstraints(max_consecutive_skips=len(target), min_executed=0)
    frontier, seen, depth = {LayerPath.default(len(target))}, set(), 0
    while target not in frontier:
        seen |= frontier
        frontier = {a.apply(p) for p in frontier for a in legal_actions(p, rules)} - seen
        depth += 1
    assert edit_count(target) == depth


def test_evaluated_depths_follow_evaluation_order() -> None:
    calls: list[LayerPath] = []

    def evaluate(p: LayerPath) -> float:
        calls.append(p)
        return 0.0

    result = run(6, evaluate, MCTSConfig(seed=3, early_stop=False))
    assert result.evaluated_depths == tuple(edit_count(p) for p in calls)
    assert result.evaluated_depths[0] == 0 and max(result.evaluated_depths) >= 3


# ---------------------------------------------------------------- widening
def test_widening_reaches_deeper_than_full_at_thirty_blocks() -> None:
    # flat rewards, L = 30: the root has 89 legal edits, so full never leaves depth 1 in 50
    # simulations; widening (k=1, alpha=0.5) keeps ~8 root children and goes 3-4 edits deep
    full = run(30, lambda p: 0.0, MCTSConfig(expansion="full"))
    wide = run(30, lambda p: 0.0, MCTSConfig(expansion="widening"))
    assert max(full.evaluated_depths) == 1
    assert max(wide.evaluated_depths) >= 3
    assert full.simulations == wide.simulations == 50


def test_widening_limit_bounds_the_children_expanded_by_choice() -> None:
    # with one path in flight nothing is ever pending during selection, so every node holds
    # at most ceil(k * N^alpha) children (N counted when each child was added: <= now)
    for k, alpha in [(1.0, 0.5), (2.0, 0.3), (0.5, 1.0)]:
        config = MCTSConfig(seed=1, early_stop=False, widen_k=k, widen_alpha=alpha)
        tree = SearchTree(12, config)
        _sync(tree, lambda p: (sum(p) % 3) / 3)
        for node in reachable(tree.root):
            grown = sum(not linked for linked in node.linked)
            assert grown <= max(1, math.ceil(k * node.visits**alpha)), (k, alpha, node)


# ---------------------------------------------------------------- transpositions
def _ordered_prior(num_layers: int, preferred: dict[int, float]) -> BlockPrior:
    """A near-greedy prior: skips of ``preferred`` blocks first, by their logit."""
    skip = [preferred.get(i, 0.0) for i in range(num_layers)]
    return BlockPrior(skip, [-10.0] * num_layers, temperature=1e-3)


def test_commuting_edits_share_one_node_evaluated_once() -> None:
    # skip 1 is expanded first at the root, skip 4 second; under each of them the other skip
    # comes first again, so skip 1 + skip 4 is reached in both orders and joins one node
    prior = _ordered_prior(6, {1: 5.0, 4: 4.0})
    config = MCTSConfig(epsilon=0.0, early_stop=False, num_simulations=6)
    tree = SearchTree(6, config, prior)
    calls = _sync(tree, lambda p: 0.0)
    both = LayerPath.parse("ESEESE")
    assert calls.count(both) == 1
    (node,) = [n for n in reachable(tree.root) if n.path == both]
    assert {p.path.to_str() for p in node.parents} == {"ESEEEE", "EEEESE"}
    assert node.parent is not None and node.parent.path == LayerPath.parse("ESEEEE")
    result = tree.result()
    assert result.transposition_hits == 1 and result.memo_hits == 0
    assert result.simulations == result.evaluations == len(calls) == 6
    # the linked edge has no traversals yet; the shared node's visits came through the other
    parent = next(p for p in node.parents if p.path == LayerPath.parse("EEEESE"))
    i = parent.child_index(node)
    assert parent.linked[i] and parent.edge_visits[i] == 0


def test_an_expansion_of_only_transpositions_spends_no_simulation() -> None:
    # L=2: every path below the root's children is reached in two orders; the search spends
    # exactly one simulation per distinct path, and the loop ends although whole expansions
    # produce nothing new
    config = MCTSConfig(num_simulations=1000, early_stop=False)
    tree = SearchTree(2, config)
    calls = _sync(tree, lambda p: p.cost / 4)
    assert tree.root.exhausted and len(calls) == len(set(calls)) == tree.simulations_started
    assert tree.result().transposition_hits > 0


# ---------------------------------------------------------------- patience
def _skip_4_5(p: LayerPath) -> float:
    # default correct; correct iff blocks 4 and 5 are skipped (cheaper members deeper down)
    return float(p.is_default or (p[4] == 0 and p[5] == 0))


def test_patience_finds_cheaper_correct_paths_that_patience_0_misses() -> None:
    """Widening, seeds 0..9: patience 10 is strictly cheaper in 6 of 10 seeds (measured)."""
    cheaper = 0
    for seed in range(10):
        first = run(10, _skip_4_5, MCTSConfig(seed=seed))
        patient = run(10, _skip_4_5, MCTSConfig(seed=seed, patience=10))
        assert patient.best_cost <= first.best_cost and patient.best_reward == 1.0
        assert patient.best_path.is_default or patient.best_path[4] == patient.best_path[5] == 0
        if first.stopped_early:
            # the same search up to the first qualifying path, then 10 more simulations
            assert patient.simulations == min(first.simulations + 10, 50)
            assert patient.stopped_early == (first.simulations + 10 <= 50)
        cheaper += patient.best_cost < first.best_cost
    assert cheaper >= 5


@pytest.mark.parametrize("mode", ["full", "widening"])
def test_patience_zero_is_the_papers_rule(mode: str) -> None:
    for seed in range(5):
        a = run(10, _skip_4_5, MCTSConfig(seed=seed, expansion=mode))
        b = run(10, _skip_4_5, MCTSConfig(seed=seed, expansion=mode, patience=0))
        assert a == b


def test_patience_waits_for_its_own_simulations_only() -> None:
    # qualify while 3 other paths are pending; the tree then starts exactly `patience` more
    # simulations and stops once those are told, whatever remains pending from before
    tree = SearchTree(10, MCTSConfig(seed=0, patience=2, early_stop_margin=0))
    (root,) = tree.ask(1)
    tree.tell(root, 1.0)
    batch = tree.ask(4)
    cheap = min(batch, key=lambda p: p.cost)
    assert cheap.cost < 10
    tree.tell(cheap, Evaluation(1.0, "cheaper and correct"))
    assert not tree.done and not tree.stopped_early
    grace = tree.ask(5)
    assert len(grace) == 2 and tree.ask(5) == []  # no third simulation
    tree.tell(grace[0], 1.0)
    assert not tree.done
    tree.tell(grace[1], 1.0)
    assert tree.done and tree.stopped_early
    assert set(tree.pending) == set(batch) - {cheap}
    assert tree.result().best_cost == min(cheap.cost, *(g.cost for g in grace))


def test_prior_hits_count_new_correct_paths() -> None:
    correct = {LayerPath.parse("SEEE"), LayerPath.parse("ESEE"), LayerPath.parse("EESE")}
    result = run(4, lambda p: float(p in correct), MCTSConfig(early_stop=False, seed=0))
    assert result.prior_hits == 3 and result.solved
    assert set(result.good_paths) == correct


def test_actions_apply_to_the_creating_parent() -> None:
    # every node's action turns its creating parent's path into its own
    tree = SearchTree(7, MCTSConfig(seed=5, early_stop=False))
    _sync(tree, lambda p: (sum(p) % 4) / 4)
    for node in reachable(tree.root):
        if node.parent is not None:
            assert isinstance(node.action, Action)
            assert node.action.apply(node.parent.path) == node.path
            assert node.parent in node.parents
