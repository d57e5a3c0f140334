"""Answer extraction helpers shared by the graders and the dataset adapters.

Everything here is pure string processing (no sympy): it never raises on arbitrary text and runs
in time linear in the input length (no backtracking-prone regexes over the whole response).

* :func:`last_boxed` — content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces),
  or of ``\\boxed 42`` written without braces.
* :func:`gsm8k_gold` — the number after ``####`` in a GSM8K solution, canonicalised.
* :func:`last_number` / :func:`parse_number` — numbers in free text (commas, ``$``, ``%``, units
  and trailing periods tolerated).
* :func:`normalize_letter` — multiple-choice labels ``A``–``E`` / ``1``–``5`` to a letter.
* :func:`extract_letter_strict` / :func:`extract_letter_lenient` — the letter a response chose.
* :func:`other_choice_named` — the other choice a response's text after its letter names.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation

logger = logging.getLogger(__name__)

_BOX_COMMANDS = ("\\boxed", "\\fbox")

#: A number in free text: optional sign, either comma-grouped thousands or plain digits, optional
#: decimals; or a bare decimal like ".5". Commas are only thousands separators in 3-digit groups.
NUMBER_RE = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\d.])-?\.\d+")
_FRACTION_RE = re.compile(
    r"^(-?)\s*(?:\\[dt]?frac\{\s*(-?\d+(?:\.\d+)?)\s*\}\{\s*(-?\d+(?:\.\d+)?)\s*\}"
    r"|(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?))$"
)
# LaTeX / text decorations removed before reading a number out of a short answer.
_NUMBER_NOISE_RE = re.compile(
    r"(?<!\\)\\[!,;: ]|\\\$|\\%|\\left|\\right|[$%]|\\text\{|\\mbox\{|\\mathrm\{"
)

#: Default strict multiple-choice pattern (paper, Appendix B), with ``{letters}`` filled in by a
#: character class such as ``[A-E]``. Applied with ``fullmatch`` to the stripped response.
STRICT_LETTER_PATTERN = r"(?:Answer:\s*)?\(?({letters})\)?[.:)]?"

_ANSWER_IS_RE = re.compile(
    r"answer\s*(?:is|:)[\s:]*(?:(?:option|choice)[\s:]*)?\(?([A-Za-z])\)?(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_LEADING_LETTER_RE = re.compile(r"(?:answer:\s*)?(?:\(([A-Za-z])\)|([A-Za-z])[.:)])(?:\s|$)",
                                re.IGNORECASE)
_MARKDOWN_RE = re.compile(r"[*_`]+")
#: a line that starts like a choice label: ``B.``, ``B)``, ``B:``, ``(B)``
_CHOICE_LINE_RE = re.compile(r"^[ \t]*(?:\(([A-Z])\)|([A-Z])[.:)])(?:\s|$)", re.MULTILINE)

#: Longest digit string turned into a ``Decimal`` (longer ones cannot be a benchmark answer).
_MAX_NUMBER_CHARS = 100

#: Longest response head / tail (characters) the lenient letter matcher scans for "answer is X".
LENIENT_SCAN_CHARS = 20_000


def match_brace(text: str, open_idx: int, end: int | None = None) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_idx`` (escapes ``\\x`` skipped), or None.

    ``end`` bounds the search (the brace must close before index ``end``; default: the end).
    """
    depth = 0
    i = open_idx
    n = len(text) if end is None else min(end, len(text))
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_box_command(text: str, end: int | None = None) -> tuple[int, int] | None:
    """(start, end-of-command-name) of the last ``\\boxed``/``\\fbox`` not followed by a letter
    that starts before index ``end`` (default: anywhere in ``text``)."""
    # Each command's search only moves backwards, so the whole scan is linear in len(text).
    limit = len(text) if end is None else end
    positions = {cmd: text.rfind(cmd, 0, limit) for cmd in _BOX_COMMANDS}
    while True:
        cmd, best = max(positions.items(), key=lambda item: item[1])
        if best < 0:
            return None
        name_end = best + len(cmd)
        if name_end >= len(text) or not text[name_end].isalpha():
            return best, name_end
        positions[cmd] = text.rfind(cmd, 0, best)


