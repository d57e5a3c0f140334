"""``search-work``: what the exact work-avoidance levers buy on a real search's requests.

Measures the levers on the per-call executor (:class:`~drllm.bench.call_evaluator.CallEvaluator`,
the evaluator before :mod:`drllm.engine`; ``search-engine`` compares it with the engine).
Replays a request stream recorded from a real search (:mod:`drllm.bench.search_stream`:
SmolLM2-135M-Instruct, ARC-Easy, ``search=paper``, 16 new tokens, the search job's batching:
32 trees at once, calls of at most 16 requests; the committed recording, or ``--record N``
questions on the fly), call by call, through:

* ``serial``: the authors' method, one HF ``model.generate`` per request on the model whose
  layer list is the path's executed blocks, one request at a time. It is only correct for
  skip-only paths (a repeat shares one KV slot), so it runs and is timed on those;
* ``plain``: the batched executor, no lever (finished rows compacted at once);
* each default lever added in turn: ``prefix`` (start at the first edited block from the default
  path's stored states), ``paths`` (or from an earlier edited path's prompt states, when it
  shares more leading blocks), ``grader_stop``, ``lazy_compact`` (= the evaluator's defaults,
  the headline);
* the opt-in drafts on top of the defaults: ``draft`` (verify the default response
  teacher-forced), ``draft_pool`` (later decode steps verify drafts from other paths'
  responses).

The configurations are interleaved call by call (each evaluates a call in turn, each with
its own prefix cache), so a change of machine load hits them alike.

``exact``: every reward equals the plain run's and every token sequence too (a row that
grader-aware stopping ended must be a prefix of the plain one, with the same reward);
``mismatches`` counts the rows that differ per configuration, beside the control
``plain_rebatched`` (plain generation, each call split in two), whose mismatches with
``plain`` measure how far fp32 batched generation itself depends on a row's companions.

Long answers (``--dataset gsm8k --max-new-tokens 256``): the recorded stream's paths and call
structure replayed on GSM8K questions (each recorded question mapped to one GSM8K question),
optionally cut to ``--max-requests``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from typing import Any, Sequence

import torch
from tqdm import tqdm

from drllm.bench.executor import serial_generate
from drllm.bench.search_stream import (
    ARC_STREAM,
    RequestStream,
    load_stream,
    parse_path,
    record_stream,
    save_stream,
)
from drllm.bench.call_evaluator import CallEvaluator
from drllm.bench.search_engine import DATA_ROOT
from drllm.distributed.config import GenerationConfig
from drllm.types import EvalRequest

logger = logging.getLogger(__name__)


def _data_path(dataset: str) -> str:
    """The shared sample of ``dataset`` (``gsm8k``, else ARC) under :data:`DATA_ROOT`."""
    return f"{DATA_ROOT}/{'gsm8k' if dataset == 'gsm8k' else 'ai2_arc'}"

PLAIN = dict(reuse_prefix=False, reuse_paths=False, draft=False, grader_stop=False)
#: (label, generation overrides, compact at once?) in the order the levers are added.
LEVELS = (
    ("plain", PLAIN, True),
    ("plain_rebatched", PLAIN, True),
    ("prefix", dict(reuse_paths=False, grader_stop=False), True),
    ("paths", dict(grader_stop=False), True),
    ("grader_stop", {}, True),
    ("lazy_compact", {}, False),
    ("draft", dict(draft=True, draft_pool=False), False),
    ("draft_pool", dict(draft=True), False),
)
#: The evaluator's defaults (every lever on by default): the headline ``speedup_vs_plain``.
HEADLINE = "lazy_compact"


#: The control: plain generation with every call split in two (other row companions, other
#: padding). fp32 batched generation is not batch-invariant: a row whose greedy choice is a
#: near-tie (degenerate paths, e.g. the first blocks skipped) can flip with its companions'
#: prompt lengths. Its mismatches with ``plain`` are the noise floor of ``exact``.
REBATCHED = "plain_rebatched"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", default=str(ARC_STREAM), help="recorded stream (JSON)")
    parser.add_argument("--record", type=int, default=0,
                        help="record a fresh stream of this many questions instead")
    parser.add_argument("--record-trees", type=int, default=32,
                        help="--record: trees searched at once (the search job's default)")
    parser.add_argument("--record-batch", type=int, default=16,
                        help="--record: requests per call at most (the per-call design's batch)")
    parser.add_argument("--save", default=None, help="--record: also write the stream here")
    parser.add_argument("--dataset", default=None, help="replay on this dataset (gsm8k: long "
                        "answers); default: the stream's")
    parser.add_argument("--data-path", default=None, help="dataset root (default: "
                        f"{DATA_ROOT}/ai2_arc or .../gsm8k)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: the stream's")
    parser.add_argument("--max-requests", type=int, default=None, help="cut the stream")
    parser.add_argument("--questions", type=int, default=None,
                        help="replay only the requests of the stream's first N questions")
    parser.add_argument("--levels", default=",".join(label for label, _, _ in LEVELS),
                        help="comma-separated configurations (plain and lazy_compact always run)")
    parser.add_argument("--cache-mb", type=float, default=GenerationConfig.prefix_cache_mb)
    parser.add_argument("--no-serial", action="store_true", help="skip the serial baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")


def _requests(stream: RequestStream, dataset: str, data_path: str, tokenizer: Any,
              max_requests: int | None, questions: int | None = None) -> list[list[EvalRequest]]:
    """The stream's calls as requests on ``dataset`` (recorded ids mapped in order)."""
    from drllm.data import DatasetConfig, load_examples, render_prompt

    recorded = list(dict.fromkeys(eid for call in stream.calls for eid, _ in call))
    if questions is not None:
        kept = set(recorded[:questions])
        calls = [tuple(r for r in call if r[0] in kept) for call in stream.calls]
        stream = replace(stream, calls=tuple(c for c in calls if c))
    report = load_examples(DatasetConfig(name=dataset, path=data_path,
                                         num_examples=max(stream.num_examples, len(recorded)),
                                         seed=stream.seed,
                                         grader=stream.grader if dataset == stream.dataset
                                         else None))
    examples = list(report.examples)
    if dataset == stream.dataset:
        by_id = {ex.id: ex for ex in examples}
        mapping = {eid: by_id[eid] for eid in recorded}
    else:
        mapping = dict(zip(recorded, examples))
    prompts = {ex.id: render_prompt(ex, tokenizer) for ex in mapping.values()}
    calls, total = [], 0
    for call in stream.calls:
        reqs = [EvalRequest(mapping[e].id, prompts[mapping[e].id], mapping[e].gold,
                            mapping[e].grader, parse_path(p)) for e, p in call]
        if max_requests is not None:
            reqs = reqs[: max(0, max_requests - total)]
        if reqs:
            calls.append(reqs)
            total += len(reqs)
    return calls


