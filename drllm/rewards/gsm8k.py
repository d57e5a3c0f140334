"""Numeric graders for word problems: ``gsm8k_numeric`` (a stated answer) and its lenient twin.

Gold: the number after the last ``####`` of a GSM8K solution, or a bare number
(:func:`~drllm.rewards.extract.gsm8k_gold`).

``gsm8k_numeric`` (strict; the search reward of ``synthetic_arith``, GSM8K) reads only the answer
the response **states** (:func:`drllm.rewards.stated.stated_number`): the first answer at a
marker (``#### 7``, ``\\boxed{7}``, ``The answer is 7.``) or as the whole first line (``7``,
``7 apples.``), else the number after the final ``=`` of a response that ended. A number that
only appears inside restated question text or after the answer is not read, and a response cut
by the token budget before it stated an answer is wrong. Stopping a row once its first stated
answer is complete is exact (:meth:`GSM8KGrader.verdict_final`).

``gsm8k_numeric_consistent`` is ``gsm8k_numeric`` whose answer must also be worked out: a
response that writes a false equation before its stated answer (``4 + 5 = 6``, so "6") is wrong
whatever it states (:mod:`drllm.rewards.working`). A search against a placebo gold wins with
such accidents; the working that led to the answer is what this grader also reads.

``gsm8k_numeric_lenient`` reads what the model may have meant: the last ``\\boxed{}``, else the
first number after the last ``####``, else the **last number anywhere** in the text. A search
must not optimise it (it labels ``' neighb common 5, 6, 1, 1, 1'`` correct for the gold 1);
reports show it beside the strict figure.

Numbers compare as ``Decimal``: two integers exactly, otherwise with relative tolerance
``rel_tol`` (default 1e-6). ``Grade.where`` says where the answer was read.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from drllm.rewards.base import GRADERS, Grader
from drllm.rewards.extract import gsm8k_gold, last_boxed, last_number, parse_number
from drllm.rewards.stated import Stated, first_stated, stated_number
from drllm.rewards.working import false_equation
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


class _NumericGrader(Grader):
    """Shared gold handling and comparison; subclasses read the answer (:meth:`_read`)."""

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

    def _read(self, response: str, ended: bool) -> tuple[str | None, str | None, str]:
        """(answer text, where it was read, reason when there is none)."""
        raise NotImplementedError

    def _grade(self, response: str, gold: str, ended: bool = True) -> Grade:
        text, where, failure = self._read(response, ended)
        if text is None:
            return Grade(0.0, failure)
        value = parse_number(text)
        if value is None:
            return Grade(0.0, f"no number in the {where} answer", text, where)
        if numbers_close(value, Decimal(gold), self.rel_tol):
            return Grade(1.0, "match", text, where)
        return Grade(0.0, "mismatch", text, where)


@GRADERS.register("gsm8k_numeric")
class GSM8KGrader(_NumericGrader):
    """The stated numeric answer (see the module docstring).

    Args:
        rel_tol: relative tolerance of the numeric comparison (>= 0).
    """

    name = "gsm8k_numeric"
    lenient_name = "gsm8k_numeric_lenient"

    def _read(self, response: str, ended: bool) -> tuple[str | None, str | None, str]:
        stated = stated_number(response, ended)
        if stated is None:
            return None, None, ("no stated answer" if ended
                                else "cut by the token budget before a stated answer")
        return stated.text, stated.where, ""

    def verdict_final(self, response_prefix: str) -> bool:
        """True once the prefix's first stated answer is complete: nothing after it is read."""
        return isinstance(first_stated(response_prefix, ended=False), Stated)


@GRADERS.register("gsm8k_numeric_consistent")
class ConsistentGSM8KGrader(GSM8KGrader):
    """The stated numeric answer, refused when an equation written before it is false.

    Only the text up to the end of the stated answer is checked, so stopping a row at its
    stated answer stays exact (:meth:`verdict_final` is the strict grader's).
    """

    name = "gsm8k_numeric_consistent"
    lenient_name = "gsm8k_numeric_lenient"

    def _grade(self, response: str, gold: str, ended: bool = True) -> Grade:
        grade = super()._grade(response, gold, ended)
        if grade.reward < 1.0:
            return grade
        stated = stated_number(response, ended)
        upto = response if stated is None else response[: stated.start + len(stated.text)]
        equation = false_equation(upto)
        if equation is None:
            return grade
        return Grade(0.0, f"false working: {equation}", grade.extracted, grade.where)


@GRADERS.register("gsm8k_numeric_lenient")
class LenientGSM8KGrader(_NumericGrader):
    """The last ``\\boxed{}``, else the number after the last ``####``, else the last number."""

    name = "gsm8k_numeric_lenient"
    lenient_name = "gsm8k_numeric_lenient"

    def _read(self, response: str, ended: bool) -> tuple[str | None, str | None, str]:
        boxed = last_boxed(response)
        if boxed is not None:
            return boxed, "boxed", ""
        if "####" in response:
            after = _first_number(response.rsplit("####", 1)[1])
            if after is not None:
                return after, "####", ""
        number = last_number(response)
        return number, "last number", "no number found"
