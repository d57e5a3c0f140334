"""Multiple-choice letter graders: ``mc_letter`` (strict, as in the paper) and its lenient twin.

``mc_letter`` follows the paper's Appendix B: the WHOLE stripped response must be the letter,
optionally prefixed by ``Answer:``, optionally in parentheses, optionally followed by ``.``,
``:`` or ``)`` — by default ``(?:Answer:\\s*)?\\(?([A-E])\\)?[.:)]?`` applied with ``fullmatch``.
The letter's case must match (``"b"`` is wrong). ``"B. photosynthesis"`` and ``"The answer is B"``
score 0 here: this is the reward the paper's MCTS optimised, and it also rewards following the
answer format.

``mc_letter_lenient`` accepts everything strict does, plus the LAST ``answer is X`` /
``answer: X`` phrase anywhere in the response and a leading ``X.`` / ``X)`` / ``X:`` / ``(X)``
followed by text (see :func:`drllm.rewards.extract.extract_letter_lenient`). Use it to measure
what small models *meant*; use the strict one to reproduce the paper.

Reasons: ``"match"``, ``"mismatch"``, ``"no letter found"``; given the prompt (``grade(...,
prompt=)``), ``"letter D written with choice C's text"``: the gold letter with another
choice's text is a letter found by luck, not the answer.
"""

from __future__ import annotations

import logging
import re

from drllm.rewards.base import GRADERS, Grader
from drllm.rewards.extract import (
    STRICT_LETTER_PATTERN,
    extract_letter_lenient,
    extract_letter_strict,
    other_choice_named,
    strict_letter_pattern,
)
from drllm.types import Grade

try:  # partial matching (could this prefix still become a match?) needs the regex module
    import regex as _regex
except ImportError:  # pragma: no cover - regex ships with transformers
    _regex = None

logger = logging.getLogger(__name__)


def _partial(pattern: str, text: str):
    """A match of ``pattern`` over the whole of ``text`` or of a continuation of it, or None."""
    return _regex.fullmatch(pattern, text, partial=True)


if _regex is None:  # pragma: no cover
    _partial = None  # noqa: F811

DEFAULT_LETTERS = "ABCDE"


@GRADERS.register("mc_letter")
class MCLetterGrader(Grader):
    """Strict letter match.

    Args:
        pattern: regex applied with ``fullmatch`` to the stripped response; exactly one capture
            group (the letter). ``{letters}`` is replaced by a character class of ``letters``.
        letters: the admissible answer letters, uppercase (gold must be one of them).
    """

    name = "mc_letter"
    lenient_name = "mc_letter_lenient"

    def __init__(self, pattern: str = STRICT_LETTER_PATTERN,
                 letters: str = DEFAULT_LETTERS) -> None:
        super().__init__()
        if not letters or not all(len(ch) == 1 and ch.isupper() for ch in letters):
            raise ValueError(f"{self.name}: letters must be non-empty uppercase letters, "
                             f"got {letters!r}")
        if len(set(letters)) != len(letters):
            raise ValueError(f"{self.name}: letters {letters!r} contain duplicates")
        try:
            compiled = re.compile(strict_letter_pattern(pattern, letters))
        except re.error as exc:
            raise ValueError(f"{self.name}: invalid pattern {pattern!r}: {exc}") from exc
        if compiled.groups != 1:
            raise ValueError(f"{self.name}: pattern must have exactly one capture group (the "
                             f"letter), {pattern!r} has {compiled.groups}")
        self.letters = letters
        self.pattern = compiled

    def verdict_final(self, response_prefix: str) -> bool:
        """True once the response can no longer match the pattern whatever follows.

        The grade is a ``fullmatch`` of the stripped response; a continuation ``s`` strips to
        ``rstrip(u)`` (``s`` blank) or ``u + t`` (``u`` the left-stripped prefix), so the
        verdict (reward 0) is final when ``rstrip(u)`` does not match and no string starting
        with ``u`` can (a partial match of the pattern, checked with the ``regex`` module).
        """
        if _partial is None:
            return False
        u = response_prefix.lstrip()
        if not u or self.pattern.fullmatch(u.rstrip()):
            return False
        return _partial(self.pattern.pattern, u) is None

    def _check_gold(self, gold: str) -> str:
        canonical = gold.strip()
        if canonical not in self.letters or len(canonical) != 1:
            raise ValueError(f"{self.name}: gold {gold!r} is not one of the letters "
                             f"{self.letters!r} (map numeric labels with "
                             "drllm.rewards.normalize_letter first)")
        return canonical

    def _extract(self, response: str) -> str | None:
        return extract_letter_strict(response, self.pattern)

    def _in_context(self, response: str, grade: Grade, prompt: str) -> Grade:
        """Refuse the gold letter written with another choice's text (see
        :func:`~drllm.rewards.extract.other_choice_named`)."""
        other = other_choice_named(response, grade.extracted or "", prompt)
        if other is None:
            return grade
        return Grade(0.0, f"letter {grade.extracted} written with choice {other}'s text",
                     grade.extracted, grade.where)

    def _grade(self, response: str, gold: str, ended: bool = True) -> Grade:
        letter = self._extract(response)
        if letter is None or letter not in self.letters:
            return Grade(0.0, "no letter found")
        where = ("whole response" if extract_letter_strict(response, self.pattern) == letter
                 else "answer phrase or leading letter")
        if letter == gold:
            return Grade(1.0, "match", letter, where)
        return Grade(0.0, "mismatch", letter, where)


@GRADERS.register("mc_letter_lenient")
class LenientMCLetterGrader(MCLetterGrader):
    """Strict match, else the last ``answer is X``, else a leading ``X.``/``X)``/``X:``/``(X)``."""

    name = "mc_letter_lenient"

    def verdict_final(self, response_prefix: str) -> bool:
        """Never before the end: a later ``answer is X`` can always change the letter read."""
        return False

    def _extract(self, response: str) -> str | None:
        strict = extract_letter_strict(response, self.pattern)
        if strict is not None:
            return strict
        return extract_letter_lenient(response, self.letters)
