"""The engine is exact: every request gets the tokens of a plain greedy generation along its
path, whatever joins or leaves the running batch around it, and whatever the reuse cache
answers from (tiny random models of the four families, fp32; SmolLM2 in
tests/integration/test_smollm2_reuse.py).
"""

from __future__ import annotations

import random

import pytest
import torch

from drllm.engine import Engine, EngineRequest, ReuseKey, Settings
from drllm.engine.reuse import ReuseOptions
from drllm.models.executor import PathExecutor
from drllm.models.tiny import TINY_FAMILIES, tiny_model, tiny_tokenizer
from drllm.testing.models import SAMPLE_PROMPTS
from drllm.paths import LayerPath, legal_actions

L = 6
PROMPTS = SAMPLE_PROMPTS
PATHS = [LayerPath.parse(p) for p in ("EEEEEE", "EERESE", "SERRES", "RSSERE", "ESEEEE")]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _hf_generate(model, tok, prompt: str, max_new_tokens: int) -> list[int]:
    enc = tok([prompt], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    row = []
    for t in out[0, enc.input_ids.shape[1]:].tolist():
        row.append(t)
        if t in eos:
            break
    return row


def _tree_paths(count: int, seed: int) -> list[LayerPath]:
    """Paths grown like a search tree: each a legal edit of an earlier one (default first)."""
    rng = random.Random(seed)
    paths = [LayerPath.default(L)]
    while len(paths) < count:
        parent = rng.choice(paths)
        child = rng.choice(list(legal_actions(parent))).apply(parent)
        if child not in paths:
            paths.append(child)
    return paths


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_default_rows_joining_and_leaving_match_hf_generate(family, tok) -> None:
    """Budgets differ per request, so rows leave at different steps and waiting rows join
    a batch already decoding (two rows at most): each row is stock HF greedy."""
    model = tiny_model(family, num_layers=L)
    engine = Engine(PathExecutor(model, tok), max_rows=2)
    ex = engine.ex
    budgets = [3, 11, 6, 9, 14, 2]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(budgets))]
    gens = engine.run([EngineRequest(tuple(ex.encode([p])[0]), (1,) * L, Settings(n))
                       for p, n in zip(prompts, budgets)])
    for p, n, gen in zip(prompts, budgets, gens):
        assert list(gen.token_ids) == _hf_generate(model, tok, p, n)
        assert gen.layers_executed == L * len(gen.token_ids)
    assert engine.stats.peak_rows == 2 and engine.stats.rows == len(budgets)
    assert not engine.busy


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_mixed_paths_submitted_mid_decode_match_rows_alone(family, tok) -> None:
    ex = PathExecutor(tiny_model(family, num_layers=L), tok)
    engine = Engine(ex)
    ids = ex.encode(PROMPTS)
    reqs = [EngineRequest(tuple(ids[i % 4]), tuple(p), Settings(4 + 3 * i))
            for i, p in enumerate(PATHS)]
    first = {engine.submit(r): r for r in reqs[:2]}
    results = {}
    for _ in range(3):  # the first two are decoding when the others arrive
        results.update({r.request_id: r.generation for r in engine.step()})
    later = {engine.submit(r): r for r in reqs[2:]}
    while engine.busy:
        results.update({r.request_id: r.generation for r in engine.step()})
    for rid, req in {**first, **later}.items():
        alone = ex.generate([list(req.ids)], [req.path],
                            max_new_tokens=req.settings.max_new_tokens)[0]
        assert results[rid].token_ids == alone.token_ids, (rid, req.path)
        assert results[rid].text == alone.text
        assert results[rid].finish_reason == alone.finish_reason


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_a_batch_rows_keep_joining_stays_as_wide_as_its_rows(family, tok) -> None:
    """Staggered rows keep the batch busy for many more steps than any row lives: the key
    columns only rows that left held are dropped, so the batch is never wider than its longest
    live row (prompt + tokens), and every row stays exact."""
    ex = PathExecutor(tiny_model(family, num_layers=L), tok)
    engine = Engine(ex, max_rows=3)
    ids = ex.encode(PROMPTS)
    reqs = [EngineRequest(tuple(ids[i % len(ids)]), tuple(PATHS[i % len(PATHS)]),
                          Settings(5 + (i * 7) % 9)) for i in range(32)]
    results, widest, steps = {}, 0, 0
    pending = list(reqs)
    submitted = {}
    while pending or engine.busy:
        if pending and steps % 2 == 0:  # a new request every other step
            r = pending.pop(0)
            submitted[engine.submit(r)] = r
        results.update({r.request_id: r.generation for r in engine.step()})
        steps += 1
        if engine._state is not None:
            widest = max(widest, engine._state.length)
    longest_row = max(len(r.ids) for r in reqs) + max(r.settings.max_new_tokens for r in reqs)
    assert steps > longest_row  # the stream outlived every row's width
    assert widest <= longest_row, (widest, longest_row)
    for rid, req in submitted.items():
        alone = ex.generate([list(req.ids)], [req.path],
                            max_new_tokens=req.settings.max_new_tokens)[0]
        assert results[rid].token_ids == alone.token_ids, (rid, req.path)


