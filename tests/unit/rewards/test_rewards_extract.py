"""Answer extraction helpers: known answers, and ARC labels from the real data in every style."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from drllm.rewards import gsm8k_gold, last_boxed, last_number, normalize_letter, parse_number
from drllm.rewards.extract import extract_letter_lenient

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{5}$.", "5"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not count
        (r"\boxed{a_{b_{c}}} end", "a_{b_{c}}"),
        (r"\fbox{7}", "7"),
        (r"\boxed{3} and \fbox{4}", "4"),
        (r"answer: $\boxed 42$", "42"),
        (r"\boxed  { x }", "x"),
        (r"\boxed{}", ""),
        (r"\boxed{1} ... \boxed{12", None),  # last box unclosed (truncated generation)
        (r"\boxedx{3}", None),
        ("no box here", None),
        (r"\boxed", None),
        (r"\boxed{\boxed{9}}", "9"),
        (r"\boxed{5}\\{", "5"),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_last_boxed_non_text() -> None:
    assert last_boxed(None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He has 5 apples and 7 pears.", "7"),
        ("Total: $1,080.", "1080"),
        ("It is -3 degrees", "-3"),
        ("about 2.5 hours", "2.5"),
        ("3-5", "5"),
        ("1,2,3", "3"),
        ("costs .5 dollars", ".5"),
        ("nothing", None),
    ],
)
def test_last_number(text: str, expected: str | None) -> None:
    assert last_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\$18.90", Decimal("18.90")),
        (r"50\%", Decimal(50)),
        (r"\frac{3}{4}", Decimal("0.75")),
        ("-3/4", Decimal("-0.75")),
        ("x = 5", Decimal(5)),
        (r"12 \text{ apples}", Decimal(12)),
        ("1,000,000.", Decimal(1000000)),
        (r"1\,000", Decimal(1000)),
        ("seven", None),
        (r"\frac{1}{0}", None),
    ],
)
def test_parse_number(text: str, expected: Decimal | None) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("step <<2*3=6>>6\n#### 72", "72"),
        ("#### 1,080", "1080"),
        ("#### -3", "-3"),
        ("#### 2.50", "2.5"),
        ("#### 123456789012345678901234567890", "123456789012345678901234567890"),
        ("#### $5.", "5"),
        ("72", "72"),
        ("#### seventy", None),
        ("no marker, two numbers 3 and 4", None),
        ("", None),
    ],
)
def test_gsm8k_gold(answer: str, expected: str | None) -> None:
    assert gsm8k_gold(answer) == expected


def test_gsm8k_gold_on_every_real_row() -> None:
    df = pd.read_parquet(DATA / "gsm8k" / "main" / "train.parquet", columns=["answer"])
    golds = [gsm8k_gold(a) for a in df["answer"]]
    assert all(g is not None for g in golds)
    assert golds[0] == "72"  # Natalia's clips
    assert all("," not in g for g in golds)


@pytest.mark.parametrize(
    ("labels", "letters"),
    [("ABCD", "ABCD"), ("ABCDE", "ABCDE"), ("1234", "ABCD"), ("12345", "ABCDE")],
)
def test_normalize_letter_label_styles(labels: str, letters: str) -> None:
    assert [normalize_letter(lab) for lab in labels] == list(letters)


@pytest.mark.parametrize("label", ["a", "6", "0", "F", "AB", "", " ", "١"])
def test_normalize_letter_rejects(label: str) -> None:
    assert normalize_letter(label) is None


@pytest.mark.parametrize("subset", ["ARC-Easy", "ARC-Challenge"])
def test_arc_answer_keys_map_to_choice_position(subset: str) -> None:
    """On real ARC rows of every label style, answerKey maps to the letter of its position."""
    df = pd.read_parquet(DATA / "ai2_arc" / subset / "train.parquet")
    styles = set()
    for key, choices in zip(df["answerKey"], df["choices"]):
        labels = list(choices["label"])
        styles.add("".join(labels))
        expected = "ABCDE"[labels.index(key)]
        assert normalize_letter(key) == expected
        assert [normalize_letter(lab) for lab in labels] == list("ABCDE"[: len(labels)])
    assert {"ABCD", "1234"} <= styles


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("The answer is B", "B"),
        ("The correct answer is (C).", "C"),
        ("**Answer: D**", "D"),
        ("B. photosynthesis", "B"),
        ("(A) the sun", "A"),
        ("I think the answer is A, no wait, the answer is E", "E"),
        ("The answer is b", None),
        ("E.g. plants", None),
        ("A man walks", None),
        ("The answer is Answer", None),
    ],
)
def test_extract_letter_lenient(response: str, expected: str | None) -> None:
    assert extract_letter_lenient(response, "ABCDE") == expected
