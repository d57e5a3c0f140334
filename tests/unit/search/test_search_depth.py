"""Depth: bandits at L = 30 whose correct paths are 2 or 3 edits deep, 50 simulations each.

With L = 30 the root has 89 legal edits, so ``expansion: full`` (expand the first node that
has an untried edit) spends all 49 simulations after the root on depth-1 paths and can never
find these labels. ``expansion: widening`` (k = 1, alpha = 0.5) keeps ~8 root children and
descends by UCB, reaching depth 3-4.

The bandit: 15 "skippable" blocks ``S`` (the even ones, so no two are adjacent). A correct
path skips exactly ``d`` blocks of ``S``, one edit each, and edits nothing else (reward 1.0:
the known best paths, all of cost ``30 - d``). Other paths earn a graded signal,
``0.5 * min(s, d) / d`` for ``s`` single skips in ``S`` (other edits neither help nor hurt),
so UCB can follow partial progress. The default path is wrong (0.0), so the first correct
path stops the search.

Measured over seeds 0..49 (fraction of searches whose label is a correct path):

==========================  ======  =========
bandit                      full    widening
==========================  ======  =========
depth 2, uniform prior      0.00    0.44
depth 3, uniform prior      0.00    0.14
depth 2, importance prior   0.00    0.92
depth 3, importance prior   0.00    0.82
==========================  ======  =========

The floors below are the measured widening fractions minus a margin (the searches are
deterministic per seed; the margin allows for later changes of the random stream).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from drllm.paths import LayerPath
from drllm.search import BlockPrior, MCTSConfig, Prior, run

L = 30
SKIPPABLE = frozenset(range(0, L, 2))
SEEDS = range(50)


def bandit(depth: int) -> Callable[[LayerPath], float]:
    """The reward of the depth-``depth`` bandit (see the module docstring)."""

    def reward(p: LayerPath) -> float:
        edits = [i for i, d in enumerate(p) if d != 1]
        good = sum(
            1
            for i in edits
            if p[i] == 0
            and i in SKIPPABLE
            and (i == 0 or p[i - 1] != 0)
            and (i == L - 1 or p[i + 1] != 0)
        )
        if good == depth == len(edits):
            return 1.0
        return 0.5 * min(good, depth) / depth

    return reward


def importance_prior() -> BlockPrior:
    """Block influence as a model might show it: skippable blocks lower, the ranges overlap."""
    rng = random.Random(0)
    values = [rng.uniform(0.05, 0.3) if i in SKIPPABLE else rng.uniform(0.2, 0.6) for i in range(L)]
    return BlockPrior.from_layer_importance(values)


def found_fraction(depth: int, mode: str, prior: Prior | None = None) -> float:
    reward = bandit(depth)
    hits = 0
    for seed in SEEDS:
        result = run(L, reward, MCTSConfig(seed=seed, expansion=mode), prior=prior)
        if result.solved:
            assert result.best_reward == 1.0 and result.best_path.edits == depth
            assert result.best_cost == L - depth and result.stopped_early
        else:
            assert result.best_path == LayerPath.default(L) and result.good_paths == ()
        hits += result.solved
    return hits / len(SEEDS)


def test_the_bandits_known_best_paths() -> None:
    two = LayerPath.parse("S" + "E" * 9 + "S" + "E" * 19)
    assert bandit(2)(two) == 1.0 and two.edits == 2 and two.cost == 28
    assert bandit(2)(LayerPath.parse("S" + "E" * 29)) == 0.25  # one of two
    assert bandit(2)(LayerPath.parse("SS" + "E" * 28)) == 0.0  # a 2-block skip is not in S
    assert bandit(3)(two) == pytest.approx(1 / 3)
    assert bandit(2)(LayerPath.parse("E" * 30)) == 0.0


@pytest.mark.parametrize(
    ("depth", "use_prior", "floor"),
    [(2, False, 0.3), (3, False, 0.06), (2, True, 0.75), (3, True, 0.6)],
    ids=["depth2-uniform", "depth3-uniform", "depth2-importance", "depth3-importance"],
)
def test_widening_finds_deep_labels_that_full_cannot(
    depth: int, use_prior: bool, floor: float
) -> None:
    prior = importance_prior() if use_prior else None
    full = found_fraction(depth, "full", prior)
    widening = found_fraction(depth, "widening", prior)
    assert full == 0.0  # depth 1 only: 89 root edits > 49 simulations
    assert widening >= floor, widening