def test_results_come_back_as_each_row_finishes(tok) -> None:
    ex = PathExecutor(tiny_model("llama", num_layers=L), tok)
    engine = Engine(ex)
    ids = ex.encode(PROMPTS[:2])
    short = engine.submit(EngineRequest(tuple(ids[0]), (1,) * L, Settings(2)))
    long = engine.submit(EngineRequest(tuple(ids[1]), (1,) * L, Settings(12)))
    order = []
    while engine.busy:
        order.extend((r.request_id, engine.stats.steps) for r in engine.step())
    assert [rid for rid, _ in order] == [short, long]
    assert order[0][1] < order[1][1]


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_chunked_prefill_matches_one_pass(family, tok) -> None:
    ex = PathExecutor(tiny_model(family, num_layers=L), tok)
    ids = ex.encode(PROMPTS)
    want = ex.generate(ids, PATHS[:4], max_new_tokens=8)
    engine = Engine(ex, prefill_chunk=5, max_batch_tokens=12)
    got = engine.run([EngineRequest(tuple(i), tuple(p), Settings(8))
                      for i, p in zip(ids, PATHS[:4])])
    assert [g.token_ids for g in got] == [g.token_ids for g in want]


def _reuse_requests(ex, paths, questions=(0, 2, 3), settings=Settings(10)):
    ids = ex.encode(PROMPTS)
    out = []
    for path in paths:
        for q in questions:
            key = ReuseKey(f"q{q}", tuple(ids[q]), settings)
            out.append(EngineRequest(tuple(ids[q]), tuple(path), settings, reuse=key))
    return out


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("draft", [False, True])
def test_reuse_cache_matches_plain_generation(family, tok, draft) -> None:
    """A search-like stream (paths grown as a tree, edited requests arriving before their
    default path has generated): the same tokens as plain generation, the default states
    captured during the default's own generation (no teacher-forced rebuild)."""
    ex = PathExecutor(tiny_model(family, num_layers=L), tok)
    engine = Engine(ex, max_rows=5, reuse=ReuseOptions(draft=draft))
    paths = _tree_paths(16, seed=len(family))
    reqs = _reuse_requests(ex, paths[1:] + paths[:1])  # the default path asked last
    got = []
    for start in range(0, len(reqs), 7):
        got.extend(engine.run(reqs[start: start + 7]))
    want = ex.generate([list(r.ids) for r in reqs], [r.path for r in reqs], max_new_tokens=10)
    assert [g.token_ids for g in got] == [g.token_ids for g in want]
    assert [g.text for g in got] == [g.text for g in want]
    counts = engine.cache.counts
    assert counts["rows"] == len(reqs) - 3 and counts["rebuilt"] == 0
    assert counts["prompt_blocks_reused"] > 0 and counts["from_path"] > 0
    assert engine.stats.answered == 3  # the default requests: answered from their entries
    if draft:
        assert counts["draft_tokens"] > 0


def test_captured_entry_equals_teacher_forced_one(tok) -> None:
    ex = PathExecutor(tiny_model("qwen2", num_layers=L), tok)
    engine = Engine(ex, max_rows=3)
    reqs = _reuse_requests(ex, [LayerPath.default(L)])
    gens = engine.run(reqs)
    forced = ex.record_prefixes([list(r.ids) for r in reqs], gens)
    for req, want in zip(reqs, forced):
        entry = engine.cache.prefixes.get(req.reuse)
        assert entry.tokens == want.tokens and entry.fed == want.fed
        torch.testing.assert_close(entry.hidden, want.hidden, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(entry.keys, want.keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(entry.values, want.values, rtol=1e-4, atol=1e-5)


def test_evicted_entry_is_rebuilt_and_stays_exact(tok) -> None:
    ex = PathExecutor(tiny_model("mistral", num_layers=L), tok)
    engine = Engine(ex, reuse=ReuseOptions(cache_bytes=1))  # no entry fits: every one evicted
    paths = _tree_paths(5, seed=1)
    got = engine.run(_reuse_requests(ex, paths, questions=(1,)))
    want = ex.generate(ex.encode([PROMPTS[1]] * len(paths)), paths, max_new_tokens=10)
    assert [g.token_ids for g in got] == [g.token_ids for g in want]
    assert engine.cache.counts["rebuilt"] >= 1


def test_rejects_bad_requests(tok) -> None:
    ex = PathExecutor(tiny_model("llama", num_layers=L), tok)
    engine = Engine(ex)
    with pytest.raises(Exception, match="path"):
        engine.submit(EngineRequest((1, 2), (0, 0, 0, 1, 1, 1)))
    with pytest.raises(ValueError, match="empty"):
        engine.submit(EngineRequest((), (1,) * L))
    with pytest.raises(ValueError, match="reuse key"):
        EngineRequest((1, 2), (1,) * L, reuse=ReuseKey("q", (1, 3), Settings()))
    with pytest.raises(ValueError, match="max_rows"):
        Engine(ex, max_rows=0)


def test_an_error_drops_the_run_and_the_engine_stays_usable(tok) -> None:
    ex = PathExecutor(tiny_model("qwen2", num_layers=L), tok)
    engine = Engine(ex)
    ids = ex.encode(PROMPTS)

    def broken(text: str) -> bool:
        raise RuntimeError("grader predicate failed")

    good = EngineRequest(tuple(ids[0]), tuple(PATHS[1]), Settings(6))
    with pytest.raises(RuntimeError, match="predicate"):
        engine.run([good, EngineRequest(tuple(ids[1]), (1,) * L, Settings(6), final=broken)])
    assert not engine.busy
    again = engine.run([good])
    assert again[0].token_ids == ex.generate([ids[0]], [PATHS[1]], max_new_tokens=6)[0].token_ids
