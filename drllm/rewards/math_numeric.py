"""Exact rationals in final answers, and the rule for decimal approximations of them.

``math_boxed`` decides a pair with this module, before any symbolic check, when one answer is
a plain decimal (``0.333``, ``-1.25``) and the other an exact rational number (an integer, a
decimal, ``\\frac{a}{b}``, ``a/b`` or a mixed number ``2\\frac{1}{3}``), read from the
normalised strings (:func:`~drllm.rewards.math_normalize.normalize_math_answer`).

The decimal rule. A decimal ``d`` written with ``k >= 1`` digits after the point stands for a
value given to ``k`` decimal places. It equals the exact rational ``v`` iff

1. ``d == v`` exactly (``0.5`` vs ``\\frac12``, ``0.125`` vs ``\\frac18``, ``3.0`` vs ``3``); or
2. ``v`` has no terminating decimal expansion (its reduced denominator has a prime factor
   other than 2 and 5, so no finite decimal can be exact), ``d`` has at least
   :data:`MIN_SIGNIFICANT_DIGITS` significant digits, and ``v`` rounded to ``k`` places is
   ``d`` (``0.33``, ``0.333``, ``0.3333`` vs ``\\frac13``; ``0.67`` vs ``\\frac23``).

So ``0.3`` vs ``\\frac13`` (one significant digit), ``0.34`` vs ``\\frac13`` (wrongly rounded),
``0.666`` vs ``\\frac23`` (truncated, not rounded) and ``0.13`` vs ``\\frac18`` (``1/8`` has an
exact decimal, ``0.125``) are NOT equal. Since ``v`` never lies halfway between two ``k``-place
decimals in case 2, the rounding mode does not matter. Two decimals are two exact values: equal
iff equal (``0.50`` vs ``0.5``; ``0.33`` vs ``0.333`` is not). The rule is symmetric: it applies
whichever of gold and prediction is the decimal. Irrational golds (``\\sqrt2``, ``\\pi``) are
left to math-verify, which compares floats rounded to 6 places.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

logger = logging.getLogger(__name__)

#: Fewest significant digits a rounded (inexact) decimal must show to count as an answer.
MIN_SIGNIFICANT_DIGITS = 2

#: Longest digit run read as a number (longer strings are never a benchmark's final answer).
_MAX_DIGITS = 60

_DECIMAL_RE = re.compile(r"^(-?)(\d*)\.(\d+)$")
_INTEGER_RE = re.compile(r"^-?\d+$")
_FRAC_RE = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_MIXED_RE = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")


def parse_decimal(text: str) -> tuple[Decimal, int] | None:
    """``(value, digits after the point)`` of a plain decimal like ``-0.25`` / ``.5``, or None.

    Integers and exponent forms are not plain decimals.
    """
    match = _DECIMAL_RE.match(text)
    if match is None or len(text) > _MAX_DIGITS:
        return None
    sign, whole, frac = match.groups()
    try:
        value = Decimal(f"{sign}{whole or '0'}.{frac}")
    except InvalidOperation:  # pragma: no cover - the regex admits only digits
        return None
    return value, len(frac)


def parse_rational(text: str) -> Fraction | None:
    """The exact value of an integer, plain decimal, ``\\frac{a}{b}``, ``a/b`` (normalised to
    ``\\frac``) or mixed number ``a\\frac{b}{c}`` (``2\\frac{1}{3}`` is ``7/3``), or None."""
    if len(text) > _MAX_DIGITS:
        return None
    if _INTEGER_RE.match(text):
        return Fraction(int(text))
    decimal = parse_decimal(text)
    if decimal is not None:
        return Fraction(decimal[0])
    match = _FRAC_RE.match(text)
    if match:
        sign, num, den = match.groups()
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if sign else value
    match = _MIXED_RE.match(text)
    if match:
        sign, whole, num, den = match.groups()
        if int(den) == 0 or int(num) >= int(den):  # "2\frac{5}{3}" is a product, not mixed
            return None
        value = int(whole) + Fraction(int(num), int(den))
        return -value if sign else value
    return None


def terminates(value: Fraction) -> bool:
    """Whether ``value`` has a finite decimal expansion (denominator of the form 2^a 5^b)."""
    den = value.denominator
    for prime in (2, 5):
        while den % prime == 0:
            den //= prime
    return den == 1


def significant_digits(value: Decimal) -> int:
    """Digits of ``value`` from its first non-zero digit on (``0.050`` -> 2, ``0.0`` -> 0)."""
    digits = value.as_tuple().digits
    stripped = "".join(map(str, digits)).lstrip("0")
    return len(stripped)


def decimal_matches(decimal: Decimal, places: int, exact: Fraction) -> bool:
    """The decimal rule of this module: is ``decimal`` (written with ``places`` digits after the
    point) equal to the exact rational ``exact``?"""
    if Fraction(decimal) == exact:
        return True
    if terminates(exact) or significant_digits(decimal) < MIN_SIGNIFICANT_DIGITS:
        return False
    scale = 10 ** places
    magnitude = abs(exact) * scale  # exact integer arithmetic: no precision limit
    rounded = int(magnitude + Fraction(1, 2))  # half up; never a tie (non-terminating)
    if exact < 0:
        rounded = -rounded
    return Fraction(rounded) == Fraction(decimal) * scale


def decimal_verdict(gold: str, pred: str) -> bool | None:
    """Verdict of the decimal rule on two NORMALISED answers, or None when it does not apply
    (neither is a plain decimal, or the other is not an exact rational)."""
    for decimal_side, exact_side in ((pred, gold), (gold, pred)):
        parsed = parse_decimal(decimal_side)
        if parsed is None:
            continue
        exact = parse_rational(exact_side)
        if exact is None:
            return None
        if parse_decimal(exact_side) is not None:  # two decimals: two exact values
            return Fraction(parsed[0]) == exact
        return decimal_matches(parsed[0], parsed[1], exact)
    return None
