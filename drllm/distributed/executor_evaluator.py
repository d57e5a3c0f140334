"""The model-backed evaluator: one frozen model, its engine (:mod:`drllm.engine`), the graders.

:class:`ExecutorEvaluator` tokenizes, submits each request's rows (one per choice order, each
with its own path) to its :class:`~drllm.engine.Engine` and grades each response with the
example's grader and the plausibility guard. It **streams**: a worker submits requests as they
arrive (:meth:`ExecutorEvaluator.submit`) and steps the engine (:meth:`ExecutorEvaluator.step`);
a request's rows join the running batch at the next step and its outcome comes back from the
step in which its last row finished, not when a whole call is done. :meth:`evaluate` runs one
batch to completion (isolating errors, lm-eval, tests). Tokenized prompts are cached per
example, since a search evaluates the same prompt along many paths. torch and transformers are
imported lazily (inside the model-loading path) so that importing this module stays cheap in
the driver.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from drllm.choice_orders import PromptIds, combine_orders, graded_row, order_rows, per_request
from drllm.distributed.config import GenerationConfig
from drllm.distributed.evaluator import (
    EvalError, Evaluator, EvaluatorContext, EvaluatorInfo, Tagged, WorkerLostError,
    error_text, evaluate_isolating_errors,
)
from drllm.paths import DEFAULT_CONSTRAINTS, LayerPath, PathConstraints
from drllm.types import EvalRequest, Evaluation, Generation

logger = logging.getLogger(__name__)


def _prefixed_final(final: Any, prefix: str, text: str) -> bool:
    return final(prefix + text)


@dataclass
class _OpenRequest:
    """A streamed request in the engine: its rows and the generations finished so far."""

    request: EvalRequest
    rows: list
    engine_requests: list
    generations: list


@dataclass
class _Streamed:
    """What an :class:`ExecutorEvaluator` streams: requests by tag, engine request ids ->
    (tag, row), scored requests waiting for the next step, outcomes ready to return."""

    open: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    scored: list = field(default_factory=list)
    ready: list = field(default_factory=list)


class ExecutorEvaluator(Evaluator):
    """Generate greedily along each request's path with the evaluator engine and grade it.

    Args:
        model: a frozen HF causal LM the executor can drive.
        tokenizer: its tokenizer.
        model_id: id reported in :class:`EvaluatorInfo` and written to shards.
        generation: max new tokens, stop strings, the reuse levers and the engine's knobs.
        constraints: path rules the executor enforces; give the search's
            (``MCTSConfig.constraints``) so every path the search proposes is accepted.
        prompt_cache_size: tokenized prompts kept (one per example, least recently used out).

    The evaluator tokenizes, submits to its :class:`~drllm.engine.Engine` and grades. Work
    avoidance (all exact) lives in the engine: with ``generation.reuse_prefix`` each row
    carries a :class:`~drllm.engine.ReuseKey` per (question, choice order, grader stop rule),
    and the engine's cache manager answers default requests and resumes edited ones from the
    default path's states (:mod:`drllm.engine.reuse`).
    """

    name = "executor"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        generation: GenerationConfig = GenerationConfig(),
        constraints: PathConstraints = DEFAULT_CONSTRAINTS,
        prompt_cache_size: int = 4096,
    ) -> None:
        from drllm.engine import Engine
        from drllm.engine.reuse import ReuseOptions
        from drllm.models.executor import PathExecutor
        from drllm.models.loading import model_device

        if not isinstance(generation, GenerationConfig):
            raise TypeError(
                f"generation must be a GenerationConfig, got {type(generation).__name__}"
            )
        if prompt_cache_size < 1:
            raise ValueError(f"prompt_cache_size must be >= 1, got {prompt_cache_size}")
        self.executor = PathExecutor(model, tokenizer, constraints)
        g = generation
        self.engine = Engine(self.executor, max_batch_tokens=g.max_batch_tokens,
                             max_rows=g.max_rows, prefill_chunk=g.prefill_chunk,
                             reuse=ReuseOptions(
                                 draft=g.draft, draft_tokens=g.draft_tokens,
                                 draft_pool=g.draft_pool, reuse_paths=g.reuse_paths,
                                 paths_per_question=g.paths_per_question,
                                 cache_bytes=int(g.prefix_cache_mb * 2**20),
                                 max_defaults=prompt_cache_size))
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.generation = generation
        self._device = str(model_device(model))
        self._cache_size = prompt_cache_size
        self._ids = PromptIds(lambda text: self.executor.encode([text])[0], prompt_cache_size)
        #: The generations of the last :meth:`evaluate` call, one per row (request and choice
        #: order), for benchmarks and tests.
        self.last_generations: list[Generation] = []
        #: Plausibility scores by (prompt ids, response ids): the default response's score is
        #: reused by every edited path that reproduces it.
        self._plausibility: OrderedDict[tuple, float] = OrderedDict()
        self._stream = _Streamed()

    @classmethod
    def from_options(
        cls,
        context: EvaluatorContext,
        *,
        model: Any,
        generation: GenerationConfig = GenerationConfig(),
        constraints: PathConstraints = DEFAULT_CONSTRAINTS,
        prompt_cache_size: int = 4096,
    ) -> "ExecutorEvaluator":
        """Load the model inside the worker.

        Args:
            context: the worker; ``context.device`` (``"cuda"`` on a GPU actor) overrides the
                spec's device, ``context.num_threads`` sets torch's intra-op threads.
            model: a ``drllm.models.loading.ModelSource``: a ``ModelSpec``, or a picklable
                zero-argument loader (tests: ``drllm.testing.models.TinyModelLoader``).
            generation: max new tokens and stop strings.
            constraints: path rules (the search's).
            prompt_cache_size: tokenized prompts kept.
        """
        import torch

        from drllm.models.loading import load_source, model_device

        if context.num_threads is not None:
            torch.set_num_threads(context.num_threads)
        loaded = load_source(model, context.device)
        logger.info("worker %d: loaded %s (L=%d) on %s", context.worker_index, loaded.model_id,
                    loaded.num_layers, model_device(loaded.model))
        return cls(loaded.model, loaded.tokenizer, model_id=loaded.model_id,
                   generation=generation, constraints=constraints,
                   prompt_cache_size=prompt_cache_size)

    @property
    def info(self) -> EvaluatorInfo:
        return EvaluatorInfo(self.name, self.model_id, self.executor.num_layers, self._device)

    @property
    def cache_hits(self) -> int:
        """Tokenized prompts served from the prompt cache."""
        return self._ids.hits

    @property
    def cache_misses(self) -> int:
        """Prompts tokenized."""
        return self._ids.misses

    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        """One executor call for the generated requests of the batch (rows with different
        paths), then grading and the plausibility guard; one shared-prefill scoring pass for
        the requests with ``choices`` (log-likelihood multiple choice).

        ``layers_executed`` is the executor's count: blocks executed summed over every forward
        pass of the row (prefill plus each generated token; one pass for scored choices).
        """
        if not requests:
            return []
        out: list[Evaluation | None] = [None] * len(requests)
        scored = [i for i, r in enumerate(requests) if r.choices]
        generated = [i for i, r in enumerate(requests) if not r.choices]
        if scored:
            from drllm.distributed.likelihood import score_choices

            evals = score_choices(
                self.executor, [requests[i] for i in scored],
                lambda text: self.executor.encode([text])[0], norm=self.generation.loglik_norm,
            )
            for i, ev in zip(scored, evals):
                out[i] = ev
        if generated:
            for i, ev in zip(generated, self._generate_and_grade([requests[i] for i in generated])):
                out[i] = ev
        return out  # type: ignore[return-value]

    def submit(self, tag: int, request: EvalRequest) -> None:
        """Stream a request: its rows (one per choice order) join the engine's waiting queue
        now and run at its next steps, beside whatever is running (scored choices wait for
        the next :meth:`step`). A request the engine refuses (an illegal path, a prompt too
        long) comes back from the next step as an :class:`EvalError`."""
        stream = self._stream
        if request.choices:
            stream.scored.append((tag, request))
            return
        try:
            rows, engine_requests = self._rows([request])
            ids = [self.engine.submit(e) for e in engine_requests]
        except Exception as err:  # noqa: BLE001 - one bad request never stops the worker
            stream.ready.append((tag, EvalError(error_text(err))))
            return
        stream.open[tag] = _OpenRequest(request, rows, engine_requests, [None] * len(rows))
        for k, rid in enumerate(ids):
            stream.rows[rid] = (tag, k)

    def step(self) -> list[Tagged]:
        """One engine step (every running row decodes a token, waiting rows are admitted);
        the outcomes of the requests whose last row finished in it, graded now.

        If the engine raises, every request in it is evaluated again alone
        (:func:`evaluate_isolating_errors`), so only a failing request gets an error."""
        stream = self._stream
        out, stream.ready = stream.ready, []
        if stream.scored:
            scored, stream.scored = stream.scored, []
            outcomes = evaluate_isolating_errors(self, [r for _, r in scored])
            out.extend((tag, o) for (tag, _), o in zip(scored, outcomes))
        if not self.engine.busy:
            return out
        try:
            results = self.engine.step()
        except WorkerLostError:
            raise
        except Exception as err:  # noqa: BLE001 - attributed to the failing requests below
            logger.warning("engine step failed (%s); evaluating its %d requests one by one",
                           error_text(err), len(stream.open))
            self.engine.abort()
            opened, stream.open, stream.rows = stream.open, {}, {}
            return out + [(tag, evaluate_isolating_errors(self, [o.request])[0])
                          for tag, o in opened.items()]
        complete = []
        for result in results:
            tag, k = stream.rows.pop(result.request_id)
            opened = stream.open[tag]
            opened.generations[k] = result.generation
            if all(g is not None for g in opened.generations):
                complete.append((tag, stream.open.pop(tag)))
        return out + self._grade_streamed(complete)

    def _grade_streamed(self, complete: list[tuple[int, "_OpenRequest"]]) -> list[Tagged]:
        """Grade requests whose rows all finished (one plausibility pass for them all); a
        request whose grading raises gets an :class:`EvalError`."""
        if not complete:
            return []
        try:
            requests = [o.request for _, o in complete]
            rows = [dataclasses.replace(row, index=i)
                    for i, (_, o) in enumerate(complete) for row in o.rows]
            evals = self._grade(requests, rows,
                                [e for _, o in complete for e in o.engine_requests],
                                [g for _, o in complete for g in o.generations])
            return [(tag, ev) for (tag, _), ev in zip(complete, evals, strict=True)]
        except Exception as err:  # noqa: BLE001 - grade them one by one to find the bad one
            if len(complete) == 1:
                return [(complete[0][0], EvalError(error_text(err)))]
            return [t for item in complete for t in self._grade_streamed([item])]

    @property
    def streaming(self) -> int:
        return len(self._stream.open) + len(self._stream.scored) + len(self._stream.ready)

    def _generate_and_grade(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        """Generated answers: one engine run over every row, grading, the plausibility guard."""
        rows, engine_requests = self._rows(requests)
        generations = self._generate(engine_requests)
        return self._grade(requests, rows, engine_requests, generations)

    def _rows(self, requests: Sequence[EvalRequest]) -> tuple[list, list]:
        """One engine request per (request, choice order) row; with ``reuse_prefix`` each
        carries its reuse key (question and choice order, prompt, settings, grader stop rule)."""
        from drllm.engine import EngineRequest, ReuseKey, Settings

        rows = order_rows(requests)
        settings = Settings(self.generation.max_new_tokens, tuple(self.generation.stop_strings))
        out = []
        for row in rows:
            r = requests[row.index]
            ids = tuple(self._ids.get(r.example_id, row.order, row.prompt))
            key = (ReuseKey(f"{r.example_id}/{row.order}", ids, settings,
                            f"{r.grader}\x1f{r.answer_prefix}")
                   if self.generation.reuse_prefix else None)
            out.append(EngineRequest(ids, tuple(r.path), settings,
                                     self._final(r.grader, r.answer_prefix), key))
        return rows, out

    def _grade(self, requests: Sequence[EvalRequest], rows: list, engine_requests: list,
               generations: list[Generation]) -> list[Evaluation]:
        """Grade every row, apply the plausibility guard, combine each request's orders."""
        self.last_generations = list(generations)
        graded = [graded_row(requests[row.index], row.gold, gen, row.prompt)
                  for row, gen in zip(rows, generations, strict=True)]
        graded = self._guard(graded, [list(e.ids) for e in engine_requests], generations,
                             [LayerPath(e.path) for e in engine_requests])
        return [combine_orders(orders) for orders in per_request(rows, graded, len(requests))]

    def _guard(self, graded: list[Evaluation], prompts: list[list[int]],
               generations: list[Generation], paths: list[LayerPath]) -> list[Evaluation]:
        """Score the accepted responses under the default path; reject implausible edits."""
        from drllm.distributed.likelihood import mean_logliks
        from drllm.rewards.plausibility import PlausibilityGuard

        guard = PlausibilityGuard(self.generation.min_plausibility)
        todo = [i for i, ev in enumerate(graded)
                if guard.accepted(ev) and generations[i].token_ids]
        keys = {i: (tuple(prompts[i]), generations[i].token_ids) for i in todo}
        missing = list(dict.fromkeys(k for k in keys.values() if k not in self._plausibility))
        if missing:
            scores = mean_logliks(self.executor, [k[0] for k in missing],
                                  [k[1] for k in missing])
            for key, score in zip(missing, scores):
                self._plausibility[key] = score
                self._plausibility.move_to_end(key)
            while len(self._plausibility) > self._cache_size:
                self._plausibility.popitem(last=False)
        out = list(graded)
        for i in todo:
            score = self._plausibility.get(keys[i])
            edited = any(d != 1 for d in paths[i])
            out[i] = guard.judge(graded[i], score, edited)
        return out

    def _final(self, grader: str, prefix: str = "") -> Any:
        """The grader's stop predicate when grader-aware stopping applies to it, else None.

        With an answer prefix the predicate reads the prefix plus the generated text."""
        from drllm.rewards import Grader, get_grader

        instance = get_grader(grader)
        if not self.generation.grader_stop or (
            type(instance).verdict_final is Grader.verdict_final
        ):
            return None
        if prefix:
            return functools.partial(_prefixed_final, instance.verdict_final, prefix)
        return instance.verdict_final

    def _generate(self, requests: list) -> list[Generation]:
        """One engine run over ``requests`` (:class:`~drllm.engine.EngineRequest`)."""
        return self.engine.run(requests)

    def stats(self) -> dict[str, Any]:
        """Prompt-cache counters, the engine's counters and its reuse cache's."""
        return {"prompt_cache_hits": self.cache_hits, "prompt_cache_misses": self.cache_misses,
                "engine": dataclasses.asdict(self.engine.stats), **self.engine.cache.stats()}

    def close(self) -> None:
        logger.info("executor evaluator: %s", self.stats())
        self._ids.clear()
        self.engine.cache.clear()
