"""Lenient counterparts: the name mapping, and ``math_boxed_lenient`` reading unboxed answers."""

from __future__ import annotations

import pickle

import pytest

from drllm.rewards import (
    GRADERS,
    LenientMathBoxedGrader,
    final_answer_lenient,
    get_grader,
    grade,
    lenient_counterpart,
)
from drllm.rewards.base import Grader

EXPECTED_COUNTERPARTS = {
    "exact": None,
    "gsm8k_numeric": "gsm8k_numeric_lenient",
    "gsm8k_numeric_consistent": "gsm8k_numeric_lenient",
    "gsm8k_numeric_lenient": "gsm8k_numeric_lenient",
    "math_boxed": "math_boxed_lenient",
    "math_boxed_lenient": "math_boxed_lenient",
    "mc_letter": "mc_letter_lenient",
    "mc_letter_lenient": "mc_letter_lenient",
}


def test_every_registered_grader_has_its_documented_counterpart() -> None:
    assert {name: lenient_counterpart(name) for name in GRADERS.names()} == EXPECTED_COUNTERPARTS


def test_counterparts_are_registered_and_their_own_counterpart() -> None:
    for name in GRADERS.names():
        lenient = lenient_counterpart(name)
        if lenient is not None:
            assert lenient in GRADERS
            assert lenient_counterpart(lenient) == lenient


def test_unknown_grader_raises_key_error() -> None:
    with pytest.raises(KeyError, match="known: exact"):
        lenient_counterpart("nope")


def test_a_dangling_counterpart_name_is_reported(monkeypatch) -> None:
    class Dangling(Grader):
        name = "dangling"
        lenient_name = "no_such_grader"

        def _check_gold(self, gold: str) -> str:
            return gold

        def _grade(self, response: str, gold: str):  # pragma: no cover - never graded
            raise AssertionError

    monkeypatch.setitem(GRADERS._items, "dangling", Dangling)
    with pytest.raises(KeyError, match="no_such_grader"):
        lenient_counterpart("dangling")


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        ("The answer is: 5", "5"),  # MetaMath / DART-style answer line
        ("Final Answer: The final answer is $x=3$. I hope it is correct.", "3"),
        ("The answer is: $\\frac{1}{2}$.", "0.5"),
        ("**Answer:** $[-2, 7]$", r"-2 \le x \le 7"),
        ("She pays 18 * 4 = 72 dollars.\n#### 72", "72"),
        ("So the area is $12$ square units.", "12"),
        ("Adding them up, there are 12 ways.", "12"),
        ("The answer is 5 cm.", r"5\text{ cm}"),
        ("The answer is 3.5.", r"\frac72"),
        (r"Boxed still wins: $\boxed{2}$ and $\boxed{1}$.", r"\{1, 2\}"),
    ],
)
def test_math_boxed_lenient_accepts_unboxed_final_answers(response: str, gold: str) -> None:
    assert grade("math_boxed_lenient", response, gold).reward == 1.0
    if "boxed" not in response:
        assert grade("math_boxed", response, gold).reason == "no boxed answer"  # strict: 0


@pytest.mark.parametrize(
    ("response", "gold", "reason"),
    [
        ("Adding them up, there are 13 ways.", "12", "mismatch"),
        ("The answer is: 6", "5", "mismatch"),
        (r"The answer is $\boxed{4}$, not 5.", "5", "mismatch"),  # a box is the answer
        ("Thus $x = 5$ holds in all 3 cases.", "5", "mismatch"),  # the last number is read
        ("I cannot solve this.", "5", "no final answer found"),
        ("", "5", "no final answer found"),
    ],
)
def test_math_boxed_lenient_rejects(response: str, gold: str, reason: str) -> None:
    got = grade("math_boxed_lenient", response, gold)
    assert (got.reward, got.reason) == (0.0, reason)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is: 42", "42"),
        ("the final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("Answer: \\(x + 1\\)", "x + 1"),
        ("answer is $$7$$", "7"),
        ("#### 1,080\n\nQuestion: next", "1,080"),
        ("First answer: 3. Then the answer is 4.", "4"),  # the last phrase
        ("We get $y = 2$ and then 17 apples.", "17"),  # a number after the last span
        ("We get 17 and then $y = 2$.", "y = 2"),
        ("It costs $5 only", "5"),  # a lone dollar sign is no span
        ("nothing here", None),
        (None, None),
    ],
)
def test_final_answer_lenient(text: str | None, expected: str | None) -> None:
    assert final_answer_lenient(text) == expected


def test_gsm8k_lenient_counterpart_reads_the_last_number_anywhere() -> None:
    # No box, no "####", no "answer is", no final "=": only the lenient grader reads it.
    lenient = lenient_counterpart("gsm8k_numeric")
    assert lenient == "gsm8k_numeric_lenient"
    assert grade(lenient, "She earns 72 dollars per week", "#### 72").reward == 1.0
    assert grade("gsm8k_numeric", "She earns 72 dollars per week", "#### 72").reward == 0.0


def test_mc_letter_counterpart_is_the_lenient_letter_grader() -> None:
    assert grade("mc_letter", "The answer is B", "B").reward == 0.0
    assert grade(lenient_counterpart("mc_letter"), "The answer is B", "B").reward == 1.0


def test_lenient_math_grader_is_a_math_boxed_grader_with_its_own_instance() -> None:
    lenient = get_grader("math_boxed_lenient")
    assert isinstance(lenient, LenientMathBoxedGrader) and lenient.name == "math_boxed_lenient"
    assert lenient is not get_grader("math_boxed")
    with pytest.raises(ValueError, match="empty"):
        lenient.validate_gold(" ")


def test_lenient_math_grader_pickles_as_its_own_class() -> None:
    clone = pickle.loads(pickle.dumps(LenientMathBoxedGrader(timeout_s=3.0)))
    try:
        assert type(clone) is LenientMathBoxedGrader and clone.checker.timeout_s == 3.0
        assert clone.grade("So the answer is 7.", "7").reward == 1.0
    finally:
        clone.close()
