"""The working a response writes: false equations found, true ones (and text that is not an
equation) left alone; the consistent grader refuses a lucky answer reached by false arithmetic."""

from __future__ import annotations

import pytest

from drllm.report import related_graders
from drllm.rewards import get_grader
from drllm.rewards.working import false_equation

FALSE = [
    # placebo "wins" and lucky labels of the validation searches (SmolLM2, verbatim)
    ("Leo has 4 stickers and 5 more, so he has 4 + 5 = 6 stickers now.", "4 + 5 = 6"),
    ("12 - 6 = 4 shells\nZoe has 4 shells left.\n\nThe answer is 4.", "12 - 6 = 4"),
    ("So, she now has 15 - 8 = 9 marbles.\n\nThe answer is 9", "15 - 8 = 9"),
    ("Maria has 9 - 6 = 1 cookie left.", "9 - 6 = 1"),
    ("He has 2 + 1 = 2 + 1 = 4 books.", "2 + 1 = 2 + 1 = 4"),
    ("Each box holds 12 x 3 = 38 pens.", "12 x 3 = 38"),
    ("$1,200 / 4 = $350 each", "$1,200 / 4 = $350"),
]
TRUE_OR_NONE = [
    "Sam has 2 + 1 = 2 + 1 = 3 books.",
    "Maria has 9 - 6 = 3 cookies left.\n\nThe answer is 3.",
    "Emma has 7 cards and buys 6 more, so Emma has 7 - 6 = 1 card left.",  # true, if misread
    "10 / 3 = 3.33 apples each",                  # rounded to the decimals written
    "$1,200 / 4 = $300",
    "3 * 5 = 15 cards; 3 × 5 = 15; 15 ÷ 3 = 5",
    "Ella now has 4x - 2 = 2x - 2 shells",         # variables: not read
    "7 books + 6 books = 14 books",                # units inside: not read
    "The answer is 5 = 5.",                        # nothing computed
    "version 2.0 = 3",
    "",
]


@pytest.mark.parametrize("text,equation", FALSE)
def test_false_equations_are_found(text: str, equation: str) -> None:
    assert false_equation(text) == equation


@pytest.mark.parametrize("text", TRUE_OR_NONE)
def test_true_equations_and_non_equations_pass(text: str) -> None:
    assert false_equation(text) is None


def test_the_consistent_grader_refuses_answers_reached_by_false_working() -> None:
    strict, consistent = get_grader("gsm8k_numeric"), get_grader("gsm8k_numeric_consistent")
    lucky = "Leo has 4 stickers and 5 more, so he has 4 + 5 = 6 stickers now."
    assert strict.grade(lucky, "6").reward == 1.0
    refused = consistent.grade(lucky, "6")
    assert refused.reward == 0.0 and refused.reason == "false working: 4 + 5 = 6"
    assert refused.extracted == "6"
    right = "Leo has 4 + 5 = 9 stickers now.\nThe answer is 9."
    assert consistent.grade(right, "9").reward == 1.0
    # only the working up to the stated answer counts (what a row stopped there has written)
    assert consistent.grade("The answer is 9.\n2 + 2 = 5", "9").reward == 1.0
    assert consistent.grade("4 + 5 = 6", "9").reward == 0.0  # wrong anyway: the strict verdict
    assert related_graders("gsm8k_numeric") == [
        "gsm8k_numeric", "gsm8k_numeric_consistent", "gsm8k_numeric_lenient"]
