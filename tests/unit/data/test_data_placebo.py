"""Placebo golds: every gold becomes a wrong answer of the same kind, deterministically, and a
search against them finds only what luck or a gamed reward gives."""

from __future__ import annotations

import pytest

from drllm.data import DatasetConfig, load_examples
from drllm.data.placebo import placebo_examples
from drllm.rewards import get_grader
from drllm.types import Example


def _open(i: int, gold: str) -> Example:
    return Example(f"q{i}", "synthetic_arith", "train", f"question {i}", (), gold,
                   "gsm8k_numeric")


def test_open_answers_borrow_another_examples_different_gold() -> None:
    examples = [_open(i, g) for i, g in enumerate(["1", "2", "2", "5", "1"])]
    placebo = placebo_examples(examples, seed=0)
    assert [p.meta["true_gold"] for p in placebo] == ["1", "2", "2", "5", "1"]
    for ex, p in zip(examples, placebo):
        assert p.gold != ex.gold and p.gold in {"1", "2", "5"}
        assert (p.id, p.prompt) == (ex.id, ex.prompt)
    assert placebo == placebo_examples(examples, seed=0)
    assert [p.gold for p in placebo_examples(examples * 3, seed=1)] != [
        p.gold for p in placebo_examples(examples * 3, seed=0)]
    with pytest.raises(ValueError, match="no other example with a different gold"):
        placebo_examples([_open(0, "3"), _open(1, "3")])


def test_synthetic_arith_placebo_golds_are_wrong_answers() -> None:
    real = load_examples(DatasetConfig(num_examples=20, levels=(1, 2))).examples
    fake = load_examples(DatasetConfig(num_examples=20, levels=(1, 2), placebo=True)).examples
    grader = get_grader("gsm8k_numeric")
    assert [e.id for e in fake] == [e.id for e in real]
    for r, f in zip(real, fake):
        assert f.meta["true_gold"] == r.gold
        # the true answer stated plainly is wrong under the placebo gold
        assert grader.grade(f"The answer is {r.gold}.", f.gold).reward == 0.0
        assert grader.grade(f"The answer is {r.gold}.", r.gold).reward == 1.0


@pytest.mark.parametrize("reward,shuffles", [("loglik", 1), ("generate", 3)])
def test_multiple_choice_placebo_names_one_wrong_choice_in_every_order(
        shared_data, reward: str, shuffles: int) -> None:
    kw = dict(name="arc_easy", path=str(shared_data / "ai2_arc"), num_examples=16,
              reward=reward, chance_shuffles=shuffles,
              prompt_style="base" if reward == "loglik" else "chat")
    real = load_examples(DatasetConfig(**kw)).examples
    fake = load_examples(DatasetConfig(**kw, placebo=True)).examples
    letters = "ABCDEFGH"
    for r, f in zip(real, fake):
        assert f.gold != r.gold and f.meta["true_gold"] == r.gold
        decoy = letters.index(f.gold)  # order 0 is the original order
        for rv, fv in zip(r.variants, f.variants, strict=True):
            order = list(fv.meta["choice_order"])
            assert order[letters.index(fv.gold)] == decoy  # the same wrong choice ...
            assert fv.gold != rv.gold                      # ... never the true one
        assert f.meta.get("variant_golds", []) == [v.gold for v in f.variants]


def test_placebo_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="placebo"):
        DatasetConfig(placebo="yes")
