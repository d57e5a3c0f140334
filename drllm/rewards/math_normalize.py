"""String normalisation of final math answers (the fallback comparison of ``math_boxed``).

Two answers are "string-equal" when :func:`normalize_math_answer` maps them to the same string.
The rules combine the classic MATH ``strip_string`` (Hendrycks et al.) and Minerva's
``normalize_final_answer`` (Lewkowycz et al.), made safer: unit words are only dropped after a
number or as a trailing ``\\text{...}``, never by blind substring deletion (Minerva's removal of
``"ft"`` turns ``\\left`` into ``\\le``).

Cost is bounded: answers longer than :data:`MAX_NORMALIZE_CHARS` are compared verbatim, and no
rule is worse than quadratic in the (short) answer. Never raises on ``str`` input.
"""

from __future__ import annotations

import re

from drllm.rewards.extract import match_brace

#: Answers longer than this are compared verbatim (stripped); no final answer is this long.
MAX_NORMALIZE_CHARS = 2000

_BOX_PREFIXES = ("\\boxed{", "\\fbox{")
_DROP_RE = re.compile(
    r"\\(?:left|right|[bB]ig{1,2}[lr]?)(?![a-zA-Z])"  # delimiter sizing
    r"|\\displaystyle|\\textstyle"
    r"|\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree"  # degrees
    r"|\\%|%|\\\$|\$"  # percent, dollars, math-mode delimiters
)
# Spacing commands; ``(?<!\\)`` keeps the row separator ``\\`` of ``a \\ b`` intact.
_SPACE_RE = re.compile(r"(?<!\\)\\[,:; ]|\\q?quad(?![a-zA-Z])|~")
_NEG_SPACE_RE = re.compile(r"(?<!\\)\\!")
_THOUSANDS_SPACE_RE = re.compile(r"(?<=\d),\s*\\!\s*(?=\d)")  # 14,\!400 is 14400
_THIN_SPACE_THOUSANDS_RE = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")  # 1\,000 is 1000
_RENAMES = (
    ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"),
    ("\\mbox{", "\\text{"), ("\\textbf{", "\\text{"), ("\\textrm{", "\\text{"),
    ("\\textit{", "\\text{"), ("\\mathrm{", "\\text{"), ("\\mathbf{", "\\text{"),
    ("\\textnormal{", "\\text{"),
    ("\\neq", "\\ne"), ("\\leq", "\\le"), ("\\geq", "\\ge"),
    ("\\varnothing", "\\emptyset"), ("\\ldots", "\\dots"), ("\\cdots", "\\dots"),
    ("{,}", ""), ("\\infin", "\\infty"),
)
_TRAILING_TEXT_UNIT_RE = re.compile(
    r"^(.*?\S)\s*\\text\{\s*[a-zA-Z][a-zA-Z .]*\}\s*(?:\^\s*\{?\s*[23]\s*\}?)?\.?$"
)
_NUMBER_WITH_UNIT_RE = re.compile(
    r"^(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)|\\frac\{\d+\}\{\d+\})"
    r"\s+[a-zA-Z]{2,}(?:\s+[a-zA-Z]+)*\.?$"  # words of 2+ letters: "3 x" stays a product
)
_TEXT_RE = re.compile(r"\\text\{([^{}]*)\}")
_VAR_ASSIGN_RE = re.compile(r"^\s*[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?\s*(?:=|\\in)\s*")
# One LaTeX argument: a brace group without nesting, a command that takes no argument (``\pi``,
# not ``\frac``/``\sqrt``/``\text``...), or one character.
_TAKES_ARGS = (r"(?:[dtc]?frac|sqrt|text\w*|math\w*|mbox|boxed|fbox|overline|bar|hat|vec"
               r"|[dt]?binom|operatorname)")
