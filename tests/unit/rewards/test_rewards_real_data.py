"""Graders on REAL benchmark rows: gold solutions score 1, value-changing perturbations score 0.

Competition math: all 4,500 rows for the (mostly string-path) self-grade; the perturbed-answer
checks go through math-verify (~10-40 ms each), so they use deterministic samples of 1,125 rows
(every 4th row; measured on all rows: digit 4,499/4,500, "+1" 4,499/4,500). GSM8K: all rows.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pandas as pd

from drllm.data.competition_math import boxed_gold
import pytest

from drllm.rewards import (
    MathBoxedGrader,
    boxed_answers,
    get_grader,
    gsm8k_gold,
    last_boxed,
    normalize_math_answer,
)

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
MATH_SAMPLE_STEP = 4


@pytest.fixture(scope="module")
def math_rows() -> list[tuple[str, str]]:
    df = pd.read_parquet(DATA / "competition_math" / "pool.parquet", columns=["solution"])
    rows = [(sol, boxed_gold(sol)) for sol in df["solution"]]  # the adapter's gold
    assert len(rows) == 4500
    assert all(gold for _, gold in rows), "every MATH solution has a final boxed answer"
    return rows  # type: ignore[return-value]


@pytest.fixture(scope="module")
def math_grader() -> MathBoxedGrader:
    grader = MathBoxedGrader()
    yield grader
    grader.close()


def _bump_first_digit(gold: str) -> str:
    """Change the first digit (d -> d+1 mod 10): a different value, unlike a units exponent or a
    base subscript, which are usually the LAST digit. No digit: append ``+1``."""
    match = re.search(r"\d", gold)
    if match is None:
        return gold + "+1"
    i = match.start()
    return gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1:]


def _rate(values: list[float]) -> float:
    return sum(values) / len(values)


def test_math_gold_solutions_score_one(math_rows, math_grader) -> None:
    """Every solution scores 1 against the adapter's gold. A few solutions box several
    answers in one sentence ("the solutions are $\\boxed{-2}$ and $\\boxed{1}$"): the grader
    reads those as ONE list answer, and so does the adapter, whose gold is that list; against
    the last box alone, distinct extra answers rightly score 0."""
    rewards, several, last_box_only = [], 0, []
    for solution, gold in math_rows:
        answers = boxed_answers(solution)
        assert answers is not None and answers[-1] == last_boxed(solution)
        assert gold == ", ".join(answers)
        if len(answers) > 1:
            several += 1
            last_box_only.append(math_grader.grade(solution, answers[-1]).reward)
        math_grader.validate_gold(gold)
        rewards.append(math_grader.grade(solution, gold).reward)
    assert sum(rewards) == len(math_rows) == 4500
    assert several <= 20, several  # 14 in this pool
    # Half of them restate one value ("$x+11$ or $11+x$"): equal to the last box as a set.
    assert 0 < last_box_only.count(0.0) < several


@pytest.mark.parametrize(
    ("perturb", "offset"),
    [(_bump_first_digit, 0), (lambda gold: gold + "+1", 2)],
    ids=["first-digit", "plus-one"],
)
def test_math_perturbed_answers_score_zero(math_rows, math_grader, perturb, offset) -> None:
    sample = math_rows[offset::MATH_SAMPLE_STEP]
    assert len(sample) >= 1000
    wrong = [math_grader.grade(f"So the answer is $\\boxed{{{perturb(gold)}}}$.", gold).reward == 0
             for _, gold in sample]
    assert _rate(wrong) >= 0.99, _rate(wrong)


def test_math_verify_path_accepts_rewritten_numeric_answers(math_rows, math_grader) -> None:
    """``N+0`` is not string-equal to ``N``: only the symbolic check can score it 1."""
    numeric = re.compile(r"-?\d+(\.\d+)?|-?\\frac\{\d+\}\{\d+\}|-?\d*\\sqrt\{\d+\}|\d*\\pi")
    golds = [g for _, g in math_rows[1::MATH_SAMPLE_STEP]
             if numeric.fullmatch(normalize_math_answer(g))]
    assert len(golds) >= 800
    grades = [math_grader.grade(f"\\boxed{{{normalize_math_answer(g)} + 0}}", g) for g in golds]
    assert _rate([g.reward for g in grades]) >= 0.99
    assert all(g.reason == "match (math-verify)" for g in grades if g.reward)


@pytest.fixture(scope="module")
def gsm8k_rows() -> list[tuple[str, str]]:
    df = pd.read_parquet(DATA / "gsm8k" / "main" / "train.parquet", columns=["answer"])
    return [(answer, gsm8k_gold(answer)) for answer in df["answer"]]  # type: ignore[misc]


def test_gsm8k_gold_solutions_score_one(gsm8k_rows) -> None:
    grader = get_grader("gsm8k_numeric")
    rewards = [grader.grade(answer, answer).reward for answer, _ in gsm8k_rows]  # gold = raw text
    assert len(rewards) == 7473
    assert _rate(rewards) >= 0.99, _rate(rewards)


def test_gsm8k_perturbed_numbers_score_zero(gsm8k_rows) -> None:
    grader = get_grader("gsm8k_numeric")
    wrong = []
    for answer, gold in gsm8k_rows:
        body = answer.rsplit("####", 1)[0]
        value = Decimal(gold)
        for response in (f"{body}#### {value + 1}", f"{body}The answer is {value * 10 + 1}."):
            wrong.append(grader.grade(response, gold).reward == 0)
    assert _rate(wrong) >= 0.99, _rate(wrong)
