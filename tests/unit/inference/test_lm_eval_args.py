"""The lm-eval model's argument parsing and request windows, without a model."""

from __future__ import annotations

import pytest

from drllm.inference.lm_eval import parse_path
from drllm.inference.scoring import PathCache, fit_window
from drllm.paths import InvalidPathError, LayerPath


@pytest.mark.parametrize("value", [[1, 1, 0, 2], (1, 1, 0, 2), "1,1,0,2", "[1, 1, 0, 2]",
                                   "1 1 0 2", "1-1-0-2", "1102", 1102, "EESR", "eesr",
                                   LayerPath([1, 1, 0, 2])])
def test_path_forms(value):
    assert parse_path(value, 4) == LayerPath([1, 1, 0, 2])


def test_skips_are_not_limited_but_one_block_must_run():
    assert parse_path("SSSE", 4) == LayerPath([0, 0, 0, 1])
    with pytest.raises(InvalidPathError, match=r"path='SSSS'.*at least 1"):
        parse_path("SSSS", 4)


@pytest.mark.parametrize("value, reason", [
    ([1, 1, 0], "3 decisions but the model has 4 blocks"),
    ("1,1,0,1,1", "5 decisions but the model has 4 blocks"),
    (111, "3 decisions"),  # what the CLI makes of path=0111: the leading zero is gone
    ([1, 3, 1, 1], "decision 3 is not one of"),
    ("1,x,0,1", "invalid literal"),
    ("EEXE", "invalid literal"),
    (1.5, "unsupported type float"),
    ("", "path=''"),
])
def test_bad_paths_say_what_to_pass(value, reason):
    with pytest.raises(InvalidPathError, match="drllm model_args path=") as err:
        parse_path(value, 4)
    assert reason in str(err.value)
    assert "0 skip, 1 execute, 2 repeat" in str(err.value)


def test_window_keeps_the_continuation_and_cuts_the_context_from_the_left():
    w = fit_window([1, 2, 3], [4, 5], max_length=8)
    assert (w.input_ids, w.continuation, w.context, w.context_len) == ((1, 2, 3, 4), (4, 5),
                                                                        (1, 2, 3), 3)
    w = fit_window(list(range(10)), [10, 11, 12], max_length=6)
    # the last 7 tokens minus the last one: 6 inputs, the context part is what is left of it
    assert w.input_ids == (6, 7, 8, 9, 10, 11) and w.context == (6, 7, 8, 9)
    with pytest.raises(ValueError, match="does not fit"):
        fit_window([1], [2, 3, 4], max_length=2)
    with pytest.raises(ValueError, match="non-empty"):
        fit_window([], [2], max_length=2)


def test_path_cache_asks_once_per_distinct_sequence_in_batches():
    calls = []

    def choose(seqs):
        calls.append([tuple(s) for s in seqs])
        return [LayerPath([len(s) % 3, 1]) for s in seqs]

    cache = PathCache(choose, batch_size=2)
    seqs = [[1], [1, 2], [1], [1, 2, 3], [1, 2]]
    assert cache(seqs) == [LayerPath([len(s) % 3, 1]) for s in seqs]
    assert calls == [[(1,), (1, 2)], [(1, 2, 3)]]
    assert cache([[1, 2, 3]]) == [LayerPath([0, 1])] and len(calls) == 2
