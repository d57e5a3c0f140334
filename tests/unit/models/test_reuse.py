"""Work avoidance is exact: generation from a stored default prefix, with or without draft
verification, gives the same tokens as plain greedy generation along the same path.

Tiny random models of each family (fp32); SmolLM2 in tests/integration/test_smollm2_reuse.py.
"""

from __future__ import annotations

import random

import pytest
import torch

from drllm.models.executor import PathExecutor
from drllm.models.prefix import PrefixCache
from drllm.models.tiny import TINY_FAMILIES, tiny_model, tiny_tokenizer
from drllm.testing.models import SAMPLE_PROMPTS
from drllm.paths import LayerPath, legal_actions

L = 6
PROMPTS = SAMPLE_PROMPTS


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _executor(family: str, tok, **kwargs) -> PathExecutor:
    return PathExecutor(tiny_model(family, num_layers=L), tok, **kwargs)


def _edited_paths(count: int, seed: int) -> list[LayerPath]:
    """Random paths 1-3 legal edits from the default (skips and repeats)."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        path = LayerPath.default(L)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(list(legal_actions(path))).apply(path)
        if any(d != 1 for d in path):
            out.append(path)
    return out


def _tokens(gens) -> list[tuple[int, ...]]:
    return [g.token_ids for g in gens]


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("draft_tokens", [None, 0, 3])
def test_resumed_matches_plain(family, tok, draft_tokens) -> None:
    ex = _executor(family, tok)
    ids = ex.encode(PROMPTS)
    default = ex.generate(ids, max_new_tokens=12)
    entries = ex.record_prefixes(ids, default)
    paths = _edited_paths(8, seed=len(family))
    rows = [i % len(ids) for i in range(len(paths))]
    plain = ex.generate([ids[r] for r in rows], paths, max_new_tokens=12)
    resumed = ex.generate_resumed([entries[r] for r in rows], paths, max_new_tokens=12,
                                  draft_tokens=draft_tokens)
    assert _tokens(resumed) == _tokens(plain)
    assert [g.text for g in resumed] == [g.text for g in plain]
    assert [g.finish_reason for g in resumed] == [g.finish_reason for g in plain]
    assert [g.layers_executed for g in resumed] == [g.layers_executed for g in plain]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_accepted_draft_and_later_disagreement(family, tok) -> None:
    """A draft the edited path agrees with for k tokens, then not: accept k, decode the rest.

    The draft is the edited path's own output with one token changed at position k; the
    entry's states are the default path's over that draft (any token sequence works).
    """
    ex = _executor(family, tok)
    ids = ex.encode(PROMPTS)
    paths = _edited_paths(len(ids), seed=7)
    plain = ex.generate(ids, paths, max_new_tokens=10)
    for k, (prompt, gen) in enumerate(zip(ids, plain)):
        drafts = list(gen.token_ids)
        cut = min(k + 1, len(drafts) - 1)
        if 0 <= cut < len(drafts) - 1:
            drafts[cut] = (drafts[cut] + 1) % ex.vocab_size
        fake = ex.generate([prompt], max_new_tokens=10)[0]
        fake = type(fake)(text=fake.text, token_ids=tuple(drafts), layers_executed=0,
                          prompt_tokens=len(prompt), finish_reason=fake.finish_reason)
        entry = ex.record_prefixes([prompt], [fake])[0]
        out = ex.generate_resumed([entry], [paths[k]], max_new_tokens=10)[0]
        assert out.token_ids == gen.token_ids, (k, out.token_ids, gen.token_ids)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_dense_steps_match_gathered(family, tok) -> None:
    sparse = _executor(family, tok)
    dense = _executor(family, tok, dense_steps=True)
    ids = sparse.encode(PROMPTS * 2)
    paths = _edited_paths(len(ids), seed=3)
    want = sparse.generate(ids, paths, max_new_tokens=10)
    assert _tokens(dense.generate(ids, paths, max_new_tokens=10)) == _tokens(want)
    entries = dense.record_prefixes(ids, dense.generate(ids, max_new_tokens=10))
    assert _tokens(dense.generate_resumed(entries, paths, max_new_tokens=10)) == _tokens(want)


def test_prefix_cache_lru_and_budget(tok) -> None:
    ex = _executor("llama", tok)
    ids = ex.encode(PROMPTS[:1] * 3)  # three entries of one size
    entries = ex.record_prefixes(ids, ex.generate(ids, max_new_tokens=4))
    size = entries[0].nbytes
    cache = PrefixCache(max_bytes=2 * size)
    assert cache.get("a") is None
    cache.put("a", entries[0])
    cache.put("b", entries[1])
    assert cache.get("a") is entries[0]  # a is now the most recent
    cache.put("c", entries[2])  # evicts b
    assert cache.get("b") is None and cache.get("c") is entries[2]
    stats = cache.stats()
    assert stats["hits"] == 2 and stats["misses"] == 2 and stats["evictions"] == 1
    assert stats["bytes"] == entries[0].nbytes + entries[2].nbytes <= 2 * size
    assert not PrefixCache(max_bytes=size // 2).put("x", entries[0])


def test_entry_states_are_the_default_paths(tok) -> None:
    """The stored states entering block i equal a cacheless forward's (hook) over the same text."""
    ex = _executor("qwen2", tok)
    ids = ex.encode(PROMPTS[:1])
    gen = ex.generate(ids, max_new_tokens=6)
    entry = ex.record_prefixes(ids, gen)[0]
    fed = list(ids[0]) + list(gen[0].token_ids[:-1])
    seen = {}
    ex.prefill_states(torch.tensor([fed]), None, None,
                      block_hook=lambda b, h, m: seen.__setitem__(b, h[0].clone()))
    for block in range(L):
        torch.testing.assert_close(entry.hidden[block], seen[block])
    assert entry.fed == len(fed) and entry.tokens == gen[0].token_ids


