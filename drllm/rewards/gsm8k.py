"""``gsm8k_numeric``: the response's final number equals the GSM8K reference number.

Gold: the number after the last ``####`` of a GSM8K solution, or a bare number
(:func:`~drllm.rewards.extract.gsm8k_gold`). Prediction, first that applies:

1. the last ``\\boxed{...}`` of the response, read as one number (``\\$18.90``, ``50\\%``,
   ``\\frac{3}{4}``, ``x = 5``, ``12 \\text{ apples}``);
2. the first number after the last ``####`` (the format GSM8K few-shot prompts teach; a base
   model that keeps writing a next question after its answer is still read correctly);
3. the last number in the text (commas, ``$``, ``%``, units and trailing periods tolerated).

Numbers compare as ``Decimal``: two integers exactly, otherwise with relative tolerance
``rel_tol`` (default 1e-6).
Reasons: ``"match"``, ``"mismatch"``, ``"no number found"``, ``"no number in boxed answer"``.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from drllm.rewards.base import GRADERS, Grader
from drllm.rewards.extract import gsm8k_gold, last_boxed, last_number, parse_number
from drllm.types import Grade

logger = logging.getLogger(__name__)


def numbers_close(pred: Decimal, gold: Decimal, rel_tol: float) -> bool:
    """Equal integers, or ``|pred - gold| <= rel_tol * max(|pred|, |gold|)`` otherwise.

    Two integers must be exactly equal: a relative tolerance would accept 192000001 for the
    gold 192000000. The tolerance serves rounded decimals (``0.3333333`` vs ``0.33333333``).
    """
    if pred == pred.to_integral_value() and gold == gold.to_integral_value():
        return pred == gold
    return abs(pred - gold) <= Decimal(str(rel_tol)) * max(abs(pred), abs(gold))


def _first_number(text: str) -> str | None:
    return last_number(text.lstrip()[:64].split("\n", 1)[0]) if text.strip() else None


@GRADERS.register("gsm8k_numeric")
class GSM8KGrader(Grader):
    """Numeric final-answer match for GSM8K-style word problems.

    Args:
        rel_tol: relative tolerance of the numeric comparison (>= 0).
    """

    name = "gsm8k_numeric"
    #: Already lenient (step 3 reads the last number without any marker): its own counterpart.
    lenient_name = "gsm8k_numeric"

    def __init__(self, rel_tol: float = 1e-6) -> None:
        super().__init__()
        if not rel_tol >= 0:
            raise ValueError(f"{self.name}: rel_tol must be >= 0, got {rel_tol}")
        self.rel_tol = rel_tol

    def _check_gold(self, gold: str) -> str:
        canonical = gsm8k_gold(gold)
        if canonical is None:
            raise ValueError(f"{self.name}: no number after '####' (or as the whole gold) in "
                             f"{gold[-200:]!r}")
        return canonical

    def _extract(self, response: str) -> tuple[Decimal | None, str | None, str]:
        """(value, extracted text, failure reason) of the response's final answer."""
        boxed = last_boxed(response)
        if boxed is not None:
            return parse_number(boxed), boxed, "no number in boxed answer"
        if "####" in response:
            after = _first_number(response.rsplit("####", 1)[1])
            if after is not None:
                return parse_number(after), after, "no number found"
        number = last_number(response)
        return parse_number(number), number, "no number found"

    def _grade(self, response: str, gold: str) -> Grade:
        value, extracted, failure = self._extract(response)
        if value is None:
            return Grade(0.0, failure, extracted)
        if numbers_close(value, Decimal(gold), self.rel_tol):
            return Grade(1.0, "match", extracted)
        return Grade(0.0, "mismatch", extracted)
