"""``search-engine``: a real search run twice, with the per-call evaluator and with the engine.

The same in-process search (same questions, seed, ``search=paper`` MCTS config (``--num-simulations``
for quick runs), the dataset's
generation budget, SmolLM2-135M-Instruct, one evaluator worker, no Ray) runs with

* ``plain``: :class:`~drllm.bench.call_evaluator.CallEvaluator`, the evaluator before the
  engine: one executor batch per call running until its longest row finishes, the reuse cache
  driven per call (the default path generated first, its states rebuilt teacher-forced);
* ``engine``: :class:`~drllm.distributed.executor_evaluator.ExecutorEvaluator` on the engine
  (:mod:`drllm.engine`): rows leave as they finish and waiting ones join, default-path states
  captured during their own generation.

Each tree searches sequentially (``max_pending_per_tree=1``), so what a tree evaluates does not
depend on batching: both runs must write the same records (shard rows). ``exact``: every
record's label (best path), rewards (default and best) and every evaluated path's reward are
identical. One JSON line per task: ``evals_s_plain``, ``evals_s_engine``, ``speedup``,
``exact``, and where the engine run's time went: prefill (and verification passes), decode
steps, and the rest (``engine_other_s``: scheduling, grading, the plausibility pass, the
driver and its trees), with the mean rows per decode step. ARC-Easy runs with ``reward=generate``
(``mc_letter_lenient``, 16 tokens): the job's ARC config scores choices by log-likelihood,
which does not generate at all.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from drllm.distributed.config import DriverConfig

logger = logging.getLogger(__name__)

DATA_ROOT = "../shared/data"

#: task -> (dataset config overrides, default question count, default max new tokens); a
#: ``path`` is relative to ``--data-root``.
TASKS = {
    "synthetic_arith": (dict(name="synthetic_arith", levels=(1,), prompt_style="chat"), 64, 128),
    "arc_easy": (dict(name="arc_easy", path="ai2_arc", prompt_style="base",
                      reward="generate", grader="mc_letter_lenient"), 32, 16),
    "gsm8k": (dict(name="gsm8k", path="gsm8k", prompt_style="chat"), 16, 256),
}


def _search(evaluator_cls: type, examples: list, render: Any, generation: Any,
            model_spec: Any, batch: int, trees: int, simulations: int
            ) -> tuple[list, float, dict]:
    """One in-process search; its records, wall seconds and the evaluator's stats."""
    from drllm.distributed import (
        DriverConfig, EvaluationPool, EvaluatorSpec, ListSink, LocalTransport, SearchDriver,
    )
    from drllm.search import MCTSConfig

    mcts = MCTSConfig(num_simulations=simulations)
    spec = EvaluatorSpec(evaluator_cls, {"model": model_spec, "generation": generation,
                                         "constraints": mcts.constraints})
    transport = LocalTransport(spec, 1)
    pool = EvaluationPool(transport, max_in_flight_per_worker=batch)
    pool.start()
    sink = ListSink()
    try:
        driver = SearchDriver(pool, mcts, DriverConfig(max_concurrent_trees=trees), sink=sink,
                              render=render, progress=False)
        start = time.perf_counter()
        summary = driver.run(examples)
        wall = time.perf_counter() - start
        stats = _worker_stats(transport)
    finally:
        pool.close()
    return list(sink.records), wall, {"evaluations": summary.evaluations, **stats}


def _worker_stats(transport: Any) -> dict:
    evaluators = [e for e in getattr(transport, "evaluators", []) if e is not None]
    return evaluators[0].stats() if evaluators and hasattr(evaluators[0], "stats") else {}


def _fingerprint(record: Any) -> tuple:
    """What must not change: the label, the rewards and responses, every evaluated path's
    reward in order."""
    r = record.result
    trace = tuple((e.path.to_str(), e.evaluation.reward) for e in r.trace)
    return (str(record.example.id), r.best_path.to_str(), r.best_reward, r.default_reward,
            r.default_response, r.best_response, r.solved,
            tuple(p.to_str() for p in r.good_paths), r.good_rewards, trace)


