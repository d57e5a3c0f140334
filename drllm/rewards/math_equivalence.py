"""Symbolic equivalence of two final answers with math-verify (runs in the worker CHILD process).

Imported only by :func:`drllm.rewards.math_worker.serve` (it pulls in sympy). The answers are
parsed by ``math_verify.parse`` with its own extraction configs (``LatexExtractionConfig`` for
``$...$`` LaTeX, ``ExprExtractionConfig`` for plain expressions like ``1/3``) and compared by
``math_verify.verify``, with two adjustments:

* ``allow_set_relation_comp=True``: a predicted inequality is compared as a set with a gold
  interval (``-2 \\le x \\le 7`` vs ``[-2,7]``), as math-verify already does the other way round
  (gold inequality, predicted interval). Ends still matter: ``-2 < x \\le 7`` is ``(-2,7]``.
* inequalities joined by ``or`` (``x < -2 \\text{ or } x > 3``, ``\\lor``) are read as the UNION
  of their solution sets, and by ``and`` as the intersection; math-verify alone reads them as a
  list ``{x < -2, x > 3}``, never equal to ``(-\\infty,-2)\\cup(3,\\infty)``. A list of equations
  only (``x = 1 \\text{ or } x = 2``) stays a list of solutions.

Known ambiguity: math-verify reads ``(1,2)`` as the open interval, so a predicted ``1 < x < 2``
matches a gold ordered pair ``(1,2)`` too (no model answers a point with that inequality).
"""

from __future__ import annotations

import functools
import logging
import re

logger = logging.getLogger(__name__)

_OR_RE = re.compile(r"\\text\{\s*or\s*\}|\\(?:lor|vee)(?![a-zA-Z])|\bor\b")
_AND_RE = re.compile(r"\\text\{\s*and\s*\}|\\(?:land|wedge)(?![a-zA-Z])|\band\b")
_LOGIC_COMMANDS_RE = re.compile(r"\\(?:lor|vee|land|wedge)(?![a-zA-Z])")


def _extraction_config() -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _connective(answer: str) -> str | None:
    """``"or"`` / ``"and"`` when ``answer`` joins its parts with exactly one kind, else None."""
    has_or, has_and = bool(_OR_RE.search(answer)), bool(_AND_RE.search(answer))
    if has_or == has_and:
        return None
    return "or" if has_or else "and"


def _relations_as_set(expr: object, answer: str) -> object:
    """A list of one-variable inequalities joined by or/and, as one set (module docstring)."""
    from sympy import Eq, FiniteSet, Intersection, Union
    from sympy.core.relational import Relational

    if not isinstance(expr, FiniteSet) or len(expr) < 2:
        return expr
    parts = list(expr.args)
    if not all(isinstance(p, Relational) for p in parts):
        return expr
    if len(set().union(*(p.free_symbols for p in parts))) != 1:
        return expr
    connective = _connective(answer)
    if all(isinstance(p, Eq) for p in parts) or connective is None:
        return expr
    if connective == "and" and any(isinstance(p, Eq) for p in parts):
        return expr  # "x = 1 and x > 0" is no interval a model means
    try:
        sets = [p.as_set() for p in parts]
    except Exception:  # noqa: BLE001 - sympy raises many types on odd relations
        return expr
    return Union(*sets) if connective == "or" else Intersection(*sets)


def parse_answer(answer: str, timeout: int) -> list:
    """``math_verify.parse`` of one final answer (LaTeX without ``$``), adjusted as above."""
    from math_verify import parse

    text = _LOGIC_COMMANDS_RE.sub(lambda m: r"\text{ or }" if m.group(0)[1:] in ("lor", "vee")
                                  else r"\text{ and }", answer)
    parsed = parse(f"${text}$", extraction_config=_extraction_config(),
                   parsing_timeout=timeout)
    if parsed:
        parsed = [_relations_as_set(parsed[0], answer), *parsed[1:]]
    return parsed


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int) -> tuple:
    return tuple(parse_answer(gold, timeout))


def equivalent(gold: str, pred: str, timeout: int) -> bool:
    """Whether math-verify proves ``pred`` equivalent to ``gold`` (both LaTeX without ``$``)."""
    from math_verify import verify

    parsed_gold = _parse_gold(gold, timeout)
    parsed_pred = parse_answer(pred, timeout)
    if not parsed_gold or not parsed_pred:
        return False
    return bool(verify(list(parsed_gold), parsed_pred, allow_set_relation_comp=True,
                       timeout_seconds=timeout))
