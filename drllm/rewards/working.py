"""Is a response's arithmetic true? The equations it writes, checked.

A stated answer can be right by accident: an edited path that writes ``4 + 5 = 6`` and then
"so he has 6 stickers" states 6, and 6 may be the gold. Searched against a *wrong* gold (a
placebo, :mod:`drllm.data.placebo`), such accidents are what the search finds. A false
equation is evidence that the answer was not worked out, whatever it is, so a grader can refuse
answers whose working is false (:class:`~drllm.rewards.gsm8k.ConsistentGSM8KGrader`).

:func:`false_equation` finds numeric equations -- chains of arithmetic expressions joined by
``=`` (``7 + 6 = 13``, ``2 + 1 = 2 + 1 = 3``, ``12 x 3 = 36``, ``$1,200 / 4 = $300``) -- and
returns the first whose sides differ. Only pure numbers and operators are read: an equation
with words, units or variables inside it (``7 books + 6 books = 13``, ``4x - 2 = 2x``) is not
checked. A side written with ``d`` decimals may be rounded to them (``10 / 3 = 3.33`` holds).

Pure string processing; never raises on model output.
"""

from __future__ import annotations

import ast
import operator
import re

_NUM = r"\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_OP = r"[-+*/×÷x]"
_EXPR = rf"{_NUM}(?:\s*{_OP}\s*{_NUM})*"
#: An equation: expressions joined by ``=``, not glued to letters, digits or a decimal point.
_EQUATION_RE = re.compile(rf"(?<![\w.$]){_EXPR}(?:\s*=\s*{_EXPR})+(?![\w]|\.\d)")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv}


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_value(node.left), _value(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    raise ValueError("not arithmetic")


def _evaluate(side: str) -> tuple[float, int]:
    """The value of one side and the decimals its last number is written with."""
    text = side.replace("$", "").replace(",", "").replace("×", "*").replace("÷", "/")
    text = re.sub(r"(?<=[\d\s])x(?=[\s\d])", "*", text)
    numbers = re.findall(r"\d+(?:\.(\d+))?", text)
    decimals = len(numbers[-1]) if numbers else 0
    return _value(ast.parse(text.strip(), mode="eval").body), decimals


def _holds(sides: list[str]) -> bool:
    try:
        values = [_evaluate(s) for s in sides]
    except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, RecursionError):
        return True  # not an equation we can read: no evidence either way
    for (a, da), (b, db) in zip(values, values[1:]):
        tolerance = max(1e-6 * max(abs(a), abs(b)), 0.5 * 10 ** -min(da or 9, db or 9))
        if abs(a - b) > tolerance:
            return False
    return True


def false_equation(text: str) -> str | None:
    """The first numeric equation in ``text`` whose sides differ, or ``None``."""
    for match in _EQUATION_RE.finditer(text):
        equation = match.group(0)
        sides = re.split(r"\s*=\s*", equation)
        if not any(re.search(_OP, s.replace("$", "")) for s in sides):
            continue  # "5 = 5", or a number then "=": nothing is computed
        if not _holds(sides):
            return equation.strip()
    return None
