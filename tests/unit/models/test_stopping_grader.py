"""Grader-aware stopping is exact, and incremental stop strings agree with a full decode."""

from __future__ import annotations

import itertools
import random

import pytest

from drllm.models.stopping import StopRule
from drllm.models.tiny import tiny_tokenizer
from drllm.rewards import get_grader

ALPHABET = ["A", "B", "E", ".", ")", "(", ":", " ", "\n", "x", "Answer", "Answer:"]


def test_strict_letter_final_only_when_no_continuation_matches() -> None:
    g = get_grader("mc_letter")
    assert not g.verdict_final("") and not g.verdict_final("  ")
    assert not g.verdict_final("B") and not g.verdict_final("Answer: ") and not g.verdict_final("(B")
    assert g.verdict_final("B. photosynthesis") and g.verdict_final("The answer")
    assert not get_grader("mc_letter_lenient").verdict_final("The answer")
    assert not get_grader("gsm8k_numeric").verdict_final("x")
    # exhaustive over short strings: final => every continuation grades the same (reward 0)
    pieces = [""] + ALPHABET
    for a, b in itertools.product(ALPHABET, repeat=2):
        prefix = a + b
        if not g.verdict_final(prefix):
            continue
        for s in itertools.product(pieces, repeat=2):
            for gold in "ABE":
                assert g.grade(prefix + "".join(s), gold).reward == g.grade(prefix, gold).reward


@pytest.mark.parametrize("stops", [("\n\n",), ("ab", "z"), ("Question:",)])
def test_incremental_stop_strings_match_full_decode(stops) -> None:
    tok = tiny_tokenizer()
    rule = StopRule(tok, frozenset({2}), max_new_tokens=200, stop_strings=stops)
    rng = random.Random(0)
    texts = ["".join(rng.choice(["a", "b", "z", "\n", " ", "Question", ":", "é", "x"])
                     for _ in range(60)) for _ in range(30)]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        def first(check):  # the step at which a row decoding ``ids`` stops, and why
            return next(((k, r) for k in range(1, len(ids) + 1)
                         if (r := check(ids[:k])) is not None), None)

        assert first(rule.check) == first(rule.check_full), text