def run_task(task: str, *, num_examples: int | None = None, max_new_tokens: int | None = None,
             batch_plain: int = 16, batch_engine: int = 128,
             trees: int = DriverConfig.max_concurrent_trees,
             simulations: int = 50, data_root: str | Path = DATA_ROOT) -> dict[str, Any]:
    """Search one task with both evaluators; the JSON line's fields."""
    import torch

    from drllm.bench.call_evaluator import CallEvaluator
    from drllm.data import DatasetConfig, load_examples, render_prompt
    from drllm.distributed.config import GenerationConfig
    from drllm.distributed.executor_evaluator import ExecutorEvaluator
    from drllm.models.loading import ModelSpec, load_tokenizer

    overrides, count, tokens = TASKS[task]
    if "path" in overrides:
        overrides = {**overrides, "path": str(Path(data_root) / overrides["path"])}
    config = DatasetConfig(**overrides, num_examples=num_examples or count, seed=0,
                           max_new_tokens=max_new_tokens or tokens)
    examples = list(load_examples(config).examples)
    model_spec = ModelSpec()
    tokenizer = load_tokenizer(model_spec)
    prompts = {ex.id: render_prompt(ex, tokenizer, style=config.prompt_style) for ex in examples}
    budget, stops = config.generation_budget
    generation = GenerationConfig(max_new_tokens=budget, stop_strings=stops,
                                  min_plausibility=config.min_plausibility)
    render = lambda ex: prompts[ex.id]  # noqa: E731
    plain, plain_s, plain_stats = _search(CallEvaluator, examples, render, generation,
                                          model_spec, batch_plain, trees, simulations)
    engine, engine_s, engine_stats = _search(ExecutorEvaluator, examples, render, generation,
                                             model_spec, batch_engine, trees, simulations)
    a = sorted(map(_fingerprint, plain))
    b = sorted(map(_fingerprint, engine))
    n_plain, n_engine = plain_stats["evaluations"], engine_stats["evaluations"]
    split = engine_stats.get("engine", {})
    return {
        "task": task, "questions": len(examples), "max_new_tokens": budget,
        "evaluations": n_engine, "evals_s_plain": round(n_plain / plain_s, 3),
        "evals_s_engine": round(n_engine / engine_s, 3),
        "speedup": round((n_engine / engine_s) / (n_plain / plain_s), 3),
        "exact": a == b and n_plain == n_engine, "records": len(engine),
        "seconds_plain": round(plain_s, 1), "seconds_engine": round(engine_s, 1),
        "simulations": simulations, "trees": trees, "batch_plain": batch_plain,
        "batch_engine": batch_engine,
        "engine_prefill_s": round(split.get("prefill_s", 0.0), 1),
        "engine_decode_s": round(split.get("decode_s", 0.0), 1),
        "engine_other_s": round(engine_s - split.get("prefill_s", 0.0)
                                - split.get("decode_s", 0.0), 1),
        "engine_peak_rows": split.get("peak_rows"),
        "engine_rows_per_decode_step": round(split.get("decode_tokens", 0)
                                             / max(1, split.get("decode_steps", 0)), 1),
        "plain_generate_s": round(plain_stats.get("generate_s", 0.0), 1),
        "torch_threads": torch.get_num_threads(),
    }


def add_arguments(parser: Any) -> None:
    """Options of ``python -m drllm.jobs.bench search-engine``."""
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="comma-separated tasks (default: %(default)s)")
    parser.add_argument("--num-examples", type=int, default=None,
                        help="questions per task (default: 64 / 32 / 16)")
    parser.add_argument("--data-root", default=DATA_ROOT,
                        help="folder holding ai2_arc/ and gsm8k/ (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation budget (default: 128 / 16 / 256)")
    parser.add_argument("--batch-plain", type=int, default=16,
                        help="requests per call for the per-call evaluator (the job's default)")
    parser.add_argument("--batch-engine", type=int, default=128,
                        help="requests the pool keeps on the streaming engine's worker")
    parser.add_argument("--trees", type=int, default=DriverConfig.max_concurrent_trees,
                        help="trees searched at once, on both sides (default: the driver's "
                             "%(default)s; each tree has one path out, so they bound the "
                             "engine's rows)")
    parser.add_argument("--num-simulations", type=int, default=50,
                        help="MCTS simulations per question (default: the paper's 50)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")


def run_from_args(args: Any) -> dict[str, Any]:
    """Run every task; print one JSON line per task (the last line: all of them)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = {}
    for task in [t for t in args.tasks.split(",") if t]:
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r}; choose from {sorted(TASKS)}")
        result = run_task(task, num_examples=args.num_examples,
                          max_new_tokens=args.max_new_tokens, batch_plain=args.batch_plain,
                          batch_engine=args.batch_engine, trees=args.trees,
                          simulations=args.num_simulations, data_root=args.data_root)
        print(json.dumps(result, sort_keys=True), flush=True)
        out[task] = result
    return out