def last_boxed(text: str | None) -> str | None:
    """Content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced.

    ``\\boxed 42`` (no braces) yields the run of characters after the space up to whitespace or
    ``$``. Returns None when there is no box, or when the last box is unclosed (e.g. a
    generation truncated mid-answer) — earlier boxes are deliberately not used, since the last
    one is the model's final answer. The content is stripped; it may be the empty string.
    """
    if not isinstance(text, str):
        return None
    found = last_box_command(text)
    if found is None:
        return None
    _, i = found
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return None
    if text[i] == "{":
        close = match_brace(text, i)
        return None if close is None else text[i + 1 : close].strip()
    if i == found[1]:  # "\boxed" immediately followed by a non-brace, non-space char
        return None
    j = i
    while j < n and not text[j].isspace() and text[j] != "$":
        j += 1
    return text[i:j].strip() or None


def _canonical_decimal(value: Decimal) -> str:
    """``Decimal`` to a plain string without exponent or trailing zeros (``2.50`` -> ``2.5``)."""
    if value == value.to_integral_value():
        return str(int(value))
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_number(text: str | None) -> Decimal | None:
    """Read ONE numeric value from a short answer string, or None.

    Tolerates ``$``/``\\$``, ``%``/``\\%``, thousands commas, trailing units (``"5 apples"``,
    ``"5\\text{ cm}"``), a ``x =`` prefix, a trailing period, and exact fractions ``\\frac{a}{b}``
    / ``a/b``. When several numbers remain, the last one is used.
    """
    if not isinstance(text, str):
        return None
    s = text.strip()
    if len(s) > 1000:
        s = s[-1000:]
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    s = _NUMBER_NOISE_RE.sub("", s).replace("{,}", "").strip().rstrip(".").strip()
    frac = _FRACTION_RE.match(s)
    if frac:
        sign, n1, d1, n2, d2 = frac.groups()
        num, den = (n1, d1) if n1 is not None else (n2, d2)
        try:
            value = Decimal(num) / Decimal(den)
        except (InvalidOperation, ZeroDivisionError):
            return None
        return -value if sign else value
    return _to_decimal(last_number(s))


def _to_decimal(number: str | None) -> Decimal | None:
    if number is None or len(number) > _MAX_NUMBER_CHARS:
        return None
    try:
        return Decimal(number)
    except InvalidOperation:
        return None


def last_number(text: str | None) -> str | None:
    """The last number in free text, thousands commas removed (``"... $1,080."`` -> ``"1080"``).

    Returns the digits as written (sign and decimals kept), or None if the text has no number.
    """
    if not isinstance(text, str):
        return None
    last = None
    for last in NUMBER_RE.finditer(text):
        pass
    return None if last is None else last.group(0).replace(",", "")


def gsm8k_gold(answer_text: str | None) -> str | None:
    """The GSM8K reference number: what follows the last ``####``, canonicalised.

    ``"... #### 1,080"`` -> ``"1080"``; ``"#### 2.50"`` -> ``"2.5"``. If there is no ``####`` the
    whole text must itself be a number (``"72"``, ``"$1,080"``). Returns None when no single
    number can be read — adapters reject such rows.
    """
    if not isinstance(answer_text, str):
        return None
    s = answer_text.rsplit("####", 1)[1] if "####" in answer_text else answer_text
    s = s.strip().replace("$", "").replace("%", "").rstrip(".").strip()
    if not NUMBER_RE.fullmatch(s):
        return None
    value = _to_decimal(s.replace(",", ""))
    return None if value is None else _canonical_decimal(value)


def normalize_letter(label: str | None, num_choices: int = 5) -> str | None:
    """Map a multiple-choice label to its letter: ``"A"``–``"E"`` stay, ``"1"``–``"5"`` -> A–E.

    ARC uses both styles (A–D, A–E, 1–4, 1–5). ``num_choices`` bounds the accepted range (5 ->
    A–E / 1–5). Returns None for anything else (lowercase letters are not labels).
    """
    if not isinstance(label, str):
        return None
    s = label.strip()
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:num_choices]
    if len(s) == 1 and s in letters:
        return s
    if s.isdigit() and s.isascii() and 1 <= int(s) <= num_choices:
        return letters[int(s) - 1]
    return None


def letters_class(letters: str) -> str:
    """Regex character class of exactly the characters of ``letters`` (``"ABC"`` -> ``[ABC]``)."""
    return "[" + "".join(re.escape(ch) for ch in letters) + "]"


def strict_letter_pattern(template: str, letters: str) -> str:
    """Fill ``{letters}`` in a letter-pattern template with :func:`letters_class` of ``letters``."""
    return template.replace("{letters}", letters_class(letters))


def extract_letter_strict(response: str | None, pattern: re.Pattern[str]) -> str | None:
    """The letter captured by ``pattern`` (full match of the stripped response), or None."""
    if not isinstance(response, str):
        return None
    match = pattern.fullmatch(response.strip())
    return None if match is None else match.group(1)


