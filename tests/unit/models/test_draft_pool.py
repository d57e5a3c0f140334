"""Drafts from other paths' responses (verified in chunks mid-decode) keep generation exact."""

from __future__ import annotations

import pytest

from drllm.models.drafts import accept, pool_proposer
from drllm.models.executor import PathExecutor
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath

PROMPTS = ["The quick brown fox jumps over", "2+2=", "Once upon a time, there lived"]
PATHS = [LayerPath.parse("ESEEEE"), LayerPath.parse("EEERES"), LayerPath.parse("SEESEE")]


def test_proposer_and_accept() -> None:
    propose = pool_proposer([(1, 2, 3, 4), (1, 5, 6)], max_draft=2)
    assert list(propose((1, 5))) == [6] and list(propose((1, 2))) == [3, 4]
    assert list(propose((9,))) == [] and list(propose((1, 2, 3, 4))) == []
    assert accept([3, 4, 7], [3, 4]) == 2 and accept([3, 9], [3, 4]) == 1 and accept([0], []) == 0


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_pool_drafts_match_plain(family) -> None:
    tok = tiny_tokenizer()
    ex = PathExecutor(tiny_model(family, num_layers=6), tok)
    ids = ex.encode(PROMPTS)
    plain = ex.generate(ids, PATHS, max_new_tokens=12)
    entries = ex.record_prefixes(ids, ex.generate(ids, max_new_tokens=12))
    for entry, gen, k in zip(entries, plain, (2, 5, 0)):
        wrong = list(gen.token_ids)
        if k + 1 < len(wrong):  # agrees for k + 1 tokens, then a wrong token, then the rest
            wrong[k + 1] = (wrong[k + 1] + 1) % ex.vocab_size
        entry.remember(wrong)
        entry.remember(gen.token_ids[:3])  # a short one: a prefix without continuation
    got = ex.generate_resumed(entries, PATHS, max_new_tokens=12, draft_tokens=0)
    assert [g.token_ids for g in got] == [g.token_ids for g in plain]
    got = ex.generate_resumed(entries, PATHS, max_new_tokens=12)
    assert [g.token_ids for g in got] == [g.token_ids for g in plain]
    for entry, gen in zip(entries, plain):
        entry.remember(gen.token_ids)  # the exact answer: accepted whole
    got = ex.generate_resumed(entries, PATHS, max_new_tokens=12)
    assert [g.token_ids for g in got] == [g.token_ids for g in plain]
    assert [g.finish_reason for g in got] == [g.finish_reason for g in plain]
