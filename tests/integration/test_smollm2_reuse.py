"""SmolLM2-135M-Instruct, real ARC-Easy prompts: generation from the default path's stored
prefix (with and without draft verification, dense steps) gives the same tokens as plain
greedy generation along the same edited path, and the evaluator's levers the same rewards."""

from __future__ import annotations

import random

import pytest

from drllm.distributed.config import GenerationConfig
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.models.executor import PathExecutor
from drllm.paths import LayerPath, legal_actions
from drllm.types import EvalRequest


def _arc_prompts(tokenizer, shared_data, n: int) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(shared_data / "ai2_arc" / "ARC-Easy" / "train.parquet").slice(0, n)
    out = []
    for row in table.to_pylist():
        choices = "\n".join(f"{label}. {text}" for label, text
                            in zip(row["choices"]["label"], row["choices"]["text"]))
        content = f"{row['question']}\n{choices}\nAnswer with the letter only."
        out.append(tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True))
    return out


def _paths(count: int, seed: int, num_layers: int = 30) -> list[LayerPath]:
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        path = LayerPath.default(num_layers)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(list(legal_actions(path))).apply(path)
        if any(d != 1 for d in path):
            out.append(path)
    return out


@pytest.mark.slow
def test_smollm2_resumed_generation_matches_plain(smollm2, shared_data) -> None:
    ex = PathExecutor(smollm2.model, smollm2.tokenizer)
    ids = ex.encode(_arc_prompts(smollm2.tokenizer, shared_data, 2))
    entries = ex.record_prefixes(ids, ex.generate(ids, max_new_tokens=12))
    paths = _paths(6, seed=0)
    rows = [i % len(ids) for i in range(len(paths))]
    plain = ex.generate([ids[r] for r in rows], paths, max_new_tokens=12)
    for draft in (None, 0):
        got = ex.generate_resumed([entries[r] for r in rows], paths, max_new_tokens=12,
                                  draft_tokens=draft)
        assert [g.token_ids for g in got] == [g.token_ids for g in plain]
        assert [g.text for g in got] == [g.text for g in plain]
    dense = PathExecutor(smollm2.model, smollm2.tokenizer, dense_steps=True)
    got = dense.generate_resumed([entries[r] for r in rows], paths, max_new_tokens=12)
    assert [g.token_ids for g in got] == [g.token_ids for g in plain]


@pytest.mark.slow
def test_smollm2_evaluator_levers_match_plain(smollm2, shared_data) -> None:
    prompts = _arc_prompts(smollm2.tokenizer, shared_data, 2)
    reqs = [EvalRequest(f"q{i % 2}", prompts[i % 2], "A", "mc_letter", p)
            for i, p in enumerate([LayerPath.default(30)] * 2 + _paths(6, seed=1))]
    plain = ExecutorEvaluator(smollm2.model, smollm2.tokenizer, model_id="s", generation=(
        GenerationConfig(max_new_tokens=16, reuse_prefix=False, draft=False, grader_stop=False)))
    fast = ExecutorEvaluator(smollm2.model, smollm2.tokenizer, model_id="s",
                             generation=GenerationConfig(max_new_tokens=16))
    want = plain.evaluate(reqs)
    got = fast.evaluate(reqs[::-1])[::-1]  # edited requests first: misses compute the default
    assert [e.reward for e in got] == [e.reward for e in want]
    assert all(w.response.startswith(g.response) for g, w in zip(got, want))


@pytest.mark.slow
def test_smollm2_rows_resumed_from_edited_paths_match_plain(smollm2, shared_data) -> None:
    """Search-like requests (each path a child of an earlier one): rows that start from an
    earlier edited path's prompt states give plain generation's tokens on SmolLM2."""
    rng = random.Random(3)
    tree = [LayerPath.default(30)]
    while len(tree) < 9:
        parent = rng.choice(tree)
        child = rng.choice(list(legal_actions(parent))).apply(parent)
        if child not in tree and child[0] == 1:  # keep block 0: no degenerate near-tie paths
            tree.append(child)
    prompts = _arc_prompts(smollm2.tokenizer, shared_data, 2)
    plain = ExecutorEvaluator(smollm2.model, smollm2.tokenizer, model_id="s", generation=(
        GenerationConfig(max_new_tokens=12, reuse_prefix=False, draft=False, grader_stop=False)))
    # drafts off: with them, a question whose drafts are accepted resumes from the default
    # path (the draft's states) rather than from a deeper edited path
    fast = ExecutorEvaluator(smollm2.model, smollm2.tokenizer, model_id="s",
                             generation=GenerationConfig(max_new_tokens=12, draft=False))
    for path in tree:  # one call per tree level, as a sequential search makes them
        call = [EvalRequest(f"q{i}", prompts[i], "A", "mc_letter_lenient", path) for i in (0, 1)]
        plain.evaluate(call)
        fast.evaluate(call)
        assert [g.token_ids for g in fast.last_generations] == [
            g.token_ids for g in plain.last_generations], path
    assert fast.engine.cache.counts["from_path"] > 0, fast.engine.cache.counts


@pytest.mark.slow
def test_smollm2_engine_matches_plain_greedy(smollm2, shared_data) -> None:
    """The engine on SmolLM2: rows joining a running batch (two at a time), default rows
    capturing their states, edited rows resuming from them: plain generation's tokens."""
    from drllm.engine import Engine, EngineRequest, ReuseKey, Settings

    ex = PathExecutor(smollm2.model, smollm2.tokenizer)
    prompts = _arc_prompts(smollm2.tokenizer, shared_data, 2)
    ids = ex.encode(prompts)
    paths = [LayerPath.default(30)] + _paths(5, seed=2)
    settings = Settings(12)
    reqs = [EngineRequest(tuple(ids[q]), tuple(p), settings,
                          reuse=ReuseKey(f"q{q}", tuple(ids[q]), settings))
            for p in paths[::-1] for q in (0, 1)]
    got = Engine(ex, max_rows=2).run(reqs)
    want = ex.generate([list(r.ids) for r in reqs], [r.path for r in reqs], max_new_tokens=12)
    assert [g.token_ids for g in got] == [g.token_ids for g in want]


@pytest.mark.slow
def test_bench_search_engine_prints_an_exact_json_line(smollm2, capsys) -> None:
    """``python -m drllm.jobs.bench search-engine`` on a tiny search (2 questions, 3
    simulations, 16 tokens): both sides write the same records, and the JSON line carries the
    figures the issue asks for."""
    import json

    from drllm.jobs.bench import main

    main(["search-engine", "--tasks", "synthetic_arith", "--num-examples", "2",
          "--num-simulations", "3", "--max-new-tokens", "16", "--trees", "2"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert line["exact"] is True and line["records"] == 2 and line["trees"] == 2
    assert line["evaluations"] >= 2 and line["max_new_tokens"] == 16
    assert line["evals_s_plain"] > 0 and line["evals_s_engine"] > 0 and line["speedup"] > 0
    assert line["engine_decode_s"] > 0 and line["engine_prefill_s"] > 0