def extract_letter_lenient(response: str | None, letters: str) -> str | None:
    """The letter a free-form response chose, or None. Letters must be uppercase.

    Tried in order, on the response with markdown emphasis (``*``, ``_``, backticks) removed:

    1. the strict form (``B``, ``(B)``, ``B.``, ``Answer: B``);
    2. the LAST ``answer is X`` / ``answer: X`` phrase (``"The correct answer is (C)."``);
    3. a leading letter followed by ``.``, ``)`` or ``:`` and text (``"B. photosynthesis"``,
       ``"(B) photosynthesis"``), unless lines start with another choice label too: a response
       that lists the options (``"A. Fe\nB. I\nC. Ir"``) chose none of them.
    """
    if not isinstance(response, str):
        return None
    head = _MARKDOWN_RE.sub("", response[:LENIENT_SCAN_CHARS]).strip()
    tail = _MARKDOWN_RE.sub("", response[-LENIENT_SCAN_CHARS:])
    strict = re.compile(strict_letter_pattern(STRICT_LETTER_PATTERN, letters))
    found = extract_letter_strict(head, strict)
    if found is not None:
        return found
    for match in reversed(list(_ANSWER_IS_RE.finditer(tail))):
        if match.group(1) in letters:
            return match.group(1)
    lead = _LEADING_LETTER_RE.match(head)
    if lead:
        letter = lead.group(1) or lead.group(2)
        if letter in letters and not _lists_choices(head, letters):
            return letter
    return None


def _lists_choices(text: str, letters: str) -> bool:
    """Whether lines of ``text`` start with two different choice labels: the response lists
    the options (``"A. Fe\nB. I\nC. Ir"``), so its leading letter is the list's first entry,
    not a choice (found by the search on SmolLM2 ARC-Easy paths)."""
    labels = {m.group(1) or m.group(2) for m in _CHOICE_LINE_RE.finditer(text)}
    return len(labels & set(letters)) > 1


#: a choice line of a multiple-choice prompt: ``B. photosynthesis`` / ``(B) photosynthesis``
_PROMPT_CHOICE_RE = re.compile(r"^[ \t]*(?:\(([A-Z])\)|([A-Z])[.)])[ \t]+(\S[^\n]*)$", re.MULTILINE)
#: a letter stated with a text after it, anywhere in a response: ``A. heat production``
_STATED_CHOICE_RE = re.compile(r"(?<![A-Za-z0-9])(?:\(([A-Z])\)|([A-Z])[.)])[ \t]+(\S[^\n]*)")
#: shortest stated text compared as a prefix of a choice's text (``D. the`` is cut, not a choice)
_MIN_PREFIX_CHARS = 4


def _choice_norm(text: str) -> str:
    return " ".join(_MARKDOWN_RE.sub("", text).lower().split()).strip(" .;:,'\"")


def choice_texts(prompt: str | None) -> dict[str, str]:
    """The lettered choices a prompt lists (``{"A": "fe", ...}``, normalised), or ``{}`` when
    it lists fewer than two (not a multiple-choice prompt)."""
    if not isinstance(prompt, str):
        return {}
    found: dict[str, str] = {}
    for m in _PROMPT_CHOICE_RE.finditer(prompt):
        found.setdefault(m.group(1) or m.group(2), _choice_norm(m.group(3)))
    return found if len(found) > 1 else {}


def _names(said: str, text: str) -> bool:
    if not said or not text:
        return False
    if said == text:
        return True
    return len(said) >= _MIN_PREFIX_CHARS and (text.startswith(said) or said.startswith(text))


def other_choice_named(response: str | None, letter: str, prompt: str | None) -> str | None:
    """The other choice whose text ``response`` writes after ``letter``, or None.

    ``"D. the distribution of rock types"`` with choice C "the distribution of rock types"
    and D "the distribution of earthquakes" names C: the letter is right by luck, the answer is
    C's (9 of 23 labels of a generated-letter ARC-Easy search at ``search=paper`` were so). A
    text naming the letter's own choice, a cut one (``"D. the"``) or one naming no choice is
    not a conflict; a prompt that lists no choices never is.
    """
    choices = choice_texts(prompt)
    if not isinstance(response, str) or letter not in choices:
        return None
    for m in _STATED_CHOICE_RE.finditer(response[:LENIENT_SCAN_CHARS]):
        if (m.group(1) or m.group(2)) != letter:
            continue
        said = _choice_norm(m.group(3))
        if _names(said, choices[letter]):
            continue
        others = [k for k, text in choices.items() if k != letter and _names(said, text)]
        if others:
            return others[0]
    return None
