"""The answer a response *states*: read at an answer marker, as the whole first line, or at the
final ``=`` of a finished response — never a number that merely appears somewhere.

The search is an optimizer against its reward. A grader that reads "the last number anywhere"
labels ``' neighb common 5, 6, 1, 1, 1'`` correct for the gold 1, so the strict numeric graders
read only an answer the response states (:func:`stated_number`), in this order:

1. **The first stated answer**, by position, among
   * an answer marker followed by a number: ``#### 7``, ``\\boxed{7}``, ``The answer is 7.``,
     ``Answer: $7``, ``final answer: 7 apples``, ``the answer is 6 + 1 = 7.`` (the marker's
     clause, up to a newline or a sentence end, may be an equation: its value is the number
     after its last ``=``). A marker whose clause states no number (``The answer is: let's
     see``, ``The answer is 6 + 1``) states nothing; a later one may;
   * the first line when it is just the number, with punctuation or a unit (``7``, ``7.``,
     ``$7``, ``**7**``, ``7 apples``).

   Whatever follows the first stated answer does not change it (``The answer is 1. The answer
   is 2.`` states 1), which is what makes stopping a row at its stated answer exact.
2. Otherwise, in a response that **ended** (EOS or a stop string, not cut by the token budget),
   the number after its final ``=``: ``so she has 6 - 1 = 5 cards left.`` A response cut by the
   budget before it stated an answer states nothing.

A number is *complete* once a character follows that cannot extend it (not a digit, and not a
``.`` or ``,`` followed by a digit), or when the response ended; a clause is complete at its
newline or sentence end. :func:`first_stated` with ``ended=False`` reads a prefix of a response
being generated: it returns :data:`PENDING` while the first stated answer could still change.

Pure string processing; linear in the response length; never raises on model output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drllm.rewards.extract import match_brace

#: A number as written: sign, thousands commas or digits, decimals; or a bare ``.5``.
_NUM = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUM_RE = re.compile(rf"(?<![\d.])(?:{_NUM})")

#: Answer markers: ``####``, ``\boxed``/``\fbox``, ``answer is`` / ``answer:`` / ``answer =``
#: (``final answer ...`` included; ``the answer to this question is`` too: a SmolLM2 label wrote
#: ``... 6 - 2 = 4.\n\nThe answer to this question is 6.`` for the gold 4). Case-insensitive.
_MARKER_RE = re.compile(
    r"####|\\boxed(?![A-Za-z])|\\fbox(?![A-Za-z])"
    r"|\banswer(?:\s+(?:to|for|of)\s+(?:this|the)\s+(?:question|problem))?\s*(?:is\b|:|=)",
    re.IGNORECASE)
#: The end of a marker's clause: a newline, a sentence end (``.``/``!``/``?`` before
#: whitespace), or ``;``.
_CLAUSE_END_RE = re.compile(r"\n|[.!?](?=\s)|;")
#: Decorations between a marker and its number (markdown, colons, a currency sign, ``x =``).
_LEAD_RE = re.compile(r"[\s*_:`]*(?:\\?\$\s*)?")
#: What may follow the number inside a clause for it to be the answer: not an operator that
#: continues an expression (``6 + 1``).
_OPERATOR_RE = re.compile(r"\s*(?:[+\-/×÷^]|\*(?!\*)|\\times|\\cdot|\\div)")
#: A first line that is just a number: markdown, currency, the number, up to three unit
#: words, final punctuation.
_BARE_RE = re.compile(
    rf"[*_`\s]*(?:\\?\$\s*)?({_NUM})%?(?:\s+[A-Za-z]+){{0,3}}\s*[.!]?[*_`\s]*"
)
#: A partial first line that could still become a bare number (``7``, ``$1,0``, ``**-``).
_BARE_START_RE = re.compile(r"[*_`\s]*(?:\\?\$\s*)?-?[\d.]")


@dataclass(frozen=True)
class Stated:
    """A stated answer.

    Attributes:
        text: the answer as written (a number; a ``\\boxed{}`` content as is).
        where: how it was read: ``"####"``, ``"boxed"``, ``"answer marker"``, ``"bare"`` (the
            first line is the answer), ``"final ="`` (after the final ``=`` of an ended
            response).
        start: character offset of the answer in the response.
    """

    text: str
    where: str
    start: int


#: Longest marker clause read (characters): a bound that keeps grading linear in the response
#: length however many markers it repeats.
MAX_CLAUSE_CHARS = 200


class _Pending:
    """The first stated answer of a prefix could still change (see :func:`first_stated`)."""

    def __repr__(self) -> str:
        return "PENDING"


PENDING = _Pending()


def _number_complete(text: str, end: int, ended: bool) -> bool:
    """Whether the number ending at ``end`` can no longer be extended by a continuation."""
    if end >= len(text):
        return ended
    ch = text[end]
    if ch.isdigit():
        return False
    if ch in ".,":
        if end + 1 >= len(text):
            return ended
        return not text[end + 1].isdigit()
    return True


def _clause_value(clause: str, offset: int, ended: bool) -> Stated | None | _Pending:
    """The number a complete marker clause states (after its last ``=``), or None."""
    cut = clause.rfind("=")
    body_start = cut + 1 if cut >= 0 else 0
    lead = _LEAD_RE.match(clause, body_start)
    pos = lead.end() if lead else body_start
    match = _NUM_RE.match(clause, pos)
    if match is None:
        return None
    if match.end() < len(clause) and clause[match.end()].isalpha():
        return None  # ``2x``: part of a term, not a number
    if _OPERATOR_RE.match(clause, match.end()):
        return None
    if not _number_complete(clause, match.end(), ended):
        return PENDING
    return Stated(match.group(0).replace(",", ""), "", offset + match.start())


def _marker_answer(text: str, marker: re.Match, ended: bool) -> Stated | None | _Pending:
    """What one marker states: a :class:`Stated`, None (nothing), or PENDING (undecided)."""
    token = marker.group(0)
    if token.startswith(("\\boxed", "\\fbox")):
        brace = marker.end()
        while brace < len(text) and text[brace] in " \t":
            brace += 1
        if brace >= len(text):
            return None if ended else PENDING
        if text[brace] != "{":
            return None
        close = match_brace(text, brace)
        if close is None:
            return None if ended else PENDING
        return Stated(text[brace + 1 : close].strip(), "boxed", brace + 1)
    window = marker.end() + MAX_CLAUSE_CHARS
    found = _CLAUSE_END_RE.search(text, marker.end(), window)
    if found is not None:
        end, closed = found.start(), True
    elif len(text) > window:  # no answer clause is this long: read its first characters
        end, closed = window, True
    elif not ended:
        return PENDING  # the clause may still grow (``The answer is 6`` -> ``6 + 1 = 7``)
    else:
        end, closed = len(text), True
    value = _clause_value(text[marker.end() : end], marker.end(), closed)
    if isinstance(value, Stated):
        where = "####" if token == "####" else "answer marker"
        return Stated(value.text, where, value.start)
    return value


def _bare_first_line(text: str, ended: bool) -> Stated | None | _Pending:
    newline = text.find("\n", len(text) - len(text.lstrip("\n \t")))
    if newline < 0 and not ended:
        return PENDING if _BARE_START_RE.match(text) or not text.strip() else None
    line = text if newline < 0 else text[:newline]
    match = _BARE_RE.fullmatch(line)
    if match is None:
        return None
    return Stated(match.group(1).replace(",", ""), "bare", match.start(1))


def first_stated(text: str, ended: bool = True) -> Stated | None | _Pending:
    """The first answer ``text`` states at a marker or as its first line.

    Args:
        text: the response (or, with ``ended=False``, a prefix of it).
        ended: the response is finished. With ``False``, returns :data:`PENDING` when a
            continuation of ``text`` could still change the first stated answer.

    Returns:
        the :class:`Stated` answer, None when there is none (yet: a later marker may come), or
        :data:`PENDING`.
    """
    bare = _bare_first_line(text, ended)
    if bare is not None:
        return bare
    for marker in _MARKER_RE.finditer(text):
        value = _marker_answer(text, marker, ended)
        if value is not None:
            return value
    return None


def final_equals(text: str) -> Stated | None:
    """The number after the final ``=`` of an ended response, if one follows it directly."""
    cut = text.rfind("=")
    if cut < 0:
        return None
    value = _clause_value(text[cut:], cut, True)
    if not isinstance(value, Stated):
        return None
    return Stated(value.text, "final =", value.start)


def stated_number(text: str, ended: bool = True) -> Stated | None:
    """The answer a response states (see the module docstring), or None.

    Args:
        text: the whole response.
        ended: False when generation was cut by the token budget: an answer still being
            written at the cut, and the final-``=`` reading, do not count.
    """
    first = first_stated(text, ended)
    if isinstance(first, Stated):
        return first
    if ended:
        return final_equals(text)
    return None
