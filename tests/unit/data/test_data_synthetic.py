"""synthetic_arith: determinism, stable ids, gold values recomputed from the problem text."""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

import pytest

from drllm.data import DatasetConfig, load_examples
from drllm.data.synthetic import POOL_SIZE, generate_problem
from drllm.rewards import grade

WORD_FACTORS = {"doubles": 2, "triples": 3}
ADD_RE = r"\b(?:buys|finds) (\d+) more$|\bgets (\d+) [a-z]+ from [A-Z][a-z]+$"
SUB_RE = r"\b(?:gives (\d+) [a-z]+ to [A-Z][a-z]+|loses (\d+) [a-z]+|sells (\d+) [a-z]+)$"
SPLIT_RE = r"\bsplits (?:his|her) [a-z]+ into (\d+) equal groups and keeps one group$"


def solve_from_text(text: str) -> int:
    """Independent re-implementation: read the story sentence by sentence and compute."""
    story, question = text.rsplit(". How many ", 1)
    assert question.endswith(" have now?")
    clauses = re.split(r"\. (?:Then )?", story)
    if " and " in clauses[0]:  # one-step form: "Tom has 3 apples and buys 4 more"
        clauses[:1] = clauses[0].split(" and ", 1)
    start = re.match(r"^[A-Z][a-z]+ has (\d+) [a-z]+\s*$", clauses[0])
    assert start, clauses[0]
    value = int(start.group(1))
    for clause in clauses[1:]:
        clause = clause.strip().rstrip(".")
        if m := re.search(r"\bbuys (\d+) [a-z]+ with (\d+) [a-z]+ in each$", clause):
            value += int(m.group(1)) * int(m.group(2))
        elif m := re.search(ADD_RE, clause):
            value += int(m.group(1) or m.group(2))
        elif m := re.search(SUB_RE, clause):
            value -= int(next(g for g in m.groups() if g))
        elif m := re.search(r"\b(doubles|triples) the number of [a-z]+ (?:he|she) has$", clause):
            value *= WORD_FACTORS[m.group(1)]
        elif m := re.search(SPLIT_RE, clause):
            k = int(m.group(1))
            assert value % k == 0, f"inexact split in {text!r}"
            value //= k
        else:
            raise AssertionError(f"unrecognised clause {clause!r} in {text!r}")
        assert value > 0, text
    return value


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}


def eval_expression(expr: str) -> Fraction:
    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise AssertionError(f"unexpected node {ast.dump(node)}")

    return ev(ast.parse(expr, mode="eval").body)


def test_golden_problems_are_stable() -> None:
    # Pinned: ids name the same problem across versions and machines (resume depends on it).
    p = generate_problem("train", 1, 0)
    assert p.text == "Zoe has 3 apples and loses 1 apple. How many apples does Zoe have now?"
    assert (p.answer, p.expression, p.steps) == (2, "(3 - 1)", 1)
    p = generate_problem("train", 3, 0)
    assert p.text == ("Zoe has 10 stamps. She loses 7 stamps. Then she buys 3 packs with 10 stamps "
                      "in each. How many stamps does Zoe have now?")
    assert p.answer == 33


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_gold_recomputed_from_text_and_expression(level: int) -> None:
    steps = {1: 1, 2: 2, 3: 2, 4: 3, 5: 4}[level]
    for index in range(300):
        p = generate_problem("train", level, index)
        assert p.answer == solve_from_text(p.text), p.text
        assert eval_expression(p.expression) == p.answer, p
        assert p.steps == steps
        numbers_in_text = sorted(int(n) for n in re.findall(r"\d+", p.text))
        literals = sorted(int(n) for n in re.findall(r"\d+", p.expression))
        assert set(numbers_in_text) <= set(literals), p  # no stray numbers in the story


def test_levels_get_harder() -> None:
    means = [sum(generate_problem("train", lv, i).answer for i in range(300)) / 300
             for lv in range(1, 6)]
    assert means == sorted(means) and means[0] < 10 < means[2] and means[4] > 100
    assert all(1 <= generate_problem("train", 1, i).answer <= 18 for i in range(300))


def test_loaded_examples_ids_gold_and_prompt() -> None:
    report = load_examples(DatasetConfig(num_examples=None, levels=(1, 4), seed=0))
    assert report.rows_read == 2 * POOL_SIZE and report.rejected == {}
    assert {e.meta["level"] for e in report.examples} == {1, 4}
    by_id = {e.id: e for e in report.examples}
    assert len(by_id) == 2 * POOL_SIZE
    ex = by_id["synthetic_arith-L1-0"]
    assert ex.gold == "2" and ex.grader == "gsm8k_numeric" and ex.dataset == "synthetic_arith"
    assert ex.prompt == ("Question: Zoe has 3 apples and loses 1 apple. How many apples does Zoe "
                         "have now?\nReply with just the final number.")
    assert ex.messages == ({"role": "user", "content": ex.prompt},)
    assert ex.base_prompt == ex.prompt + "\nAnswer:"
    for e in report.examples[:200]:
        assert grade("gsm8k_numeric", e.gold, e.gold).reward == 1.0
        level, index = map(int, re.fullmatch(r"synthetic_arith-L(\d)-(\d+)", e.id).groups())
        assert e.gold == str(generate_problem("train", level, index).answer)


def test_problem_does_not_depend_on_seed_or_other_levels() -> None:
    level2 = load_examples(DatasetConfig(num_examples=None, levels=(2,), seed=5)).examples
    a = {e.id: e for e in level2}
    b = {e.id: e for e in load_examples(DatasetConfig(num_examples=None, seed=9)).examples}
    assert all(b[i] == a[i] for i in a)


def test_splits_are_distinct_problems_with_distinct_ids() -> None:
    train = load_examples(DatasetConfig(num_examples=None, levels=(3,))).examples
    test = load_examples(DatasetConfig(split="test", num_examples=None, levels=(3,))).examples
    assert {e.id for e in test} == {f"synthetic_arith-test-L3-{i}" for i in range(POOL_SIZE)}
    assert all(e.split == "test" for e in test)
    overlap = {e.prompt for e in train} & {e.prompt for e in test}
    assert len(overlap) < POOL_SIZE // 10  # small-number levels may coincide, most must differ