def _replay(evaluators: dict[str, CallEvaluator],
            calls: Sequence[Sequence[EvalRequest]]) -> dict[str, dict]:
    """Evaluate every call in order with every evaluator in turn (interleaved, so that a
    change of machine load hits every configuration alike): per configuration its wall time,
    rewards and token ids per request."""
    runs = {label: {"seconds": 0.0, "rewards": [], "tokens": []} for label in evaluators}
    for call in tqdm(calls, desc="search-work calls", file=sys.stderr):
        for label, evaluator in evaluators.items():
            half = (len(call) + 1) // 2 if label == REBATCHED else len(call)
            for part in (call[:half], call[half:]):
                if not part:
                    continue
                start = time.perf_counter()
                evaluations = evaluator.evaluate(part)
                runs[label]["seconds"] += time.perf_counter() - start
                runs[label]["rewards"].extend(ev.reward for ev in evaluations)
                runs[label]["tokens"].extend(g.token_ids for g in evaluator.last_generations)
    for run in runs.values():
        run["evals_per_s"] = len(run["rewards"]) / run["seconds"]
    return runs


def _mismatches(run: dict, plain: dict, grader_stop: bool) -> dict[str, int]:
    """Rows whose tokens differ from the plain run's (with grader-aware stopping: are not a
    prefix of them) and rows whose reward differs."""
    tokens = sum(
        tuple(t) != tuple(p) if not grader_stop else tuple(p[: len(t)]) != tuple(t)
        for t, p in zip(run["tokens"], plain["tokens"]))
    rewards = sum(a != b for a, b in zip(run["rewards"], plain["rewards"]))
    return {"tokens": int(tokens), "rewards": int(rewards)}


def _exact(run: dict, plain: dict, grader_stop: bool) -> bool:
    return not any(_mismatches(run, plain, grader_stop).values())


def _serial(model: Any, evaluator: CallEvaluator, calls: Sequence[Sequence[EvalRequest]],
            max_new_tokens: int) -> dict:
    """The authors' method on the stream's skip-only requests, one at a time."""
    reqs = [r for call in calls for r in call if all(d != 2 for d in r.path)]
    ids = [evaluator.executor.encode([r.prompt])[0] for r in reqs]
    start = time.perf_counter()
    serial_generate(model, ids, [r.path for r in reqs], max_new_tokens)
    wall = time.perf_counter() - start
    return {"seconds": wall, "evals_per_s": len(reqs) / wall, "requests": len(reqs)}