_COMMAND_ARG = r"\\(?!" + _TAKES_ARGS + r"(?![a-zA-Z]))[a-zA-Z]+(?![a-zA-Z])"
_ARG = r"(\{[^{}]*\}|" + _COMMAND_ARG + r"|[0-9a-zA-Z])"
_FRAC_SHORT_RE = re.compile(r"\\frac\s*" + _ARG + r"\s*" + _ARG)
_SQRT_SHORT_RE = re.compile(r"\\sqrt\s*(" + _COMMAND_ARG + r"|[0-9a-zA-Z])")
_SINGLE_SCRIPT_RE = re.compile(r"([_^])\{(\w)\}")
_DIGIT_SUBSCRIPT_RE = re.compile(r"_(\d{2,})")
#: A number written in a base, ``1101_2`` / ``141_{13}``: math-verify drops the subscript.
BASE_NUMBER_RE = re.compile(r"\d_\{?\d")
_WHITESPACE_RE = re.compile(r"\s+")
_COMMA_NUMBER_RE = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SLASH_FRACTION_RE = re.compile(r"^(-?)(\d+)/(\d+)$")
_LEADING_DOT_RE = re.compile(r"(?<![\d}])\.(\d)")
_TRAILING_ZEROS_RE = re.compile(r"^(-?\d+)\.(\d*?)0+$")
_PAREN_LETTER_RE = re.compile(r"^\(([A-Za-z])\)$")
_WORD_RE = re.compile(r"^[A-Za-z][A-Za-z ]{2,}$")


def _unwrap_box(s: str) -> str:
    """``\\boxed{X}`` (the whole string) -> ``X``, repeatedly."""
    changed = True
    while changed:
        changed = False
        for prefix in _BOX_PREFIXES:
            if s.startswith(prefix) and s.endswith("}") and _closes_at_end(s, len(prefix) - 1):
                s = s[len(prefix):-1].strip()
                changed = True
    return s


def _closes_at_end(s: str, open_idx: int) -> bool:
    """Whether the ``{`` at ``open_idx`` is closed by the string's last character."""
    return match_brace(s, open_idx) == len(s) - 1


def _strip_outer_braces(s: str) -> str:
    while len(s) >= 2 and s[0] == "{" and _closes_at_end(s, 0):
        s = s[1:-1]
    return s


def _strip_units(s: str) -> str:
    """Drop a trailing ``\\text{unit}`` after content, or unit words after a bare number."""
    match = _TRAILING_TEXT_UNIT_RE.match(s)
    if match:
        s = match.group(1)
    match = _NUMBER_WITH_UNIT_RE.match(s.strip())
    if match:
        s = match.group(1)
    return s


def _unwrap_text(s: str) -> str:
    previous = None
    while previous != s:
        previous = s
        s = _TEXT_RE.sub(r"\1", s)
    return s


def _normalize_number(s: str) -> str:
    """Canonical plain numbers: ``.5`` -> ``0.5``, ``2.50`` -> ``2.5``, ``3/4`` -> ``\\frac{3}{4}``.

    Thousands commas are handled by :func:`_clean` while spaces still tell ``1,000`` (a number)
    from ``45, 135`` (a list).
    """
    if s.startswith("+") and len(s) > 1 and (s[1].isdigit() or s[1] == "."):
        s = s[1:]
    s = _LEADING_DOT_RE.sub(r"0.\1", s)
    zeros = _TRAILING_ZEROS_RE.match(s)
    if zeros:
        s = zeros.group(1) + ("." + zeros.group(2) if zeros.group(2) else "")
    if s in ("-0", "-0.0"):
        s = "0"
    slash = _SLASH_FRACTION_RE.match(s)
    if slash:
        s = f"{slash.group(1)}\\frac{{{slash.group(2)}}}{{{slash.group(3)}}}"
    return s


def _brace(arg: str) -> str:
    return arg if arg.startswith("{") else "{" + arg + "}"


