"""``math_boxed``: the final boxed answer of a response, equivalent to the gold answer.

Prediction: the contents of the response's final GROUP of boxes
(:func:`~drllm.rewards.math_extract.boxed_answers`): usually just the last ``\\boxed{}``;
several boxes joined by connectors (``$\\boxed{1}$ and $\\boxed{2}$``, ``\\boxed{1}, \\boxed{2}``)
are ONE answer, the list ``1, 2``, which math-verify compares with the gold as a set: ``\\{1,2\\}``
and ``2, 1`` match it, ``1`` (missing element) and ``1, 2, 3`` (extra element) do not.

Verdict, first that applies:

1. the normalised strings are equal (:func:`normalize_math_answer`: spacing, ``\\left``, units,
   ``\\text{}``, ``$``, ``\\%``, degrees, ``(B)`` -> ``B``, ...) -> ``"match"``;
2. one side is a plain decimal and the other an exact rational: the decimal rule of
   :mod:`drllm.rewards.math_numeric` decides (``0.333`` vs ``\\frac13`` equal, ``0.3`` not) ->
   ``"match (decimal rule)"`` / ``"mismatch"``;
3. answers written in a base (``1101_2``, ``141_{13}``) -> ``"mismatch"`` (math-verify drops the
   subscript and would call ``1101_4`` equal to ``1101_5``);
4. math-verify proves them equivalent within ``timeout_s`` (matrices of any bracket style,
   intervals vs inequalities, unions, sets, expressions;
   :mod:`drllm.rewards.math_equivalence`) -> ``"match (math-verify)"``.

The symbolic check runs in a child process (:class:`~drllm.rewards.math_worker.MathVerifyProcess`)
so the time bound holds in any thread, including inside Ray actors; a timeout scores 0.

Caches: normalised strings (golds and predictions) and symbolic verdicts per (gold, prediction)
live in the parent; parsed golds live in the child. An MCTS grades many near-identical answers
per question, so most checks after the first are cache hits. Known remaining math-verify
leniency: values below its numeric precision compare equal (``1/2004!`` vs ``1/2005!``).

``math_boxed_lenient`` (:class:`LenientMathBoxedGrader`) grades a response WITHOUT a box by its
:func:`~drllm.rewards.math_extract.final_answer_lenient` (``the answer is X``, ``#### X``, else
the last ``$...$`` expression or number); with a box it is ``math_boxed``.

Reasons: ``"match"``, ``"match (decimal rule)"``, ``"match (math-verify)"``, ``"mismatch"``,
``"mismatch (symbolic check timed out)"`` and similar, ``"no boxed answer"``,
``"empty boxed answer"``; lenient: ``"no final answer found"`` instead of ``"no boxed answer"``.
"""

from __future__ import annotations

import dataclasses

import functools
import logging
import threading
from collections import OrderedDict

from drllm.rewards.base import GRADERS, Grader
from drllm.rewards.math_extract import boxed_answers, final_answer_lenient
from drllm.rewards.math_normalize import (
    BASE_NUMBER_RE,
    MAX_NORMALIZE_CHARS,
    normalize_math_answer,
    prepare_for_symbolic,
)
from drllm.rewards.math_numeric import decimal_verdict
from drllm.rewards.math_worker import MathVerifyProcess, SymbolicCheck
from drllm.types import Grade

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=65_536)
def _normalized_cached(answer: str) -> str:
    return normalize_math_answer(answer)


def _normalized(answer: str) -> str:
    """Normalised answer; only short strings enter the cache (huge outputs must not pin memory)."""
    if len(answer) > MAX_NORMALIZE_CHARS:
        return answer.strip()
    return _normalized_cached(answer)


def _braces_balanced(text: str) -> bool:
    depth = 0
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth < 0:
            return False
        i += 1
    return depth == 0


