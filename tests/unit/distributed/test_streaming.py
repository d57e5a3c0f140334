"""Streaming through the model-backed evaluator: requests join the running engine at its next
step, each outcome comes back when its rows finish, and what comes back is exactly what a
plain, unbatched evaluation of the request gives (same tokens, rewards, block counts)."""

from __future__ import annotations

import random

import pytest

from drllm.distributed import (
    DriverConfig, EvalError, EvaluationPool, EvaluatorSpec, ListSink, LocalTransport,
    SearchDriver,
)
from drllm.distributed.config import GenerationConfig
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath, legal_actions
from drllm.search import MCTSConfig
from drllm.testing.models import TinyModelLoader
from drllm.types import EvalRequest, Example

L = 4
PROMPTS = {"a": "The quick brown fox", "b": "2+2=", "c": "Once upon a time, there lived"}
PLAIN = GenerationConfig(max_new_tokens=8, reuse_prefix=False, draft=False, grader_stop=False)


def _requests(seed: int) -> list[EvalRequest]:
    rng = random.Random(seed)
    out = []
    for qid, prompt in PROMPTS.items():
        out.append(EvalRequest(qid, prompt, "42", "exact", LayerPath.default(L)))
        for _ in range(4):
            path = LayerPath.default(L)
            for _ in range(rng.randint(1, 2)):
                path = rng.choice(list(legal_actions(path))).apply(path)
            out.append(EvalRequest(qid, prompt, "42", "exact", path))
    rng.shuffle(out)  # edited paths may come before their default
    return out


@pytest.fixture(scope="module")
def model_and_tok():
    return tiny_model("llama", num_layers=L), tiny_tokenizer()


def _drain(ev: ExecutorEvaluator, steps: int | None = None) -> list:
    out, n = [], 0
    while ev.streaming and (steps is None or n < steps):
        out.extend(ev.step())
        n += 1
    return out


@pytest.mark.parametrize("levers", [True, False])
def test_streamed_outcomes_equal_plain_evaluations_token_for_token(model_and_tok, levers):
    model, tok = model_and_tok
    reqs = _requests(seed=3)
    plain = ExecutorEvaluator(model, tok, model_id="t", generation=PLAIN)
    want = [plain.evaluate([r])[0] for r in reqs]
    gen = GenerationConfig(max_new_tokens=8) if levers else PLAIN
    ev = ExecutorEvaluator(model, tok, model_id="t", generation=gen)
    got: dict[int, object] = {}
    for start in range(0, len(reqs), 4):  # waves submitted while earlier rows decode
        for tag in range(start, min(start + 4, len(reqs))):
            ev.submit(tag, reqs[tag])
        got.update(_drain(ev, steps=3))
    got.update(_drain(ev))
    assert [got[i] for i in range(len(reqs))] == want
    assert all(e.response_tokens > 0 for e in want)


def test_a_request_submitted_mid_decode_joins_and_finishes_first(model_and_tok):
    model, tok = model_and_tok
    gen = GenerationConfig(max_new_tokens=12, reuse_prefix=False)
    long = EvalRequest("a", PROMPTS["a"], "42", "exact", LayerPath.default(L))
    # strict letters: the grader stops a row once no continuation can match "A"
    short = EvalRequest("b", PROMPTS["b"], "A", "mc_letter", LayerPath.parse("ESEE"))
    alone = ExecutorEvaluator(model, tok, model_id="t", generation=gen)
    want_long, want_short = alone.evaluate([long])[0], alone.evaluate([short])[0]
    assert want_long.response_tokens == 12 and want_short.response_tokens < 4

    ev = ExecutorEvaluator(model, tok, model_id="t", generation=gen)
    ev.submit(0, long)
    assert _drain(ev, steps=3) == []  # "long" is decoding
    ev.submit(1, short)
    order = []
    while ev.streaming:
        order.extend((tag, outcome, ev.engine.stats.steps) for tag, outcome in ev.step())
    assert [tag for tag, _, _ in order] == [1, 0]
    assert order[0][1] == want_short and order[1][1] == want_long
    # admitted at the very next step, while "long" kept decoding; back at once
    assert order[0][2] == 4 < order[1][2] and ev.engine.stats.rows == 2


def test_a_refused_request_is_an_error_and_the_others_go_on(model_and_tok):
    model, tok = model_and_tok
    ev = ExecutorEvaluator(model, tok, model_id="t", generation=PLAIN)
    good = EvalRequest("a", PROMPTS["a"], "42", "exact", LayerPath.default(L))
    illegal = EvalRequest("b", PROMPTS["b"], "42", "exact", LayerPath.parse("SSSS"))
    ev.submit(0, good)
    ev.submit(1, illegal)
    out = dict(_drain(ev))
    assert isinstance(out[1], EvalError)
    assert out[0] == ExecutorEvaluator(model, tok, model_id="t",
                                       generation=PLAIN).evaluate([good])[0]


def test_in_process_streamed_search_equals_the_batch_search():
    """A whole search through the pool: streamed (the engine) and one batch per step (the
    per-call baseline) write the same records."""
    from drllm.bench.call_evaluator import CallEvaluator

    examples = [Example(id=qid, dataset="synthetic", split="train", prompt=p, messages=(),
                        gold="42", grader="exact") for qid, p in PROMPTS.items()]
    mcts = MCTSConfig(num_simulations=6)
    loader = TinyModelLoader("llama", num_layers=L)

    def search(cls, in_flight):
        spec = EvaluatorSpec(cls, {"model": loader, "generation": GenerationConfig(
            max_new_tokens=6), "constraints": mcts.constraints})
        pool = EvaluationPool(LocalTransport(spec, 1), max_in_flight_per_worker=in_flight)
        pool.start()
        sink = ListSink()
        try:
            SearchDriver(pool, mcts, DriverConfig(max_concurrent_trees=3), sink=sink,
                         render=lambda ex: ex.prompt).run(examples)
        finally:
            pool.close()
        return {r.example.id: (r.result.best_path, r.result.best_reward,
                               [(e.path, e.evaluation.reward, e.evaluation.response)
                                for e in r.result.trace]) for r in sink.records}

    assert search(ExecutorEvaluator, 64) == search(CallEvaluator, 2)