def fix_shorthand(s: str) -> str:
    """Brace the arguments of ``\\frac`` and ``\\sqrt`` written without braces.

    ``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac \\pi4`` -> ``\\frac{\\pi}{4}``,
    ``\\frac{1}2`` -> ``\\frac{1}{2}``, ``\\sqrt3`` -> ``\\sqrt{3}`` (one token per argument,
    as LaTeX reads them). Fully braced forms are unchanged.
    """
    s = _FRAC_SHORT_RE.sub(lambda m: "\\frac" + _brace(m.group(1)) + _brace(m.group(2)), s)
    return _SQRT_SHORT_RE.sub(lambda m: "\\sqrt{" + m.group(1) + "}", s)


def _clean(answer: str) -> str:
    """Steps safe for both comparisons: they keep LaTeX parseable (spaces, ``\\text{}`` stay)."""
    s = _unwrap_box(answer.strip())
    s = _DROP_RE.sub("", s)
    s = _THOUSANDS_SPACE_RE.sub(",", s)
    s = _THIN_SPACE_THOUSANDS_RE.sub("", s)
    s = _NEG_SPACE_RE.sub("", s)
    s = _SPACE_RE.sub(" ", s)
    for old, new in _RENAMES:
        s = s.replace(old, new)
    s = _strip_units(s.strip())
    if _COMMA_NUMBER_RE.match(s):
        s = s.replace(",", "")
    return fix_shorthand(s).strip()


def prepare_for_symbolic(answer: str) -> str:
    """The answer as sent to math-verify: boxes, ``$``, ``%``, degrees, sizing and spacing
    commands, thousands commas and trailing units removed; shorthand braced; spaces kept.

    Percent signs go because math-verify reads ``44\\%+1`` as ``44`` (a false match); the string
    comparison already treats ``44\\%`` and ``44`` as equal. ``\\text{...}`` is kept (unwrapping
    it would make ``\\text{no}`` and ``\\text{on}`` equal products of symbols).
    """
    if len(answer) > MAX_NORMALIZE_CHARS:
        return answer.strip()
    return _clean(answer)


def normalize_math_answer(answer: str) -> str:
    """Canonical string form of a final answer (LaTeX or plain).

    Removes ``$``, ``\\left``/``\\right``, spacing commands, degree signs, ``%``, ``\\$``,
    trailing units, ``\\text{}`` wrappers, a ``x =`` / ``x \\in`` prefix, whitespace and outer
    braces; maps ``\\dfrac``/``\\tfrac`` to ``\\frac``, ``\\frac12`` to ``\\frac{1}{2}``,
    ``\\sqrt3`` to ``\\sqrt{3}``, ``a/b`` to ``\\frac{a}{b}``; canonicalises numbers
    (``1,000``, ``.5``, ``2.50``, ``3.0``, trailing period) and ``(C)`` to ``C``; lowercases
    plain words (``\\text{Monday}`` == ``monday``).
    """
    s = answer.strip()
    if len(s) > MAX_NORMALIZE_CHARS:
        return s
    s = _unwrap_text(_clean(s))
    number_with_unit = _NUMBER_WITH_UNIT_RE.match(s.strip())  # "\text{5 cm}", unwrapped
    if number_with_unit:
        s = number_with_unit.group(1)
    if s.count("=") == 1 or (s.count("=") == 0 and "\\in" in s):
        s = _VAR_ASSIGN_RE.sub("", s, count=1)
    s = fix_shorthand(s)  # again: \text{} unwrapping can expose shorthand
    s = _WHITESPACE_RE.sub("", s)
    s = _SINGLE_SCRIPT_RE.sub(r"\1\2", s)
    s = _DIGIT_SUBSCRIPT_RE.sub(r"_{\1}", s)  # 141_13 (as written by models) == 141_{13}
    s = _strip_outer_braces(s)
    s = s.rstrip(".") if not s.endswith("\\dots") else s
    s = _normalize_number(s)
    letter = _PAREN_LETTER_RE.match(s)
    if letter:
        s = letter.group(1)
    if _WORD_RE.match(s):
        s = s.lower()
    return s
