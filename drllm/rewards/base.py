"""Grader base class, the ``GRADERS`` registry and the ``exact`` dummy grader.

A grader turns (model response, gold answer) into a binary :class:`~drllm.types.Grade`. Two
contracts every grader keeps:

* it NEVER raises on model output, however malformed (None, huge strings, unbalanced braces,
  odd unicode, LaTeX that crashes sympy): it returns reward 0 with a reason;
* an unusable GOLD is a dataset bug, caught early: :meth:`Grader.validate_gold` raises
  ``ValueError`` (adapters call it at load time to reject rows), and :meth:`Grader.grade`
  raises the same ``ValueError`` rather than silently scoring every response 0.

Usage::

    from drllm.rewards import get_grader, grade, lenient_counterpart
    grade("mc_letter", "Answer: B", "B")        # Grade(reward=1.0, reason="match", extracted="B")
    get_grader("math_boxed").validate_gold("\\frac{1}{2}")
    lenient_counterpart("mc_letter")            # "mc_letter_lenient"
"""

from __future__ import annotations

import abc
import logging
import threading
from typing import Callable

from drllm.registry import Registry
from drllm.types import Grade

logger = logging.getLogger(__name__)

#: Registry of grader classes (or zero-argument factories) by name.
GRADERS: Registry[Callable[[], "Grader"]] = Registry("grader")

_instances: dict[str, Grader] = {}
_instances_lock = threading.Lock()


class Grader(abc.ABC):
    """Binary reward for one (response, gold) pair.

    Subclasses set ``name`` and implement :meth:`_check_gold` and :meth:`_grade`.
    """

    name: str = ""
    #: Registry name of the lenient counterpart (see :func:`lenient_counterpart`): a grader
    #: that reads the answer more permissively, for reporting strict and lenient accuracy side by
    #: side. A lenient grader names itself; None: no lenient variant.
    lenient_name: str | None = None
    #: Canonical golds remembered per instance (a search grades many responses per gold).
    gold_cache_size: int = 65_536

    def __init__(self) -> None:
        self._gold_cache: dict[str, str] = {}

    def validate_gold(self, gold: str) -> str:
        """Check that ``gold`` is usable and return its canonical form (cached).

        Raises:
            ValueError: with the reason, when no response could ever be graded against it.
        """
        if not isinstance(gold, str):
            raise ValueError(f"{self.name}: gold must be a str, got {type(gold).__name__}")
        cached = self._gold_cache.get(gold)
        if cached is None:
            cached = self._check_gold(gold)
            if len(self._gold_cache) >= self.gold_cache_size:
                self._gold_cache.clear()
            self._gold_cache[gold] = cached
        return cached

    def grade(self, response: str | None, gold: str, *, ended: bool = True,
              prompt: str | None = None) -> Grade:
        """Grade ``response`` against ``gold``; never raises because of ``response``.

        Args:
            response: the generated text.
            gold: the reference answer.
            ended: False when generation was cut by its token budget (finish reason
                ``"length"``): a grader that reads a stated answer then does not read one
                that was still being written at the cut.
            prompt: the question as the model saw it, when known: a grader may refuse an
                accepted answer the prompt contradicts (:meth:`_in_context`; the letter
                graders refuse a gold letter written with another choice's text).

        Raises:
            ValueError: only if ``gold`` fails :meth:`validate_gold`.
        """
        canonical = self.validate_gold(gold)
        if not isinstance(response, str):
            return Grade(0.0, f"response is not text ({type(response).__name__})")
        try:
            grade = self._grade(response, canonical, ended)
            if prompt is not None and grade.reward >= 1.0:
                grade = self._in_context(response, grade, prompt)
            return grade
        except Exception as exc:  # last line of defence: model output must never crash a search
            logger.warning("%s: grading failed on a %d-char response (%s: %s); reward 0",
                           self.name, len(response), type(exc).__name__, exc)
            return Grade(0.0, f"grader error: {type(exc).__name__}")

    def verdict_final(self, response_prefix: str) -> bool:
        """Whether no continuation of ``response_prefix`` can change its reward.

        True only where provably exact: for every string ``s``,
        ``grade(response_prefix + s, gold).reward == grade(response_prefix, gold).reward`` for
        every gold. Generation may then stop the row (grader-aware stopping); the response
        stored is the shorter text, which grades the same. Default: never (a row still stops
        at EOS, its budget or a stop string).
        """
        return False

    def _in_context(self, response: str, grade: Grade, prompt: str) -> Grade:
        """An accepted ``grade`` checked against the prompt; default: unchanged."""
        return grade

    @abc.abstractmethod
    def _check_gold(self, gold: str) -> str:
        """Canonical gold or ``ValueError``; ``gold`` is a str."""

    @abc.abstractmethod
    def _grade(self, response: str, gold: str, ended: bool = True) -> Grade:
        """Grade a str response against a canonical gold (from :meth:`_check_gold`);
        ``ended`` as in :meth:`grade`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@GRADERS.register("exact")
class ExactGrader(Grader):
    """Dummy grader for tests: reward 1 iff ``response.strip() == gold.strip()``."""

    name = "exact"

    def _check_gold(self, gold: str) -> str:
        return gold.strip()

    def _grade(self, response: str, gold: str, ended: bool = True) -> Grade:
        extracted = response.strip()
        if extracted == gold:
            return Grade(1.0, "match", extracted, "whole response")
        return Grade(0.0, "mismatch", extracted, "whole response")


def get_grader(name: str) -> Grader:
    """The process-wide default-configured instance of grader ``name`` (created once).

    Sharing one instance per process lets graders keep caches (parsed golds, verdicts) and
    helper processes across calls. Thread-safe.

    Raises:
        KeyError: unknown name (the message lists the registered ones).
    """
    grader = _instances.get(name)
    if grader is not None:
        return grader
    factory = GRADERS.get(name)
    with _instances_lock:
        grader = _instances.get(name)
        if grader is None:
            grader = factory()
            if not isinstance(grader, Grader):
                raise TypeError(f"grader factory {name!r} built {type(grader).__name__}, "
                                "not a drllm.rewards.Grader")
            _instances[name] = grader
    return grader


def grade(name: str, response: str | None, gold: str, *, ended: bool = True) -> Grade:
    """Shorthand for ``get_grader(name).grade(response, gold, ended=ended)``."""
    return get_grader(name).grade(response, gold, ended=ended)


def lenient_counterpart(name: str) -> str | None:
    """Registry name of the lenient counterpart of grader ``name``, or None if it has none.

    The counterpart accepts every answer ``name`` accepts plus answers in looser formats, so
    a report can show strict and lenient accuracy side by side:

    * ``mc_letter`` -> ``mc_letter_lenient`` (also ``"B. text"``, ``"the answer is B"``);
    * ``math_boxed`` -> ``math_boxed_lenient`` (also an unboxed final answer: ``"the answer
      is X"``, ``"#### X"``, the last ``$...$`` expression or number);
    * ``gsm8k_numeric`` -> ``gsm8k_numeric_lenient`` (also the last number anywhere in the
      text, not only a stated answer);
    * a lenient grader -> itself; ``exact`` (a test dummy) -> None.

    The answer comes from the ``lenient_name`` attribute of the registered class (a factory
    without one has no counterpart).

    Raises:
        KeyError: unknown ``name`` (the message lists the registered ones).
    """
    lenient = getattr(GRADERS.get(name), "lenient_name", None)
    if lenient is not None and lenient not in GRADERS:
        raise KeyError(f"grader {name!r} names an unregistered lenient counterpart {lenient!r}")
    return lenient
