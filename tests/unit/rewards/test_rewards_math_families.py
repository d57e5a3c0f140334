"""``math_boxed`` verdicts on answer families where a grader most often disagrees with a human:
matrices, intervals vs inequalities, several boxed answers vs one set, decimal approximations of
fractions, and text / units inside the box.

Every case is written here in the answer formats of MATH solutions (``$\\boxed{...}$`` at the
end of a sentence, ``\\dfrac``, ``\\left( \\right)``, ``^\\circ``, ``\\text{ cm}``), DART-Math
``gt_ans`` golds (bare LaTeX) and GSM8K (``\\$`` amounts, percentages), and asserts the exact
verdict (reward 1 or 0).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from drllm.rewards import boxed_answers, grade
from drllm.rewards.math_numeric import (
    decimal_matches,
    decimal_verdict,
    parse_decimal,
    parse_rational,
    significant_digits,
    terminates,
)

Case = tuple[str, str, float]


def _check(response: str, gold: str, expected: float) -> None:
    got = grade("math_boxed", response, gold)
    assert got.reward == expected, (response, gold, got)


def _ids(cases: list[Case]) -> list[str]:
    return [f"{'eq' if c[2] else 'ne'}-{i}" for i, c in enumerate(cases)]


# --- matrices -------------------------------------------------------------------------------

MATRICES: list[Case] = [
    (r"$\boxed{\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}}$",
     r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", 1.0),
    (r"Hence $\mathbf{M} = \boxed{\left[\begin{array}{cc}1&2\\3&4\end{array}\right]}.$",
     r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", 1.0),
    (r"$\boxed{\begin{bmatrix} 5 \\ -7 \end{bmatrix}}$", r"\begin{pmatrix} 5 \\ -7 \end{pmatrix}",
     1.0),
    (r"$\boxed{\left(\begin{array}{c} 0 \\ 9 \end{array}\right)}$",
     r"\begin{pmatrix}0\\9\end{pmatrix}", 1.0),
    (r"$\boxed{\begin{pmatrix} \dfrac{3}{2} & 0 \\ 0 & 1 \end{pmatrix}}$",
     r"\begin{pmatrix} \frac32 & 0 \\ 0 & 1 \end{pmatrix}", 1.0),
    (r"$\boxed{\begin{pmatrix} 2\sqrt{2} \\ \frac{\pi}{3} \end{pmatrix}}$",
     r"\begin{pmatrix} \sqrt{8} \\ \pi/3 \end{pmatrix}", 1.0),
    (r"$\boxed{\begin{pmatrix} 1 & 2 \\ 3 & 5 \end{pmatrix}}$",
     r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", 0.0),
    (r"$\boxed{\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}}$",  # the transpose
     r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", 0.0),
    (r"$\boxed{\begin{bmatrix} 1 & 2 & 3 & 4 \end{bmatrix}}$",  # same entries, other shape
     r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", 0.0),
    (r"$\boxed{\begin{pmatrix} 5 & -7 \end{pmatrix}}$",  # row vs column vector
     r"\begin{pmatrix} 5 \\ -7 \end{pmatrix}", 0.0),
    (r"$\boxed{\begin{pmatrix} -7 \\ 5 \end{pmatrix}}$", r"\begin{pmatrix} 5 \\ -7 \end{pmatrix}",
     0.0),
    (r"$\boxed{\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}}$",
     r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}", 0.0),
]


@pytest.mark.parametrize(("response", "gold", "expected"), MATRICES, ids=_ids(MATRICES))
def test_matrices(response: str, gold: str, expected: float) -> None:
    _check(response, gold, expected)


# --- intervals and inequalities -------------------------------------------------------------

INTERVALS: list[Case] = [
    (r"The solution set is $\boxed{x \in [-2,7]}$.", r"-2 \le x \le 7", 1.0),
    (r"$\boxed{-2 \leq x \leq 7}$", r"[-2,7]", 1.0),
    (r"$\boxed{[-2, 7]}$", r"x \in [-2,7]", 1.0),
    (r"$\boxed{[-2,7]}$", r"-2 \le x \le 7", 1.0),
    (r"$\boxed{-2 < x \le 7}$", r"(-2,7]", 1.0),
    (r"$\boxed{x > 3}$", r"(3,\infty)", 1.0),
    (r"$\boxed{[3,\infty)}$", r"x \ge 3", 1.0),
    (r"$\boxed{(4,\infty) \cup (-\infty,1)}$", r"(-\infty,1)\cup(4,\infty)", 1.0),
    (r"$\boxed{x < 1 \text{ or } x > 4}$", r"(-\infty,1)\cup(4,\infty)", 1.0),
    (r"$\boxed{\left(-\infty, 1\right) \cup \left(4, \infty\right)}$", r"x<1 \text{ or } x>4",
     1.0),
    (r"$\boxed{x \in (-\infty, -3] \cup [2, \infty)}$", r"(-\infty,-3]\cup[2,\infty)", 1.0),
    (r"$\boxed{x > -2 \text{ and } x < 7}$", r"(-2,7)", 1.0),
    (r"$\boxed{(-2,7]}$", r"-2 \le x \le 7", 0.0),
    (r"$\boxed{[-2,7)}$", r"-2 \le x \le 7", 0.0),
    (r"$\boxed{-2 < x \le 7}$", r"[-2,7]", 0.0),
    (r"$\boxed{[-2,8]}$", r"x \in [-2,7]", 0.0),
    (r"$\boxed{x \geq 3}$", r"(3,\infty)", 0.0),
    (r"$\boxed{(3,\infty)}$", r"x \ge 3", 0.0),
    (r"$\boxed{x \le 1 \text{ or } x > 4}$", r"(-\infty,1)\cup(4,\infty)", 0.0),
    (r"$\boxed{(-\infty,1] \cup (4,\infty)}$", r"(-\infty,1)\cup(4,\infty)", 0.0),
    (r"$\boxed{(-\infty,1)}$", r"(-\infty,1)\cup(4,\infty)", 0.0),  # a piece missing
    (r"$\boxed{(-3,2)}$", r"(-\infty,-3)\cup(2,\infty)", 0.0),  # the complement
]


@pytest.mark.parametrize(("response", "gold", "expected"), INTERVALS, ids=_ids(INTERVALS))
def test_intervals_and_inequalities(response: str, gold: str, expected: float) -> None:
    _check(response, gold, expected)


# --- several boxed answers vs one set ---------------------------------------------------------

SEVERAL_BOXES: list[Case] = [
    (r"The solutions are $\boxed{1}$ and $\boxed{2}$.", r"\{1,2\}", 1.0),
    (r"\boxed{1}, \boxed{2}", r"1, 2", 1.0),
    (r"So $x = \boxed{2}$ or $x = \boxed{1}$.", r"1, 2", 1.0),  # a list of solutions: unordered
    (r"$\boxed{-3}$ and $\boxed{\dfrac{1}{2}}$", r"\frac{1}{2}, -3", 1.0),
    (r"$x=\boxed{1}$, $x=\boxed{-1}$", r"\pm 1", 1.0),
    (r"$\boxed{(1,2)}$ and $\boxed{(3,4)}$", r"(3,4), (1,2)", 1.0),
    (r"$\boxed{5}$, $\boxed{5}$", "5", 1.0),  # the same answer twice is one answer
    (r"First $\boxed{3}$. Checking the cases again, the answer is $\boxed{5}$.", "5", 1.0),
    (r"\boxed{1}, \boxed{2}", "1", 0.0),  # extra element
    (r"\boxed{1}, \boxed{2}", "2", 0.0),
    (r"\boxed{1} and \boxed{2} and \boxed{3}", r"\{1,2\}", 0.0),
    (r"The only solution is $\boxed{1}$.", r"1, 2", 0.0),  # missing element
    (r"$\boxed{1}$ and $\boxed{3}$", r"1,2", 0.0),
    (r"$\boxed{(1,2)}$ and $\boxed{(3,5)}$", r"(3,4), (1,2)", 0.0),
]


@pytest.mark.parametrize(("response", "gold", "expected"), SEVERAL_BOXES,
                         ids=_ids(SEVERAL_BOXES))
def test_several_boxed_answers(response: str, gold: str, expected: float) -> None:
    _check(response, gold, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"$\boxed{1}$ and $\boxed{2}$.", ["1", "2"]),
        (r"\boxed{1},\boxed{2};\boxed{3}", ["1", "2", "3"]),
        (r"$x = \boxed{3}$ or $x = \boxed{\frac25}$", ["3", r"\frac25"]),
        (r"$\boxed{a}$ \text{ and } $\boxed{b}$", ["a", "b"]),
        (r"\boxed{7}\quad\boxed{8}", ["7", "8"]),
        (r"\boxed{4} then \boxed{5}", ["5"]),  # "then" is no connector
        (r"\boxed{3}. Checking, \boxed{5}", ["5"]),
        (r"\boxed{5}, \boxed{5}", ["5"]),
        (r"\boxed{1} and \boxed{}", [""]),  # the final box is empty
        (r"\boxed{1}, \boxed{2", None),  # truncated final box
        ("no box", None),
    ],
)
def test_boxed_answers_reads_the_final_group(text: str, expected: list[str] | None) -> None:
    assert boxed_answers(text) == expected


def test_boxed_answers_caps_huge_groups_quickly() -> None:
    answers = boxed_answers("\\boxed{1}, " * 200_000 + "\\boxed{2}")
    assert answers is not None and len(answers) == 2  # consecutive duplicates merged
    many = boxed_answers("".join(f"\\boxed{{{k}}}, " for k in range(10_000)) + "\\boxed{x}")
    assert many is not None and len(many) == 16 and many[-1] == "x"


# --- decimal approximations of fractions -------------------------------------------------------

DECIMALS: list[Case] = [
    (r"$\boxed{0.5}$", r"\frac12", 1.0),  # exact
    (r"$\boxed{0.125}$", r"\frac{1}{8}", 1.0),
    (r"$\boxed{0.333}$", r"\frac{1}{3}", 1.0),
    (r"$\boxed{0.33}$", r"\dfrac{1}{3}", 1.0),
    (r"$\boxed{.67}$", r"\frac{2}{3}", 1.0),
    (r"$\boxed{1.67}$", r"\frac{5}{3}", 1.0),
    (r"$\boxed{-0.43}$", r"-\frac{3}{7}", 1.0),
    (r"$\boxed{2.33}$", r"2\frac{1}{3}", 1.0),  # mixed number 7/3
    (r"$\boxed{41.7}$", r"\frac{125}{3}", 1.0),
    (r"$\boxed{0.0526}$", r"\frac{1}{19}", 1.0),
    (r"$\boxed{\frac{1}{3}}$", "0.33", 1.0),  # gold rounded to the hundredth
    (r"$\boxed{3.50}$", r"\frac72", 1.0),
    (r"$\boxed{0.3}$", "1/3", 0.0),  # one significant digit
    (r"$\boxed{0.05}$", r"\frac{1}{19}", 0.0),
    (r"$\boxed{0.34}$", r"\frac{1}{3}", 0.0),  # wrongly rounded
    (r"$\boxed{0.666}$", r"\frac{2}{3}", 0.0),  # truncated, not rounded
    (r"$\boxed{1.66}$", r"\frac{5}{3}", 0.0),
    (r"$\boxed{0.13}$", r"\frac{1}{8}", 0.0),  # 1/8 has an exact decimal, 0.125
    (r"$\boxed{0.43}$", r"-\frac{3}{7}", 0.0),  # sign
    (r"$\boxed{0.333}$", "0.33", 0.0),  # two decimals are two exact values
    (r"$\boxed{3.14}$", r"\pi", 0.0),  # irrational golds: math-verify's 6 places
    (r"$\boxed{1.41}$", r"\sqrt{2}", 0.0),
]


@pytest.mark.parametrize(("response", "gold", "expected"), DECIMALS, ids=_ids(DECIMALS))
def test_decimal_approximations(response: str, gold: str, expected: float) -> None:
    _check(response, gold, expected)


def test_decimal_rule_is_decided_without_math_verify() -> None:
    assert grade("math_boxed", r"\boxed{0.333}", r"\frac13").reason == "match (decimal rule)"
    assert grade("math_boxed", r"\boxed{0.3}", r"\frac13").reason == "mismatch"


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", Fraction(3)), ("-0.25", Fraction(-1, 4)), (r"\frac{6}{4}", Fraction(3, 2)),
     (r"-\frac{1}{3}", Fraction(-1, 3)), (r"\frac{-2}{5}", Fraction(-2, 5)),
     (r"2\frac{1}{3}", Fraction(7, 3)), (r"2\frac{5}{3}", None), (r"\frac{1}{0}", None),
     (r"\sqrt{2}", None), ("x", None), ("1" * 80, None)],
)
def test_parse_rational(text: str, value: Fraction | None) -> None:
    assert parse_rational(text) == value


def test_decimal_rule_helpers() -> None:
    assert parse_decimal(".5") == (Decimal("0.5"), 1)
    assert parse_decimal("5") is None and parse_decimal("1e5") is None
    assert terminates(Fraction(3, 40)) and not terminates(Fraction(1, 6))
    assert [significant_digits(Decimal(s)) for s in ("0.050", "0.0", "12.3")] == [2, 0, 3]
    assert decimal_matches(Decimal("-0.667"), 3, Fraction(-2, 3))
    assert decimal_matches(Decimal("0.1428571429"), 10, Fraction(1, 7))
    assert not decimal_matches(Decimal("0.1428571428"), 10, Fraction(1, 7))
    assert decimal_verdict(r"\frac{1}{3}", "0.33") is True
    assert decimal_verdict(r"\sqrt{3}", "1.73") is None  # not a rational: math-verify decides
    assert decimal_verdict("5", "6") is None  # no decimal at all


# --- text and units inside the box ----------------------------------------------------------------

TEXT_AND_UNITS: list[Case] = [
    (r"The side is $\boxed{5\text{ cm}}$.", "5", 1.0),
    (r"$\boxed{5 \mbox{ inches}}$", "5", 1.0),
    (r"$\boxed{\text{5 cm}}$", "5", 1.0),
    (r"$\boxed{12\text{ square units}}$", "12", 1.0),
    (r"$\boxed{10\text{ meters}}$", r"10\text{ m}", 1.0),
    (r"$\boxed{\$5}$", "5", 1.0),
    (r"$\boxed{\$18.90}$", "18.90", 1.0),
    (r"$\boxed{\$1,\!200}$", "1200", 1.0),
    (r"$\boxed{5\%}$", "5", 1.0),
    (r"$\boxed{15\%}$", r"15\%", 1.0),
    (r"$\boxed{\text{(B)}}$", "B", 1.0),
    (r"$\boxed{\textbf{(D)}}$", r"\text{(D)}", 1.0),
    (r"$\boxed{(E)}$", r"\text{E}", 1.0),
    (r"$\boxed{30^\circ}$", "30", 1.0),
    (r"$\boxed{30^{\circ}}$", r"30^\circ", 1.0),
    (r"$\boxed{30 \text{ degrees}}$", r"30^\circ", 1.0),
    (r"$\boxed{\text{Tuesday}}$", r"\text{Tuesday}", 1.0),
    (r"The side is $\boxed{5\text{ cm}}$.", "6", 0.0),
    (r"$\boxed{5 \mbox{ inches}}$", "50", 0.0),
    (r"$\boxed{\$5}$", "5.5", 0.0),
    (r"$\boxed{6\%}$", r"5\%", 0.0),
    (r"$\boxed{\text{(C)}}$", "B", 0.0),
    (r"$\boxed{30^\circ}$", "60", 0.0),
    (r"$\boxed{\text{odd}}$", r"\text{even}", 0.0),
]


@pytest.mark.parametrize(("response", "gold", "expected"), TEXT_AND_UNITS,
                         ids=_ids(TEXT_AND_UNITS))
def test_text_and_units_in_the_box(response: str, gold: str, expected: float) -> None:
    _check(response, gold, expected)