def run_search_work(
    *, stream: RequestStream, dataset: str | None = None, data_path: str | None = None,
    max_new_tokens: int | None = None, max_requests: int | None = None,
    cache_mb: float = GenerationConfig.prefix_cache_mb, serial: bool = True,
    questions: int | None = None, levels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Replay ``stream`` through the baselines and each lever; the JSON-able results."""
    from drllm.models.loading import ModelSpec, load_model

    dataset = dataset or stream.dataset
    data_path = data_path or _data_path(dataset)
    max_new_tokens = max_new_tokens or stream.max_new_tokens
    loaded = load_model(ModelSpec())
    calls = _requests(stream, dataset, data_path, loaded.tokenizer, max_requests, questions)
    wanted = set(levels or [label for label, _, _ in LEVELS]) | {"plain", HEADLINE}
    n = sum(map(len, calls))
    logger.info("search-work: %d calls, %d requests, %s, %d new tokens", len(calls), n, dataset,
                max_new_tokens)
    evaluators = {}
    for label, overrides, eager_compact in LEVELS:
        if label not in wanted:
            continue
        gen = replace(GenerationConfig(max_new_tokens=max_new_tokens, prefix_cache_mb=cache_mb),
                      **overrides)
        evaluator = CallEvaluator(loaded.model, loaded.tokenizer, model_id=loaded.model_id,
                                      generation=gen)
        if eager_compact:
            evaluator.executor.compact_fraction = 0.0
        evaluators[label] = evaluator
    CallEvaluator(loaded.model, loaded.tokenizer, model_id=loaded.model_id,
                      generation=GenerationConfig(max_new_tokens=2)).evaluate(calls[0][:1])
    runs = _replay(evaluators, calls)
    stats = {label: ev.cache.prefixes.stats() for label, ev in evaluators.items()}
    for label, run in runs.items():
        logger.info("%s: %.3f evals/s (%.1f s)", label, run["evals_per_s"], run["seconds"])
    plain = runs["plain"]
    last = HEADLINE
    stops = {label: overrides.get("grader_stop", True) for label, overrides, _ in LEVELS}
    mismatches = {label: _mismatches(run, plain, stops.get(label, False))
                  for label, run in runs.items() if label != "plain"}
    exact = {label: not any(m.values()) for label, m in mismatches.items()
             if label != REBATCHED}
    result: dict[str, Any] = {
        "dataset": dataset, "max_new_tokens": max_new_tokens, "requests": n,
        "calls": len(calls), "questions": len({r.example_id for c in calls for r in c}),
        "evals_per_s": {k: round(v["evals_per_s"], 3) for k, v in runs.items()},
        "seconds": {k: round(v["seconds"], 2) for k, v in runs.items()},
        "speedup_vs_plain": round(runs[last]["evals_per_s"] / plain["evals_per_s"], 3),
        "speedup_vs_plain_by_lever": {k: round(v["evals_per_s"] / plain["evals_per_s"], 3)
                                      for k, v in runs.items()},
        "exact_by_lever": exact, "exact": all(exact.values()),
        "mismatches": mismatches,
        "cache": stats[last],
        "resumed": dict(evaluators[last].cache.counts),
        "cache_mb_peak": round(stats[last]["peak_bytes"] / 2**20, 1),
        "mean_new_tokens_plain": round(sum(map(len, plain["tokens"])) / max(n, 1), 2),
        "torch_threads": torch.get_num_threads(),
    }
    if serial:
        ser = _serial(loaded.model, evaluator, calls, max_new_tokens)
        result["evals_per_s"]["serial"] = round(ser["evals_per_s"], 3)
        result["serial_requests"] = ser["requests"]
        result["speedup_vs_serial"] = round(runs[last]["evals_per_s"] / ser["evals_per_s"], 3)
    return result


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from drllm.models.loading import ModelSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.record:
        stream = record_stream(ModelSpec(), "arc_easy", args.data_path or _data_path("arc_easy"),
                               args.record, args.max_new_tokens or 16,
                               max_concurrent_trees=args.record_trees,
                               max_batch_size=args.record_batch, progress=True)
        if args.save:
            save_stream(stream, args.save)
    else:
        stream = load_stream(args.stream)
    return run_search_work(
        stream=stream, dataset=args.dataset, data_path=args.data_path,
        max_new_tokens=args.max_new_tokens, max_requests=args.max_requests,
        cache_mb=args.cache_mb, serial=not args.no_serial, questions=args.questions,
        levels=[x for x in args.levels.split(",") if x],
    )
