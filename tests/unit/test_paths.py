"""LayerPath type, validation, cost and MCTS edit actions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drllm.paths import (
    Action,
    InvalidPathError,
    LayerPath,
    PathConstraints,
    check_path,
    legal_actions,
    max_skip_run,
    validate_path,
)


def test_default_path_cost_and_text() -> None:
    p = LayerPath.default(5)
    assert p == (1, 1, 1, 1, 1)
    assert p.cost == 5 and p.is_default
    assert p.to_str() == "EEEEE"
    assert LayerPath.parse("ee s r e") == (1, 1, 0, 2, 1)
    assert LayerPath.parse("EESRE").cost == 5
    assert hash(LayerPath.parse("ESR")) == hash((1, 0, 2))
    assert {LayerPath((1, 0)): "x"}[(1, 0)] == "x"


def test_executed_steps_lists_each_pass() -> None:
    assert LayerPath.parse("ESRE").executed_steps() == [(0, 0), (2, 0), (2, 1), (3, 0)]


@pytest.mark.parametrize(
    "path, num_layers, fragment",
    [
        ((1, 1, 1), 4, "3 decisions but the model has 4 blocks"),
        ((1, 0, 0, 0, 1), 5, "skips 3 consecutive blocks"),
        ((0, 0), 2, "executes 0 blocks"),  # 2 skips are allowed, but nothing runs
        ((), None, "empty"),
    ],
)
def test_validation_messages(path: tuple, num_layers: int | None, fragment: str) -> None:
    with pytest.raises(InvalidPathError) as err:
        validate_path(path, num_layers, PathConstraints(max_consecutive_skips=2, min_executed=1))
    assert fragment in str(err.value)


def test_bad_values_and_text() -> None:
    with pytest.raises(InvalidPathError, match="decision 3"):
        LayerPath((1, 3, 1))
    with pytest.raises(InvalidPathError, match="letters"):
        LayerPath.parse("EXE")
    with pytest.raises(InvalidPathError, match="num_layers must be positive"):
        LayerPath.default(0)


def test_cost_cap() -> None:
    tight = PathConstraints(max_cost_factor=1.25)
    assert check_path((2, 1, 1, 1), 4, tight) is None
    assert "exceeds the cap" in check_path((2, 2, 1, 1), 4, tight)


def test_constraints_validate_values() -> None:
    with pytest.raises(ValueError, match="max_cost_factor"):
        PathConstraints(max_cost_factor=3)
    with pytest.raises(ValueError, match="max_consecutive_skips"):
        PathConstraints(max_consecutive_skips=-1)


def test_legal_actions_known_set() -> None:
    p = LayerPath.parse("EESSEE")
    got = {str(a) for a in legal_actions(p)}
    # 2-block skips next to the existing run would make 3+ consecutive skips.
    assert got == {"skip[0:1]", "repeat[0:1]", "repeat[1:2]", "repeat[4:5]", "skip[5:6]", "repeat[5:6]"}
    assert Action("skip", 0, 2).apply(LayerPath.default(3)) == (0, 0, 1)
    assert Action("repeat", 1).apply(LayerPath.default(3)) == (1, 2, 1)


def test_default_path_action_count() -> None:
    # L blocks: L single skips + (L-1) double skips + L repeats.
    assert len(legal_actions(LayerPath.default(10))) == 10 + 9 + 10


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=16), st.integers(0, 3))
def test_actions_only_produce_valid_paths(decisions: list[int], max_skips: int) -> None:
    c = PathConstraints(max_consecutive_skips=max_skips)
    path = LayerPath(decisions)
    if check_path(path, len(path), c) is not None:
        return
    for action in legal_actions(path, c):
        child = action.apply(path)
        assert check_path(child, len(path), c) is None
        assert child != path
        assert max_skip_run(child) <= max_skips
        # a repeat never exceeds one extra pass; a skip only touches executed blocks
        changed = [i for i in range(len(path)) if child[i] != path[i]]
        assert all(path[i] == 1 for i in changed)
