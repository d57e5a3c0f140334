"""The executor evaluator's levers (prefix reuse, draft verification, grader-aware stopping)
give the same evaluations as plain generation, whatever the order requests arrive in and
however small the prefix cache."""

from __future__ import annotations

import random

import pytest

from drllm.distributed.config import GenerationConfig
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath, legal_actions
from drllm.types import EvalRequest

L = 4
PROMPTS = {"a": "The quick brown fox", "b": "2+2=", "c": "Once upon a time, there lived"}
PLAIN = GenerationConfig(max_new_tokens=6, reuse_prefix=False, draft=False, grader_stop=False)


def _requests(seed: int, grader: str = "exact") -> list[EvalRequest]:
    rng = random.Random(seed)
    out = []
    for qid, prompt in PROMPTS.items():
        out.append(EvalRequest(qid, prompt, "42", grader, LayerPath.default(L)))
        for _ in range(5):
            path = LayerPath.default(L)
            for _ in range(rng.randint(1, 2)):
                path = rng.choice(list(legal_actions(path))).apply(path)
            out.append(EvalRequest(qid, prompt, "42", grader, path))
    rng.shuffle(out)  # edited paths may come before their default
    return out


@pytest.fixture(scope="module")
def model_and_tok():
    return tiny_model("qwen2", num_layers=L), tiny_tokenizer()


@pytest.mark.parametrize("cache_mb", [512.0, 0.0005])
def test_levers_match_plain_any_order(model_and_tok, cache_mb) -> None:
    model, tok = model_and_tok
    reqs = _requests(seed=1)
    plain = ExecutorEvaluator(model, tok, model_id="t", generation=PLAIN)
    fast = ExecutorEvaluator(model, tok, model_id="t",
                             generation=GenerationConfig(max_new_tokens=6,
                                                         prefix_cache_mb=cache_mb))
    want = [plain.evaluate([r])[0] for r in reqs]
    got = []
    for i in range(0, len(reqs), 5):  # batches mixing questions, defaults and edits
        got.extend(fast.evaluate(reqs[i:i + 5]))
    assert got == want
    stats = fast.engine.cache.prefixes.stats()
    if cache_mb > 1:
        assert stats["misses"] == len(PROMPTS) and stats["hits"] > 0 and stats["evictions"] == 0
        assert stats["bytes"] > 0
    else:  # smaller than one entry: nothing is stored, every call recomputes the default
        assert stats["entries"] == 0 and stats["rejected"] > 0


def test_grader_stop_keeps_the_reward(model_and_tok) -> None:
    """mc_letter (strict): a row stops once no continuation can match; same reward, and the
    shorter response is a prefix of the plain one."""
    model, tok = model_and_tok
    reqs = [EvalRequest(q, p, "B", "mc_letter", r.path) for r in _requests(seed=2)
            for q, p in [(r.example_id, r.prompt)]]
    plain = ExecutorEvaluator(model, tok, model_id="t", generation=PLAIN).evaluate(reqs)
    fast = ExecutorEvaluator(model, tok, model_id="t",
                             generation=GenerationConfig(max_new_tokens=6)).evaluate(reqs)
    assert [e.reward for e in fast] == [e.reward for e in plain]
    for f, p in zip(fast, plain):
        assert p.response.startswith(f.response)
    assert any(len(f.response) < len(p.response) for f, p in zip(fast, plain))


def test_evicted_entry_is_rebuilt_without_generating_the_default(model_and_tok) -> None:
    """A cache that holds one question: alternating questions evict each other, and a miss on
    a question whose default response is known rebuilds its entry by a teacher-forced pass
    (no second default generation), still matching plain generation."""
    model, tok = model_and_tok
    plain = ExecutorEvaluator(model, tok, model_id="t", generation=PLAIN)
    probe = ExecutorEvaluator(model, tok, model_id="t", generation=GenerationConfig(max_new_tokens=6))
    sizes = []
    for q in "ab":
        probe.evaluate([EvalRequest(q, PROMPTS[q], "42", "exact", LayerPath.default(L))])
        sizes.append(probe.engine.cache.prefixes.stats()["bytes"] - sum(sizes))
    budget = max(sizes) + min(sizes) / 2  # one question fits, not both
    fast = ExecutorEvaluator(model, tok, model_id="t", generation=GenerationConfig(
        max_new_tokens=6, prefix_cache_mb=budget / 2**20, reuse_paths=False))
    edited = [LayerPath((1, 0, 1, 1)), LayerPath((1, 1, 2, 1)), LayerPath((1, 1, 1, 0))]
    reqs = [EvalRequest(q, PROMPTS[q], "42", "exact", LayerPath.default(L)) for q in "ab"]
    reqs += [EvalRequest(q, PROMPTS[q], "42", "exact", p) for p in edited for q in "ab"]
    for r in reqs:
        assert fast.evaluate([r]) == plain.evaluate([r])
    assert fast.engine.stats.defaults == 2  # only the two defaults were ever generated
    assert fast.engine.cache.counts["rebuilt"] >= len(edited)
    stats = fast.engine.cache.prefixes.stats()
    assert stats["evictions"] >= len(edited) and stats["entries"] == 1


def test_engine_and_per_call_baseline_agree(model_and_tok) -> None:
    """``bench search-engine``'s two sides: the engine evaluator and the per-call evaluator
    (the design before the engine) give the same evaluations on the same calls."""
    from drllm.bench.call_evaluator import CallEvaluator

    model, tok = model_and_tok
    reqs = [EvalRequest(r.example_id, r.prompt, "B", "mc_letter", r.path)
            for r in _requests(seed=4)]
    gen = GenerationConfig(max_new_tokens=6, max_rows=4)
    engine = ExecutorEvaluator(model, tok, model_id="t", generation=gen)
    calls = CallEvaluator(model, tok, model_id="t", generation=gen)
    for i in range(0, len(reqs), 4):
        assert engine.evaluate(reqs[i:i + 4]) == calls.evaluate(reqs[i:i + 4])
    assert engine.engine.stats.defaults == len(PROMPTS)
    assert calls.cache.counts["rows"] == engine.engine.cache.counts["rows"] > 0
