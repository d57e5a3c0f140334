"""Strict numeric grading reads a stated answer: table tests from real SmolLM2 outputs.

The first five rows are the broken labels the old reward (the last number anywhere) accepted in
a `synthetic_arith` search; the rest are SmolLM2-135M-Instruct default-path responses to
`synthetic_arith` level 1-2 questions (96 new tokens), correct and incorrect.
"""

from __future__ import annotations

import itertools

import pytest

from drllm.rewards import get_grader, grade
from drllm.rewards.stated import PENDING, Stated, first_stated

BROKEN = [  # (gold, response): each contains the gold only as a stray number
    ("1", "L.\n* (1)\n\n\n\n\n\n\nThe-"),
    ("1", " neighb common 5, 6, 1, 1, 1"),
    ("1", "10\n\nSam has 10 pencils left. He loses 1"),
    ("1", "5 + 4 = 11\nSam has 5 + 1"),
    ("2", "Ben has 4 pencils and gives 2 pencils to Ella. To Ben,"),
    ("2", "The answer is 1. The answer is 2. The answer is "),
    ("1", "-2.5 + 2 + 1/24 + 1"),
    ("3", "You can now, 1-2, 2, 3, "),
    ("2", "Ben has 4 pencils and gives 2 pencils to Ella, so Ben now"),
]


@pytest.mark.parametrize(("gold", "response"), BROKEN)
def test_stray_numbers_are_not_answers(gold: str, response: str) -> None:
    assert grade("gsm8k_numeric", response, gold).reward == 0.0
    assert grade("gsm8k_numeric_lenient", response, gold).reward == 1.0  # what was exploited


REAL = [  # (gold, response, finish reason, strict reward, where)
    ("4", "Sam has 3 pencils. Jack sold 3 pencils, so he has 3 - 3 = 0 pencils left.\n\n"
          "Sam has 3 pencils now.\n\nThe answer is 3.", "eos", 0.0, "answer marker"),
    ("6", "Zoe has 7 cards and loses 1 card, so she has 7 - 1 = 6 cards remaining.\nShe has "
          "now 6 cards.\n#### 6\nThe answer is: 6", "eos", 1.0, "####"),
    ("1", "Tom has 2 cards and gives 1 to Jack, so he has 2 - 1 = 1 more card now.", "eos",
     1.0, "final ="),
    ("5", "Lily has 6 cards and sells 1 card, so she has 6 - 1 = 5 cards remaining.", "eos",
     1.0, "final ="),
    ("12", "Sam has 7 - 5 = 2 stamps left.\nThe answer is 2.\n\nQuestion: 20 is the answer to "
           "20.\nReply with just the answer.", "eos", 0.0, "answer marker"),
    ("14", "Leo has 5 + 1 = 6 pencils. Liam has 1 more.\nThe answer is 6 + 1 = 7.\n\nQuestion:",
     "length", 0.0, "answer marker"),
    # a label of a 200-question search: the final "=" says 4, the answer sentence says 6
    ("4", "Anna has 6 coins, and 2 of them are given to Anna. So, Anna has 6 - 2 = 4. Now, Anna "
          "has 6 - 2 = 4.\n\nThe answer to this question is 6.", "eos", 0.0, "answer marker"),
    ("4", "Zoe has 5 - 1 = 4 shells.\n\nThe answer to the problem is: 4 shells.", "eos", 1.0,
     "answer marker"),
    ("7", "Leo has 5 + 1 = 6 pencils. Liam has 1 more.\nThe answer is 6 + 1 = 7.\n\nQuestion:",
     "length", 1.0, "answer marker"),
    ("8", "Sam has 19 - 3 = 16 marbles left.\nSam now has 11 - 2 = 8 marbles.\n#### 8\nThe answ",
     "length", 1.0, "####"),
    ("20", "Tom has 21 - 2 = 18 shells now.\nTom has 18 + 1 = 20 shells now.\nTom has 20",
     "length", 0.0, None),  # cut by the budget before it stated an answer
    ("15", "Omar has 5 stickers, and Ella has 9. So, Omar has 7 + 8 = 15 coins", "length",
     0.0, None),
    ("4", "Zoe has 5 shells, and she lost 1 shell. So, the final number is 5 + 1 = 6.", "eos",
     0.0, "final ="),
    ("60", "11 * 5 = 60\nThe answer is 60.\n\nThe answer is 60.", "eos", 1.0, "answer marker"),
    ("7", "7", "eos", 1.0, "bare"),
    ("7", "**7 apples.**", "eos", 1.0, "bare"),
    ("7", "The answer is **7**.", "eos", 1.0, "answer marker"),
    ("7", "The answer is 6 + 1", "eos", 0.0, None),
    # a label the search found before terms were told from numbers: "= 2x - 2" is no answer
    ("2", "Ben gives 2 pencils to Ella, which is 2x. Ella now has 4x - 2 = 2x - 2.\n\nThe last "
          "number is 2x - 2. So, Ben now has 4x - 2.", "eos", 0.0, None),
    ("2", "2x", "eos", 0.0, None),
]


@pytest.mark.parametrize(("gold", "response", "finish", "reward", "where"), REAL)
def test_real_outputs(gold: str, response: str, finish: str, reward: float,
                      where: str | None) -> None:
    got = get_grader("gsm8k_numeric").grade(response, gold, ended=finish != "length")
    assert (got.reward, got.where) == (reward, where)


def test_first_stated_of_a_prefix_waits_until_the_answer_is_complete() -> None:
    assert first_stated("The answer is 1", ended=False) is PENDING  # may become 12 or 1 + 1
    assert first_stated("The answer is 1.", ended=False) is PENDING  # may become 1.5
    assert first_stated("The answer is 1. ", ended=False) == Stated("1", "answer marker", 14)
    assert first_stated("7", ended=False) is PENDING
    assert isinstance(first_stated("7\n", ended=False), Stated)


PIECES = ["7", "1", " ", ".", "\n", "The answer is ", "####", " = ", "+", "x", "**"]


@pytest.mark.parametrize("grader", ["gsm8k_numeric", "gsm8k_numeric_consistent"])
def test_stopping_at_the_stated_answer_is_exact(grader: str) -> None:
    """verdict_final(prefix) => every continuation grades the same, ended or cut."""
    g = get_grader(grader)
    for n in (1, 2, 3):
        for parts in itertools.product(PIECES, repeat=n):
            prefix = "".join(parts)
            if not g.verdict_final(prefix):
                continue
            for tail in itertools.product(PIECES, repeat=2):
                for gold in ("7", "1"):
                    for ended in (True, False):
                        want = g.grade(prefix, gold).reward
                        assert g.grade(prefix + "".join(tail), gold, ended=ended).reward == want
