"""Final-answer extraction for math responses: the final group of boxes, and a lenient reader.

* :func:`boxed_answers` — the contents of the response's FINAL GROUP of ``\\boxed{}`` answers:
  the last box plus the boxes right before it that are separated from the next one only by a
  connector (commas, ``and`` / ``or``, ``$``, spacing, ``\\text{ and }``, a variable such as
  ``x =``). ``"$x = \\boxed{3}$ or $x = \\boxed{\\frac25}$"`` gives ``["3", "\\frac25"]``;
  ``"\\boxed{3}. Checking, the answer is \\boxed{5}"`` gives ``["5"]``. This is math-verify's
  own multi-box rule (``extract_boxed_content``), made stricter: math-verify also joins any two
  boxes less than 10 characters apart.
* :func:`final_answer_lenient` — for responses WITHOUT a box: the text after the last
  ``answer is`` / ``answer:`` / ``####`` phrase, else the last ``$...$`` (or ``\\(...\\)``,
  ``\\[...\\]``) expression or the last number, whichever ends later.

Both are pure string processing, linear in the response length, and never raise on ``str``.
"""

from __future__ import annotations

import logging
import re

from drllm.rewards.extract import NUMBER_RE, last_box_command, last_boxed, match_brace

logger = logging.getLogger(__name__)

#: Most boxes read into one final group (more is not a final answer; earlier ones are dropped).
MAX_GROUP_BOXES = 16
#: Longest connector between two boxes of one group, in characters.
MAX_CONNECTOR_CHARS = 80
#: Tail of a response (characters) the lenient reader scans.
LENIENT_TAIL_CHARS = 20_000
#: Longest answer the lenient reader returns, in characters.
MAX_LENIENT_ANSWER_CHARS = 300

# One connector token; single characters only where tokens could overlap (no "(\s+)*").
_CONNECTOR_TOKEN = (
    r"\s|\$|[,;.&]|\\\\|\\[,;:! ]|\\q?quad(?![a-zA-Z])|\\[()\[\]]"
    r"|\\(?:text|mbox|mathrm|textnormal)\{\s*(?:and|or|,)?\s*\}"
    r"|\b(?:and|or)\b"
    r"|[a-zA-Z](?:_\{?[a-zA-Z0-9]{1,3}\}?)?\s*="
)
_CONNECTOR_RE = re.compile(rf"(?:{_CONNECTOR_TOKEN})*")
_ANSWER_PHRASE_RE = re.compile(r"answer\s*(?:is|:)\s*:?|####", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|\n")
_MARKDOWN_RE = re.compile(r"\*\*|__")


def _box_content(text: str, name_end: int, end: int) -> tuple[int, str] | None:
    """(index of the opening brace, stripped content) of the box whose command ends at
    ``name_end``, closed before ``end``; None when the box has no balanced braces there."""
    i = name_end
    while i < end and text[i] in " \t":
        i += 1
    if i >= end or text[i] != "{":
        return None
    close = match_brace(text, i, end)
    if close is None:
        return None
    return close, text[i + 1 : close].strip()


def boxed_answers(text: str | None) -> list[str] | None:
    """Contents of the final group of boxes (module docstring), earliest first, or None.

    None exactly when :func:`~drllm.rewards.extract.last_boxed` is None (no box, or the last
    one unclosed). Consecutive identical contents are merged (``\\boxed{5}, \\boxed{5}`` is one
    answer). At most the last :data:`MAX_GROUP_BOXES` boxes of a group are read.
    """
    last = last_boxed(text)
    if last is None or not isinstance(text, str):
        return None
    answers = [last]
    if not last:
        return answers
    found = last_box_command(text)
    assert found is not None  # last_boxed found a box
    next_start = found[0]
    for _ in range(MAX_GROUP_BOXES - 1):  # boxes visited, duplicates included: linear time
        previous = last_box_command(text, next_start)
        if previous is None:
            break
        box = _box_content(text, previous[1], next_start)
        if box is None:
            break
        close, content = box
        connector = text[close + 1 : next_start]
        if len(connector) > MAX_CONNECTOR_CHARS or not _CONNECTOR_RE.fullmatch(connector):
            break
        if not content:
            break
        if content != answers[0]:
            answers.insert(0, content)
        next_start = previous[0]
    return answers


def _math_span_at_start(text: str) -> str | None:
    """Content of a ``$...$``, ``$$...$$``, ``\\(...\\)`` or ``\\[...\\]`` opening ``text``."""
    for opener, closer in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(opener):
            close = text.find(closer, len(opener))
            return None if close < 0 else text[len(opener) : close]
    return None


def _after_phrase(tail: str) -> str | None:
    """The answer written after the LAST ``answer is`` / ``answer:`` / ``####`` in ``tail``."""
    last = None
    for last in _ANSWER_PHRASE_RE.finditer(tail):
        pass
    if last is None:
        return None
    rest = _MARKDOWN_RE.sub("", tail[last.end() : last.end() + 4 * MAX_LENIENT_ANSWER_CHARS])
    rest = rest.strip()
    span = _math_span_at_start(rest)
    if span is not None:
        return span.strip() or None
    end = _SENTENCE_END_RE.search(rest)
    answer = (rest if end is None else rest[: end.start()]).strip()
    return answer or None


def _last_math_span(tail: str) -> tuple[int, str] | None:
    """(end index, content) of the last ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` in ``tail``."""
    best: tuple[int, str] | None = None
    close = tail.rfind("$")
    if close > 0:
        inner_close = close - 1 if tail[close - 1] == "$" else close
        open_ = tail.rfind("$", 0, inner_close)
        if open_ >= 0:
            start = open_ + 1
            best = (close, tail[start:inner_close].strip("$"))
    for opener, closer in (("\\(", "\\)"), ("\\[", "\\]")):
        close = tail.rfind(closer)
        open_ = tail.rfind(opener, 0, close) if close > 0 else -1
        if open_ >= 0 and (best is None or close > best[0]):
            best = (close, tail[open_ + 2 : close])
    return best


def final_answer_lenient(text: str | None) -> str | None:
    """The final answer of a response that may have no box (module docstring), or None.

    Only the last :data:`LENIENT_TAIL_CHARS` characters are read; answers longer than
    :data:`MAX_LENIENT_ANSWER_CHARS` are cut to that length.
    """
    if not isinstance(text, str):
        return None
    tail = text[-LENIENT_TAIL_CHARS:]
    answer = _after_phrase(tail)
    if answer is None:
        span = _last_math_span(tail)
        number = None
        for number in NUMBER_RE.finditer(tail):
            pass
        if span is not None and (number is None or span[0] >= number.end()):
            answer = span[1].strip() or None
        elif number is not None:
            answer = number.group(0)
    return None if answer is None else answer[:MAX_LENIENT_ANSWER_CHARS].strip()
