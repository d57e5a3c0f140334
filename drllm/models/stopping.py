"""Per-row stopping rules of greedy generation: EOS ids, a token budget, stop strings."""

from __future__ import annotations

import logging
from typing import Sequence

logger = logging.getLogger(__name__)

EOS, LENGTH, STOP = "eos", "length", "stop"


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

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` without special tokens."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def _stop_at(self, text: str) -> int:
        """Index of the earliest stop string in ``text``, or -1."""
        hits = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        return min(hits) if hits else -1

    def check(self, token_ids: Sequence[int]) -> str | None:
        """Finish reason after the last of ``token_ids`` was generated, or None to continue."""
        if token_ids[-1] in self.eos_token_ids:
            return EOS
        if self.stop_strings and self._stop_at(self.decode(token_ids)) >= 0:
            return STOP
        if len(token_ids) >= self.max_new_tokens:
            return LENGTH
        return None

    def final_text(self, token_ids: Sequence[int], reason: str) -> str:
        """Decoded text of a finished row, cut before the stop string if one ended it."""
        text = self.decode(token_ids)
        if reason == STOP:
            cut = self._stop_at(text)
            assert cut >= 0, "a row finished by a stop string must contain it"
            text = text[:cut]
        return text