@GRADERS.register("math_boxed")
class MathBoxedGrader(Grader):
    """Last boxed answer vs gold LaTeX, by normalised string or math-verify equivalence.

    Args:
        timeout_s: wall-clock bound on one symbolic check, in seconds (see module docstring).
        symbolic: run math-verify at all; False leaves only the normalised-string comparison.
        max_symbolic_chars: longer predictions or golds skip the symbolic check (no final answer
            is that long; it keeps pathological outputs away from sympy).
        verdict_cache_size: symbolic verdicts remembered (LRU), keyed by (gold, prediction).
        startup_timeout_s: bound on starting the math-verify child process, in seconds.
    """

    name = "math_boxed"
    lenient_name = "math_boxed_lenient"

    def __init__(self, timeout_s: float = 10.0, symbolic: bool = True,
                 max_symbolic_chars: int = 400, verdict_cache_size: int = 65_536,
                 startup_timeout_s: float = 60.0) -> None:
        super().__init__()
        if max_symbolic_chars <= 0 or verdict_cache_size < 0:
            raise ValueError("max_symbolic_chars must be > 0 and verdict_cache_size >= 0, got "
                             f"{max_symbolic_chars}, {verdict_cache_size}")
        self.symbolic = symbolic
        self.max_symbolic_chars = max_symbolic_chars
        self.verdict_cache_size = verdict_cache_size
        self.checker = MathVerifyProcess(timeout_s=timeout_s, startup_timeout_s=startup_timeout_s)
        self._verdicts: OrderedDict[tuple[str, str], SymbolicCheck] = OrderedDict()
        self._verdicts_lock = threading.Lock()

    def __reduce__(self) -> tuple:
        """Pickle the configuration only; caches and the child process are rebuilt on demand."""
        return (type(self), (self.checker.timeout_s, self.symbolic, self.max_symbolic_chars,
                             self.verdict_cache_size, self.checker.startup_timeout_s))

    def _check_gold(self, gold: str) -> str:
        canonical = gold.strip()
        if not canonical:
            raise ValueError(f"{self.name}: gold answer is empty")
        if not _braces_balanced(canonical):
            raise ValueError(f"{self.name}: gold {gold!r} has unbalanced braces")
        if not _normalized(canonical):
            raise ValueError(f"{self.name}: gold {gold!r} normalises to the empty string")
        return canonical

    def _grade(self, response: str, gold: str, ended: bool = True) -> Grade:
        answers = boxed_answers(response)
        if answers is None:
            return Grade(0.0, "no boxed answer")
        return dataclasses.replace(self._grade_answers(answers, gold), where="boxed")

    def _grade_answers(self, answers: list[str], gold: str) -> Grade:
        """Grade the final answer(s) of a response; several answers are one list ``a, b``."""
        pred = ", ".join(answers)
        if not pred:
            return Grade(0.0, "empty boxed answer", pred)
        return self._compare(pred, gold)

    def _compare(self, pred: str, gold: str) -> Grade:
        """Verdict on one extracted answer ``pred`` vs a canonical ``gold`` (module docstring)."""
        norm_pred, norm_gold = _normalized(pred), _normalized(gold)
        if norm_pred == norm_gold:
            return Grade(1.0, "match", pred)
        decimal = decimal_verdict(norm_gold, norm_pred)
        if decimal is not None:
            return Grade(1.0, "match (decimal rule)", pred) if decimal else Grade(
                0.0, "mismatch", pred)
        if not self.symbolic or BASE_NUMBER_RE.search(gold) or BASE_NUMBER_RE.search(pred):
            # math-verify ignores base subscripts (it calls 1101_4 equal to 1101_5): strings only.
            return Grade(0.0, "mismatch", pred)
        if len(pred) > self.max_symbolic_chars or len(gold) > self.max_symbolic_chars:
            return Grade(0.0, "mismatch (too long for a symbolic check)", pred)
        check = self._symbolic_check(gold, pred)
        if check.equal:
            return Grade(1.0, "match (math-verify)", pred)
        if check.detail == "math-verify":
            return Grade(0.0, "mismatch", pred)
        return Grade(0.0, f"mismatch (symbolic check {check.detail})", pred)

    def _symbolic_check(self, gold: str, pred: str) -> SymbolicCheck:
        key = (gold, pred)
        with self._verdicts_lock:
            cached = self._verdicts.get(key)
            if cached is not None:
                self._verdicts.move_to_end(key)
                return cached
        check = self.checker.check(prepare_for_symbolic(gold), prepare_for_symbolic(pred))
        if check.detail in ("math-verify", "timed out") and self.verdict_cache_size:
            # Timeouts are cached too: the same pathological answer must not kill the child twice.
            with self._verdicts_lock:
                self._verdicts[key] = check
                while len(self._verdicts) > self.verdict_cache_size:
                    self._verdicts.popitem(last=False)
        return check

    def close(self) -> None:
        """Stop the math-verify child process (restarted on demand)."""
        self.checker.close()


@GRADERS.register("math_boxed_lenient")
class LenientMathBoxedGrader(MathBoxedGrader):
    """``math_boxed``, plus responses without a box graded by their unboxed final answer.

    The answer is :func:`~drllm.rewards.math_extract.final_answer_lenient`: what follows the
    last ``answer is`` / ``answer:`` / ``####``, else the last ``$...$`` expression or the last
    number, whichever comes later. Use it to report what a model meant next to the strict
    ``math_boxed`` reward (which also rewards the answer format). Same arguments.
    """

    name = "math_boxed_lenient"

    def _grade(self, response: str, gold: str, ended: bool = True) -> Grade:
        answers = boxed_answers(response)
        if answers is None:
            answer = final_answer_lenient(response)
            if answer is None:
                return Grade(0.0, "no final answer found")
            return dataclasses.replace(self._grade_answers([answer], gold), where="final answer")
        return dataclasses.replace(self._grade_answers(answers, gold), where="boxed")