def _tree_paths(count: int, seed: int) -> list[LayerPath]:
    """Paths grown like a search tree: each a legal edit of an earlier one (the default first)."""
    rng = random.Random(seed)
    paths = [LayerPath.default(L)]
    while len(paths) < count:
        parent = rng.choice(paths)
        actions = list(legal_actions(parent))
        if actions:
            child = rng.choice(actions).apply(parent)
            if child not in paths:
                paths.append(child)
    return paths


def _evaluators(model, tok, max_new_tokens: int = 10, **levers):
    from drllm.distributed.config import GenerationConfig
    from drllm.distributed.executor_evaluator import ExecutorEvaluator

    plain = ExecutorEvaluator(model, tok, model_id="t", generation=GenerationConfig(
        max_new_tokens=max_new_tokens, reuse_prefix=False, reuse_paths=False, draft=False,
        grader_stop=False))
    fast = ExecutorEvaluator(model, tok, model_id="t",
                             generation=GenerationConfig(max_new_tokens=max_new_tokens, **levers))
    return plain, fast


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("draft", [True, False])
def test_paths_resumed_from_edited_paths_match_plain(family, tok, draft) -> None:
    """A search-like stream (children of earlier paths, two questions per call): rows that
    start from an earlier edited path's prompt states give plain generation's tokens."""
    from drllm.types import EvalRequest

    plain, fast = _evaluators(tiny_model(family, num_layers=L), tok, draft=draft)
    reqs = [EvalRequest(f"q{j}", PROMPTS[j], "x", "exact", p)
            for p in _tree_paths(24, seed=len(family)) for j in (0, 3)]
    for start in range(0, len(reqs), 6):
        call = reqs[start: start + 6]
        plain.evaluate(call)
        fast.evaluate(call)
        assert [g.token_ids for g in fast.last_generations] == [
            g.token_ids for g in plain.last_generations], start
    counts = fast.engine.cache.counts
    assert counts["from_path"] > 0, counts  # the lever was exercised, not only the default
    assert counts["prompt_blocks_reused"] > 0
    assert fast.engine.cache.prefixes.stats()["paths"] > 0


def test_path_states_are_the_paths_own(tok) -> None:
    """A stored path's states entering each block, and its keys, equal a cacheless forward's
    along that path; blocks before its start are its base's tensors (shared, not copied)."""
    from drllm.models.resume import ResumeRow

    ex = _executor("llama", tok)
    ids = ex.encode(PROMPTS[2:3])
    entry = ex.record_prefixes(ids, ex.generate(ids, max_new_tokens=6))[0]
    parent = LayerPath((1, 0) + (1,) * (L - 2))
    child = LayerPath(tuple(parent)[:3] + (2,) + tuple(parent)[4:])
    _, (parent_states,) = ex.resume([ResumeRow(tuple(parent), entry, 0)], max_new_tokens=6,
                                    keep_states=True)
    _, (child_states,) = ex.resume([ResumeRow(tuple(child), entry, 0, base=parent_states,
                                              start=3)], max_new_tokens=6, keep_states=True)
    assert child_states.start == 3
    for block in range(4):  # up to and including its start: the parent's own tensors
        assert (child_states.hidden[block].data_ptr()
                == parent_states.hidden[block].data_ptr())
    for states, path in ((parent_states, parent), (child_states, child)):
        seen = {}
        ex.prefill_states(torch.tensor(ids), None, [path],
                          block_hook=lambda b, h, m: seen.__setitem__(b, h[0].clone()))
        for block in range(L):
            torch.testing.assert_close(states.hidden[block], seen[block])
    assert set(child_states.kv) == {(b, p) for b in range(L) for p in (0, 1) if child[b] > p}


def test_cache_drops_path_states_before_questions(tok) -> None:
    from drllm.models.resume import ResumeRow

    ex = _executor("llama", tok)
    ids = ex.encode(PROMPTS[:1] * 2)
    entries = ex.record_prefixes(ids, ex.generate(ids, max_new_tokens=4))
    size = entries[0].nbytes
    cache = PrefixCache(max_bytes=2 * size + size // 4)
    cache.put("a", entries[0])
    cache.put("b", entries[1])
    _, states = ex.resume([ResumeRow((0,) + (1,) * (L - 1), entries[0], 0)],
                          max_new_tokens=4, keep_states=True)
    entries[0].add_path(states[0])
    assert entries[0].nbytes > size
    cache.refit("a")  # over budget: a's path states go first, both questions stay
    assert len(cache) == 2 and not entries[0].paths
    assert cache.stats()["path_drops"] == 1 and cache.bytes <= cache.max_bytes
