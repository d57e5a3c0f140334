"""A request stream recorded from a real search, for the ``search-work`` benchmark to replay.

A stream is the sequence of executor calls an in-process search made: each call a list of
``(example_id, path)`` requests. It is stored as JSON with the workload that produced it
(dataset, examples, generation budget, MCTS preset), so a replay evaluates exactly the
requests the search made, in the same batches, without rerunning the search.

:func:`record_stream` runs a small in-process search (SmolLM2 by default, the paper preset)
with an evaluator that logs every call; :func:`load_stream` / :func:`save_stream` read and write
the JSON.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from drllm.distributed.config import DriverConfig, GenerationConfig
from drllm.distributed.evaluator import Evaluator, EvaluatorSpec
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.paths import LayerPath
from drllm.types import EvalRequest, Evaluation

logger = logging.getLogger(__name__)

#: The committed ARC-Easy recording: SmolLM2, ``search=paper``, 16 new tokens, 32 questions
#: searched 32 trees at once in calls of at most 16 requests (the search job's defaults),
#: 740 requests in 100 calls.
ARC_STREAM = Path(__file__).with_name("arc_easy_stream.json")


@dataclass(frozen=True)
class RequestStream:
    """The executor calls of one search.

    Attributes:
        dataset: adapter name (``arc_easy``, ``gsm8k``).
        num_examples, seed, grader: the dataset slice searched (``DatasetConfig`` fields).
        max_new_tokens: generation budget of every evaluation.
        recorded: how the search ran (trees at once, batch size, wall time, evals/s, levers);
            informational.
        calls: per executor call, its ``(example_id, path)`` requests (path as a string of
            decisions, :meth:`LayerPath.to_str`).
    """

    dataset: str
    num_examples: int
    seed: int
    max_new_tokens: int
    grader: str | None = None
    calls: tuple[tuple[tuple[str, str], ...], ...] = field(default=())
    recorded: dict = field(default_factory=dict, compare=False)

    @property
    def num_requests(self) -> int:
        return sum(len(c) for c in self.calls)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "num_examples": self.num_examples, "seed": self.seed,
                "max_new_tokens": self.max_new_tokens, "grader": self.grader,
                "recorded": self.recorded, "calls": [[list(r) for r in call] for call in self.calls]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RequestStream":
        calls = tuple(tuple((str(e), str(p)) for e, p in call) for call in data["calls"])
        return cls(str(data["dataset"]), int(data["num_examples"]), int(data["seed"]),
                   int(data["max_new_tokens"]), data.get("grader"), calls,
                   dict(data.get("recorded") or {}))


def save_stream(stream: RequestStream, path: str | Path) -> None:
    Path(path).write_text(json.dumps(stream.to_json()) + "\n")


def load_stream(path: str | Path) -> RequestStream:
    return RequestStream.from_json(json.loads(Path(path).read_text()))


def parse_path(text: str) -> LayerPath:
    """A path from its string (:meth:`LayerPath.to_str`, e.g. ``"EESR..."``)."""
    return LayerPath.parse(text)


class RecordingEvaluator(ExecutorEvaluator):
    """An :class:`ExecutorEvaluator` that logs the ``(example_id, path)`` of every call."""

    log: list[list[tuple[str, str]]] = []
    submit = Evaluator.submit  # per-call batches (what the stream records), not streaming
    step = Evaluator.step
    streaming = Evaluator.streaming

    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        RecordingEvaluator.log.append([(r.example_id, LayerPath(r.path).to_str())
                                       for r in requests])
        return super().evaluate(requests)


def record_stream(
    model_spec: Any, dataset: str, data_path: str, num_examples: int, max_new_tokens: int,
    seed: int = 0, progress: bool = False, grader: str | None = "mc_letter_lenient",
    max_concurrent_trees: int | None = None, max_batch_size: int = 64, levers: bool = False,
) -> RequestStream:
    """Run an in-process paper-preset search and return the calls it made.

    ``grader``: the dataset config's (``conf/dataset/arc_easy.yaml``: ``mc_letter_lenient``).
    Every tree searches sequentially (``max_pending_per_tree=1``, the paper), so each call
    holds at most one request per question still being searched.

    Args:
        max_concurrent_trees: trees searched at once (None: every question at once). The
            search job's defaults before streaming were 32 trees and calls of at most 16
            requests.
        max_batch_size: requests per executor call at most (the pool holds at most this many
            on the worker, and the recording evaluator runs what it holds as one call).
        levers: evaluate with the work-avoidance levers on (the evaluator's defaults) rather
            than plain generation. The levers are exact, so the calls are the same either way;
            the recording's ``recorded`` block gives the search's wall time and evals/s.
    """
    from drllm.data import DatasetConfig, load_examples, render_prompt
    from drllm.distributed import EvaluationPool, ListSink, LocalTransport, SearchDriver
    from drllm.models.loading import load_tokenizer
    from drllm.search import MCTSConfig

    report = load_examples(DatasetConfig(name=dataset, path=data_path, num_examples=num_examples,
                                         seed=seed, grader=grader))
    examples = list(report.examples)
    tokenizer = load_tokenizer(model_spec)
    prompts = {ex.id: render_prompt(ex, tokenizer) for ex in examples}
    mcts = MCTSConfig()
    generation = GenerationConfig(max_new_tokens=max_new_tokens)
    if not levers:
        generation = GenerationConfig(max_new_tokens=max_new_tokens, reuse_prefix=False,
                                      draft=False, grader_stop=False)
    spec = EvaluatorSpec(RecordingEvaluator, {
        "model": model_spec, "generation": generation, "constraints": mcts.constraints,
    })
    trees = max_concurrent_trees or len(examples)
    RecordingEvaluator.log = []
    pool = EvaluationPool(LocalTransport(spec, 1), max_in_flight_per_worker=max_batch_size)
    pool.start()
    try:
        driver = SearchDriver(pool, mcts, DriverConfig(max_concurrent_trees=trees),
                              sink=ListSink(), render=lambda ex: prompts[ex.id],
                              progress=progress)
        start = time.perf_counter()
        summary = driver.run(examples)
        wall = time.perf_counter() - start
    finally:
        pool.close()
    calls = [c for c in RecordingEvaluator.log if not c[0][0].startswith("warmup")]
    n = sum(map(len, calls))
    recorded = {"max_concurrent_trees": trees, "max_batch_size": max_batch_size,
                "levers": levers, "wall_s": round(wall, 1), "evaluations": n,
                "evals_per_s": round(n / wall, 3)}
    logger.info("recorded %d calls, %d requests (%s; %s)", len(calls), n, recorded,
                summary.to_dict() if hasattr(summary, "to_dict") else summary)
    return RequestStream(dataset, num_examples, seed, max_new_tokens, grader,
                         tuple(tuple(tuple(r) for r in c) for c in calls), recorded)


__all__ = ["ARC_STREAM", "RecordingEvaluator", "RequestStream",
           "load_stream", "parse_path", "record_stream", "save_stream"]
