"""Chance-robust multiple choice (shuffled choice orders) and per-dataset generation budgets."""

from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
from pathlib import Path

import pytest

from drllm.data import DatasetConfig, load_examples
from drllm.data.arc import choice_orders

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _choices(prompt: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-E])\. (.*)$", prompt, flags=re.M))


def test_choice_orders_move_the_gold_and_are_deterministic() -> None:
    orders = choice_orders("row-1", 4, gold_index=0, m=4)
    assert orders[0] == [0, 1, 2, 3]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert sorted(o.index(0) for o in orders) == [0, 1, 2, 3]  # gold at every position once
    assert orders == choice_orders("row-1", 4, gold_index=0, m=4)
    assert choice_orders("row-1", 4, 2, 1) == [[0, 1, 2, 3]]
    five = choice_orders("x", 3, 1, 5)  # more orders than positions: positions repeat
    assert len(five) == 5 and {o.index(1) for o in five} == {0, 1, 2}


def test_arc_variants_keep_the_answer_text_under_each_order() -> None:
    cfg = dict(name="arc_easy", path=str(DATA / "ai2_arc"), num_examples=40, seed=3)
    plain = load_examples(DatasetConfig(**cfg))
    robust = load_examples(DatasetConfig(**cfg, chance_shuffles=3))
    assert [e.id for e in plain.examples] == [e.id for e in robust.examples]
    for a, b in zip(plain.examples, robust.examples):
        assert a.variants == () and len(b.variants) == 2
        assert b.prompt == a.prompt and b.gold == a.gold
        gold_text = _choices(a.prompt)[a.gold]
        golds = [a.gold] + [v.gold for v in b.variants]
        assert len(set(golds)) == 3, "the gold letter moves under each order"
        assert b.meta["variant_golds"] == golds[1:]
        for v in b.variants:
            assert v.id == a.id and v.variants == ()
            assert _choices(v.prompt)[v.gold] == gold_text
            assert sorted(_choices(v.prompt).values()) == sorted(_choices(a.prompt).values())


def test_chance_shuffles_only_for_multiple_choice() -> None:
    with pytest.raises(ValueError, match="chance_shuffles: dataset 'gsm8k' is not multiple"):
        DatasetConfig(name="gsm8k", chance_shuffles=3)
    with pytest.raises(ValueError, match="DatasetConfig.chance_shuffles must be >= 1"):
        DatasetConfig(name="arc_easy", chance_shuffles=0)


@pytest.mark.parametrize("name, grader, tokens", [
    ("arc_easy", None, 16), ("gsm8k", None, 512), ("math", None, 512), ("dart-3", None, 512),
    ("synthetic_arith", None, 128), ("arc_easy", "mc_letter", 16),
])
def test_generation_budget_belongs_to_the_dataset(name, grader, tokens) -> None:
    assert DatasetConfig(name=name, grader=grader).generation_budget == (tokens, ())
    assert DatasetConfig(name=name, max_new_tokens=7, stop_strings=["\n\n"]).generation_budget == (
        7, ("\n\n",))


def test_generation_budget_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="DatasetConfig.max_new_tokens must be >= 1"):
        DatasetConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="stop_strings: expected non-empty strings"):
        DatasetConfig(stop_strings=[""])
