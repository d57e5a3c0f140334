"""Graders: registry, known verdicts, gold validation, and never raising on malformed output."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drllm.rewards import (
    GRADERS,
    ExactGrader,
    Grader,
    MathBoxedGrader,
    MCLetterGrader,
    get_grader,
    grade,
    normalize_math_answer,
)
from drllm.types import Grade

GOLD_FOR = {"exact": "42", "mc_letter": "B", "mc_letter_lenient": "B",
            "math_boxed": r"\frac{1}{2}", "math_boxed_lenient": r"\frac{1}{2}",
            "gsm8k_numeric": "#### 1,080", "gsm8k_numeric_lenient": "#### 1,080",
            "gsm8k_numeric_consistent": "#### 1,080"}


def test_registry_lists_every_grader_and_rejects_unknown() -> None:
    assert GRADERS.names() == sorted(GOLD_FOR)
    with pytest.raises(KeyError, match="known: exact"):
        get_grader("nope")


def test_get_grader_returns_one_shared_instance() -> None:
    assert get_grader("exact") is get_grader("exact")
    assert isinstance(get_grader("math_boxed"), Grader)


def test_exact_dummy() -> None:
    assert grade("exact", " 42\n", "42") == Grade(1.0, "match", "42", "whole response")
    assert grade("exact", "42.0", "42").reward == 0.0


@pytest.mark.parametrize(
    ("response", "reward", "reason"),
    [
        ("B", 1.0, "match"),
        ("Answer: B", 1.0, "match"),
        ("B.", 1.0, "match"),
        ("  (B)\n", 1.0, "match"),
        ("B)", 1.0, "match"),
        ("C", 0.0, "mismatch"),
        ("b", 0.0, "no letter found"),
        ("BC", 0.0, "no letter found"),
        ("The answer is B", 0.0, "no letter found"),
        ("B. photosynthesis", 0.0, "no letter found"),
        ("F", 0.0, "no letter found"),
        ("", 0.0, "no letter found"),
    ],
)
def test_mc_letter_strict(response: str, reward: float, reason: str) -> None:
    got = grade("mc_letter", response, "B")
    assert (got.reward, got.reason) == (reward, reason)


@pytest.mark.parametrize(
    ("response", "reward"),
    [
        ("B", 1.0), ("Answer: B", 1.0), ("B.", 1.0),
        ("The answer is B", 1.0), ("B. photosynthesis", 1.0), ("(B) photosynthesis", 1.0),
        ("The answer is C", 0.0), ("b", 0.0), ("BC", 0.0), ("photosynthesis", 0.0),
        # SmolLM2 label responses of a generated-letter ARC search (gold B here): a response
        # that lists the options chose none; one that repeats its choice chose it
        ("B. heat convection from the mantle\nB. heat convection from the mantle", 1.0),
        ("B. They were squeezed up through the soil.\n\nB. They were", 1.0),
        ("B. NaOH and HCl\nC. NaOH and HCl", 0.0),
        ("B. Fe\nA. I\nC. Ir\nD. Pb", 0.0),
        ("B. a forest fire\nB. a rainstorm\n(C) a", 0.0),
        ("B. coal burning\nA. charcoal grilling\nThe answer is B", 1.0),  # an answer phrase
    ],
)
def test_mc_letter_lenient(response: str, reward: float) -> None:
    assert grade("mc_letter_lenient", response, "B").reward == reward


def test_mc_letter_is_configurable() -> None:
    four = MCLetterGrader(letters="ABCD")
    assert four.grade("E", "A").reason == "no letter found"
    with pytest.raises(ValueError, match="not one of the letters"):
        four.validate_gold("E")
    custom = MCLetterGrader(pattern=r"\[({letters})\]", letters="ABCD")
    assert custom.grade("[C]", "C").reward == 1.0
    assert custom.grade("C", "C").reward == 0.0
    with pytest.raises(ValueError, match="exactly one capture group"):
        MCLetterGrader(pattern=r"({letters})({letters})")
    with pytest.raises(ValueError, match="uppercase"):
        MCLetterGrader(letters="abc")


def test_mc_letter_rejects_numeric_gold_with_a_hint() -> None:
    with pytest.raises(ValueError, match="normalize_letter"):
        get_grader("mc_letter").validate_gold("2")


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        (r"\boxed{\dfrac{1}{2}}", r"\frac12"),
        (r"\boxed{0.5}", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{1}{2}\sqrt{3}"),
        (r"\boxed{x = 3}", "3"),
        (r"\boxed{30^\circ}", "30"),
        (r"\boxed{12 \text{ cm}^2}", "12"),
        (r"\boxed{\$1,000}", "1000"),
        (r"\boxed{\left( 1, 2 \right)}", "(1,2)"),
        (r"\boxed{\text{(C)}}", "C"),
        (r"\boxed{\textbf{Monday}}", r"\text{Monday}"),
        (r"\boxed{2\sqrt{3}}", r"\sqrt{12}"),
        (r"\boxed{(x+1)^2}", "x^2+2x+1"),
        (r"\boxed{[1, 3)}", r"[1,3)"),
        (r"\boxed{3.0}", "3"),
        (r"\boxed{.5}", "0.5"),
        (r"The answer is \boxed 7.", "7"),
        (r"\boxed{14400}", r"14,\!400"),
        (r"\boxed{1\,000}", "1000"),
        (r"\boxed{\begin{pmatrix} 6 \\ 3 \end{pmatrix}}", r"\begin{pmatrix}6\\3\end{pmatrix}"),
    ],
)
def test_math_boxed_equivalent(response: str, gold: str) -> None:
    got = grade("math_boxed", response, gold)
    assert got.reward == 1.0, got


@pytest.mark.parametrize(
    ("response", "gold", "reason"),
    [
        (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", "mismatch"),
        (r"\boxed{x^2+2x}", "x^2+2x+1", "mismatch"),
        (r"\boxed{(1, 3]}", "[1,3)", "mismatch"),
        (r"\boxed{-5}", "5", "mismatch"),
        (r"\boxed{50}", "5", "mismatch"),
        (r"\boxed{45135}", r"45^\circ, 135^\circ", "mismatch"),  # a list, not 45,135
        (r"\boxed{\begin{pmatrix} 7 \\ 3 \end{pmatrix}}", r"\begin{pmatrix} 6 \\ 3 \end{pmatrix}",
         "mismatch"),
        (r"\boxed{1101_5}", "1101_4", "mismatch"),  # math-verify alone ignores the base
        (r"\boxed{3 x}", "3", "mismatch"),
        ("The answer is 5", "5", "no boxed answer"),
        (r"\boxed{}", "5", "empty boxed answer"),
        (r"\boxed{5", "5", "no boxed answer"),
    ],
)
def test_math_boxed_wrong(response: str, gold: str, reason: str) -> None:
    got = grade("math_boxed", response, gold)
    assert (got.reward, got.reason) == (0.0, reason)


def test_math_boxed_string_only_mode_never_starts_the_worker() -> None:
    grader = MathBoxedGrader(symbolic=False)
    assert grader.grade(r"\boxed{\dfrac{1}{2}}", r"\frac12").reward == 1.0
    assert grader.grade(r"\boxed{2/4}", r"\frac12").reason == "mismatch"
    assert grader.grade(r"\boxed{0.5}", r"\frac12").reason == "match (decimal rule)"  # no sympy
    assert grader.checker.pid is None


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (r"\left(1,2\right)", "(1,2)"), (r"\dfrac{3}{4}", r"\frac{3}{4}"),
        (r"\frac12", r"\frac{1}{2}"), (r"\sqrt3", r"\sqrt{3}"), ("1,000,000", "1000000"),
        ("3/4", r"\frac{3}{4}"), ("2.50", "2.5"), ("7.", "7"), ("-0", "0"),
        (r"$x = 5$", "5"), (r"5\%", "5"), (r"10\text{ inches}", "10"),
        (r"\text{Monday}", "monday"), (r"\left\{1\right\}", r"\{1\}"),
    ],
)
def test_normalize_math_answer(raw: str, normalized: str) -> None:
    assert normalize_math_answer(raw) == normalized


@pytest.mark.parametrize(
    ("response", "reward", "reason"),
    [
        ("She earns 18 * 4 = $72.", 1.0, "match"),
        ("#### 72", 1.0, "match"),
        ("so the answer is 72.0", 1.0, "match"),
        (r"\boxed{\$72}", 1.0, "match"),
        (r"\boxed{72 \text{ dollars}}", 1.0, "match"),
        ("#### 72\n\nQuestion: Tom has 5 apples", 1.0, "match"),
        ("72 is wrong, it is 73", 0.0, "no stated answer"),
        (r"I got 72 but \boxed{71}", 0.0, "mismatch"),
        (r"\boxed{seventy-two}", 0.0, "no number in the boxed answer"),
        ("no idea", 0.0, "no stated answer"),
    ],
)
def test_gsm8k_numeric(response: str, reward: float, reason: str) -> None:
    got = grade("gsm8k_numeric", response, "#### 72")
    assert (got.reward, got.reason) == (reward, reason)


@pytest.mark.parametrize(
    ("response", "reward", "reason"),
    [
        ("She earns 18 * 4 = $72.", 1.0, "match"),
        ("72 is wrong, it is 73", 0.0, "mismatch"),
        (r"I got 72 but \boxed{71}", 0.0, "mismatch"),
        (r"\boxed{seventy-two}", 0.0, "no number in the boxed answer"),
        ("no idea", 0.0, "no number found"),
        ("It costs $72.", 1.0, "match"),
    ],
)
def test_gsm8k_numeric_lenient_reads_the_last_number(response: str, reward: float,
                                                     reason: str) -> None:
    got = grade("gsm8k_numeric_lenient", response, "#### 72")
    assert (got.reward, got.reason) == (reward, reason)


def test_gsm8k_numeric_tolerance_and_commas() -> None:
    assert grade("gsm8k_numeric", "It costs $1,080.", "1080").reward == 0.0  # not stated
    assert grade("gsm8k_numeric", "It costs 1,000 + 80 = $1,080.", "1080").reward == 1.0
    assert grade("gsm8k_numeric_lenient", "It costs $1,080.", "1080").reward == 1.0
    assert grade("gsm8k_numeric", "0.3333333", "#### 0.33333333").reward == 1.0
    assert grade("gsm8k_numeric", "0.3334", "#### 0.3333").reward == 0.0
    assert grade("gsm8k_numeric", "0", "#### 0").reward == 1.0
    assert grade("gsm8k_numeric", "192000001", "#### 192,000,000").reward == 0.0  # ints: exact
    assert grade("gsm8k_numeric", r"\boxed{\frac{1}{2}}", "0.5").reward == 1.0


@pytest.mark.parametrize(
    ("name", "gold"),
    [
        ("mc_letter", "b"), ("mc_letter", "AB"), ("mc_letter_lenient", ""),
        ("math_boxed", "  "), ("math_boxed", r"\frac{1}{2"), ("gsm8k_numeric", "#### lots"),
        ("gsm8k_numeric", "The answer"), ("exact", None),
    ],
)
def test_unusable_gold_raises_value_error(name: str, gold: str) -> None:
    with pytest.raises(ValueError):
        get_grader(name).validate_gold(gold)
    with pytest.raises(ValueError):  # grade() fails fast too instead of scoring everything 0
        grade(name, "anything", gold)


MALFORMED = [
    None, "", " ", "\x00", "\\", "{" * 5000, "}" * 5000, "\\boxed{" * 2000,
    "\\boxed{" + "{" * 3000 + "}", "\\boxed{\\frac{1}{0}}", "\\boxed{\\sqrt{-}}",
    "\\boxed{x^{y^{z^{w}}}!!}", "\\boxed{" + "9" * 5000 + "}", "#### " + "9" * 10_000,
    "\\boxed{\\begin{pmatrix}1&2\\end{pmatrix}}", "\\boxed{\U0001f600\u202e\ufeff}",
    "𝟘𝟙𝟚 \\boxed{𝟙}", "Answer: " + "B" * 100_000, "1" * 200_000 + "." + "2" * 10,
    "\\boxed{\\left(}", "$$$$", "\\boxed{1/0}", "\\boxed{\\infty - \\infty}",
    "\\boxed{\ud800 + 1}", "\\boxed{x_{\\text{\n}}}",
]


@pytest.mark.parametrize("name", sorted(GOLD_FOR))
@pytest.mark.parametrize("response", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_outputs_score_zero_without_raising(name: str, response: object) -> None:
    got = get_grader(name).grade(response, GOLD_FOR[name])  # type: ignore[arg-type]
    assert isinstance(got, Grade) and got.reward in (0.0, 1.0) and got.reason


_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="\\{}$^_()[]0123456789.,-+/=: boxedfracsqrtABCDE#", max_size=200),
    st.builds(lambda a, b: f"{a}\\boxed{{{b}}}", st.text(max_size=50), st.text(max_size=80)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=_TEXT)
def test_property_no_grader_raises_on_any_text(response: str) -> None:
    for name in GRADERS.names():
        got = get_grader(name).grade(response, GOLD_FOR[name])
        assert isinstance(got, Grade)
        assert got.reward in (0.0, 1.0)


def test_exact_is_a_grader_subclass_dummy() -> None:
    assert issubclass(ExactGrader, Grader) and ExactGrader.name == "exact"


PATHOLOGICAL = {
    "box-like commands": "\\boxeda" * 100_000,
    "answer-is then spaces": "answer is" + " " * 200_000 + "!",
    "comma digits": "1," * 300_000,
    "open braces": "\\boxed{" + "{" * 1_000_000,
    "escapes": "\\" * 1_000_000,
    "long boxed number": "\\boxed{" + "1" * 500_000 + "}",
    "many boxes": "\\boxed{1}, " * 200_000 + "\\boxed{2}",
    "dollars": "$" * 1_000_000,
    "answer phrases": "the answer is " * 100_000,
}


@pytest.mark.parametrize("name", sorted(GOLD_FOR))
@pytest.mark.parametrize("response", list(PATHOLOGICAL.values()), ids=list(PATHOLOGICAL))
def test_pathological_megabyte_outputs_are_graded_fast(name: str, response: str) -> None:
    start = time.monotonic()
    got = get_grader(name).grade(response, GOLD_FOR[name])
    assert got.reward == 0.0
    assert time.monotonic() - start < 2.0


ARC_PROMPT = ("Question: Which of these provides the best evidence that Earth's crust is divided "
              "into tectonic plates?\nA. the distribution of water on Earth's surface\n"
              "B. the distribution of biomes on Earth's surface\n"
              "C. the distribution of rock types on Earth's surface\n"
              "D. the distribution of earthquakes on Earth's surface\n"
              "Answer with a single letter (A, B, C, or D) and no explanation.")


@pytest.mark.parametrize(
    ("response", "reward", "reason"),
    [
        # a SmolLM2 label of a generated-letter ARC-Easy search (gold D): the letter is right,
        # the text is C's
        ("D. the distribution of rock types on Earth's surface\n\nD. the", 0.0,
         "letter D written with choice C's text"),
        ("The correct answer is D. The distribution of rock types on Earth's surface.", 0.0,
         "letter D written with choice C's text"),
        ("D. the distribution of earthquakes on Earth's surface", 1.0, "match"),
        ("**D. The distribution of earthquakes on Earth's surface.**", 1.0, "match"),
        ("D. the distribution of earthquakes", 1.0, "match"),   # its own choice, cut
        ("D. the", 1.0, "match"),                               # too short to name a choice
        ("D. volcanoes", 1.0, "match"),                         # names no choice
        ("Answer: D", 1.0, "match"),
        ("C. the distribution of earthquakes on Earth's surface", 0.0, "mismatch"),
    ],
)
def test_mc_letter_lenient_refuses_the_gold_letter_with_another_choices_text(
        response: str, reward: float, reason: str) -> None:
    got = get_grader("mc_letter_lenient").grade(response, "D", prompt=ARC_PROMPT)
    assert (got.reward, got.reason) == (reward, reason)
    if reward == 0.0 and reason.startswith("letter"):
        # without the prompt the letter grader cannot tell, and reads the letter
        assert get_grader("mc_letter_lenient").grade(response, "D").reward == 1.0


def test_prompt_check_leaves_other_graders_and_choiceless_prompts_alone() -> None:
    assert get_grader("mc_letter_lenient").grade(
        "D. the distribution of rock types", "D", prompt="Which is it? Answer A, B, C or D.",
    ).reward == 1.0
    assert get_grader("gsm8k_numeric").grade(
        "Ben has 4 - 2 = 2 pencils.", "2", prompt="A. 1\nB. 2\nBen has 4 pencils ...",
    ).reward == 1.0
