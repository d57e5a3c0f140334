"""``legal_actions`` (O(L)) equals its definition: the edits whose edited path passes
``check_path``, in the same order, for random paths and constraints (valid or not)."""

from __future__ import annotations

import random

import pytest

from drllm.paths import Action, LayerPath, PathConstraints, check_path, legal_actions


def reference(path: LayerPath, constraints: PathConstraints) -> list[Action]:
    """The definition: apply every candidate edit and validate the whole edited path."""
    out = []
    n = len(path)
    for i in range(n):
        if path[i] != 1:
            continue
        for length in (1, 2):
            if length == 2 and (i + 1 >= n or path[i + 1] != 1):
                continue
            action = Action("skip", i, length)
            if check_path(action.apply(path), n, constraints) is None:
                out.append(action)
        action = Action("repeat", i, 1)
        if check_path(action.apply(path), n, constraints) is None:
            out.append(action)
    return out


CONSTRAINTS = [
    PathConstraints(),
    PathConstraints(max_consecutive_skips=0),
    PathConstraints(max_consecutive_skips=1, max_cost_factor=1.0),
    PathConstraints(max_consecutive_skips=3, max_cost_factor=1.1, min_executed=5),
    PathConstraints(max_consecutive_skips=2, max_cost_factor=0.5, min_executed=0),
]


@pytest.mark.parametrize("constraints", CONSTRAINTS, ids=str)
def test_fast_legal_actions_equal_the_definition(constraints):
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 14)
        weights = rng.choice([(1, 8, 1), (1, 1, 1), (3, 2, 1), (0, 1, 0)])
        path = LayerPath(rng.choices((0, 1, 2), weights=weights, k=n))
        assert legal_actions(path, constraints) == reference(path, constraints), (
            path.to_str(), constraints)


def test_known_answer_on_a_small_path():
    # EESE: block 2 skipped. Skipping block 1 or 3 makes a run of 2 (allowed); skipping
    # blocks 0-1 makes a run of 3 (refused at the default max of 2).
    path = LayerPath.parse("EESE")
    got = [str(a) for a in legal_actions(path)]
    assert got == ["skip[0:1]", "repeat[0:1]", "skip[1:2]", "repeat[1:2]",
                   "skip[3:4]", "repeat[3:4]"]
    assert legal_actions(LayerPath.default(30)).__len__() == 89
