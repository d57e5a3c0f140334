"""Per-row stopping rules of greedy generation: EOS ids, a token budget, stop strings, a grader.

:class:`StopRule` holds the rules of one generate call; :meth:`StopRule.row` starts the
incremental state of one row (:class:`RowStop`), which is pushed one token at a time.

Stop strings are checked incrementally: after each token only the decoded text of the row's
last few tokens (a window holding at least the longest stop string plus a margin of characters)
is searched, and a hit is confirmed on the full decoded text, so the decision is the one a full
decode of the row would give for tokenizers whose decoding concatenates at token boundaries up
to the boundary characters (byte-level BPE, SentencePiece).

Grader-aware stopping: a row may carry a predicate ``final(text)`` (a grader's
:meth:`~drllm.rewards.Grader.verdict_final`) that says no continuation of ``text`` can change
the grade; the row then stops with reason :data:`GRADER`. The predicate sees the decoded text
without a trailing incomplete character (``\\ufffd``), so a later token cannot rewrite what it
judged.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

logger = logging.getLogger(__name__)

EOS, LENGTH, STOP, GRADER = "eos", "length", "stop", "grader"

#: Characters beyond the longest stop string that a stop-string window holds.
_WINDOW_MARGIN_CHARS = 8

FinalFn = Callable[[str], bool]


class StopRule:
    """Decides, after each new token of a row, whether the row is finished and why.

    Args:
        tokenizer: decodes token ids to text (for stop strings and the final text).
        eos_token_ids: ids that end a row (the token is kept in ``token_ids``).
        max_new_tokens: tokens a row may generate.
        stop_strings: a row stops as soon as its decoded text (special tokens removed) contains
            one of them; the final text is cut before the earliest occurrence.
    """

    def __init__(
        self, tokenizer: object, eos_token_ids: frozenset[int], max_new_tokens: int,
        stop_strings: Sequence[str] = (),
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if isinstance(stop_strings, str):
            raise TypeError(
                f"stop_strings must be a sequence of strings, got the string {stop_strings!r}"
            )
        stops = tuple(stop_strings)
        for s in stops:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_new_tokens = max_new_tokens
        self.stop_strings = stops
        self._window_chars = max((len(s) for s in stops), default=0) + _WINDOW_MARGIN_CHARS

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` without special tokens."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def _stop_at(self, text: str) -> int:
        """Index of the earliest stop string in ``text``, or -1."""
        hits = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        return min(hits) if hits else -1

    def _tail_has_stop(self, token_ids: Sequence[int]) -> bool:
        """Whether the decoded text of the last tokens (enough for any stop string) has one."""
        n = len(token_ids)
        width = min(n, 4)
        while True:
            text = self.decode(token_ids[n - width:])
            if self._stop_at(text) >= 0:
                return True
            if width >= n or len(text) >= self._window_chars:
                return False
            width = min(n, width * 2)

    def check(self, token_ids: Sequence[int], final: Optional[FinalFn] = None,
              *, full: bool = False) -> str | None:
        """Finish reason after the last of ``token_ids`` was generated, or None to continue.

        Args:
            final: the row's grader predicate (see :data:`GRADER`), or None.
            full: search the stop strings in the whole decoded text instead of only when the
                tail window can hold one (the reference the windowed check is tested against).
        """
        if token_ids[-1] in self.eos_token_ids:
            return EOS
        if self.stop_strings and (full or self._tail_has_stop(token_ids)):
            if self._stop_at(self.decode(token_ids)) >= 0:
                return STOP
        if final is not None and final(self.decode(token_ids).rstrip("\ufffd")):
            return GRADER
        if len(token_ids) >= self.max_new_tokens:
            return LENGTH
        return None

    def check_full(self, token_ids: Sequence[int], final: Optional[FinalFn] = None) -> str | None:
        """:meth:`check` with the stop strings searched in the full decoded text (reference)."""
        return self.check(token_ids, final, full=True)

    def first_stop(
        self, token_ids: Sequence[int], start: int = 1, final: Optional[FinalFn] = None
    ) -> tuple[int, str | None]:
        """The first prefix ``token_ids[:k]`` (``k >= start``) at which the row stops.

        Returns:
            ``(k, reason)``, or ``(len(token_ids), None)`` if no prefix stops.
        """
        for k in range(start, len(token_ids) + 1):
            reason = self.check(token_ids[:k], final)
            if reason is not None:
                return k, reason
        return len(token_ids), None

    def final_text(self, token_ids: Sequence[int], reason: str) -> str:
        """Decoded text of a finished row, cut before the stop string if one ended it."""
        text = self.decode(token_ids)
        if reason == STOP:
            cut = self._stop_at(text)
            assert cut >= 0, "a row finished by a stop string must contain it"
            text = text[:cut]
        return text
