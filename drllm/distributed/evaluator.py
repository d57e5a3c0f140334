"""Evaluators: what turns (example, path) requests into graded evaluations.

An :class:`Evaluator` turns a batch of :class:`~drllm.types.EvalRequest` (example, path) into
graded :class:`~drllm.types.Evaluation` objects. It runs inside an evaluator actor (Ray) or
in the driver process (the in-process transport). Actors, the in-process transport and the
driver know evaluators only through :class:`Evaluator` and the picklable factory
:class:`EvaluatorSpec` (the evaluator class and its options; the class travels to the actor by
reference), so the model-backed :class:`ExecutorEvaluator` (below) and the test double
:class:`drllm.testing.DummyEvaluator` are interchangeable.

:class:`ExecutorEvaluator` holds one frozen model, its evaluator engine (:mod:`drllm.engine`)
and the graders: it tokenizes, submits the rows of a batch (each with its own path) to the
engine and grades each response with the example's grader. Tokenized prompts are cached per example, since a search
evaluates the same prompt along many paths. torch and transformers are imported lazily
(inside the model-loading path) so that importing this module stays cheap in the driver.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

from drllm.choice_orders import PromptIds, combine_orders, graded_row, order_rows, per_request
from drllm.distributed.config import GenerationConfig
from drllm.paths import DEFAULT_CONSTRAINTS, LayerPath, PathConstraints
from drllm.types import EvalRequest, Evaluation, Generation

logger = logging.getLogger(__name__)


class WorkerLostError(RuntimeError):
    """The worker holding an evaluator died. In-process stand-in for a dead Ray actor: the
    transport treats it like a crashed actor (requeue its requests, restart the worker)."""


@dataclass(frozen=True)
class EvaluatorContext:
    """Where an evaluator is being built.

    Attributes:
        worker_index: index of the actor (or in-process worker) in its pool.
        restarted: this worker replaces one that died (Ray restarted the actor).
        in_process: the evaluator runs inside the driver process (no Ray actor); an evaluator
            must then never kill the process.
        num_threads: torch threads the worker may use (``None``: leave torch's default).
        device: device the worker was given (``"cuda"`` when the actor holds a GPU), or
            ``None`` to keep the evaluator's own setting.
    """

    worker_index: int = 0
    restarted: bool = False
    in_process: bool = False
    num_threads: Optional[int] = None
    device: Optional[str] = None


@dataclass(frozen=True)
class EvaluatorInfo:
    """What an evaluator evaluates with; the driver sizes its trees from ``num_layers``.

    Attributes:
        evaluator: short name of the evaluator kind (e.g. ``"executor"``, ``"dummy"``).
        model_id: the frozen model (HF id, local dir, GGUF file name, or ``"dummy"``).
        num_layers: L, decoder blocks of the model.
        device: where the model runs (``"cpu"``, ``"cuda:0"``, ...).
    """

    evaluator: str
    model_id: str
    num_layers: int
    device: str


@dataclass(frozen=True)
class EvalError:
    """A request whose evaluation raised inside the evaluator (not a dead worker).

    Attributes:
        message: ``"ExceptionType: message"`` of the error.
    """

    message: str


Outcome = Union[Evaluation, EvalError]
"""Per-request result of an actor call, aligned with the call's requests."""


class Evaluator(abc.ABC):
    """An evaluator that generates along paths and grades the answers.

    Subclasses build from keyword options with :meth:`from_options`, called inside the worker
    by :meth:`EvaluatorSpec.build` (the options travel to the actor, so they must be picklable).
    """

    name: ClassVar[str] = ""

    @classmethod
    def from_options(cls, context: EvaluatorContext, **options: Any) -> "Evaluator":
        """Build the evaluator inside its worker from the spec's options."""
        return cls(**options)

    @property
    @abc.abstractmethod
    def info(self) -> EvaluatorInfo:
        """Model id, L and device of this evaluator."""

    @abc.abstractmethod
    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        """Evaluate a batch; one :class:`Evaluation` per request, in order.

        May raise; :func:`evaluate_isolating_errors` then attributes the error to requests.
        """

    def close(self) -> None:
        """Release resources (models, threads). Default: nothing to release."""


@dataclass(frozen=True)
class EvaluatorSpec:
    """Which evaluator each worker builds, and with what options: a picklable factory.

    Attributes:
        evaluator: the :class:`Evaluator` subclass (pickled by reference: the worker imports
            its module), e.g. ``ExecutorEvaluator`` or ``drllm.testing.DummyEvaluator``.
        options: keyword arguments of the evaluator's :meth:`Evaluator.from_options`.
    """

    evaluator: type[Evaluator]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.evaluator, type) and issubclass(self.evaluator, Evaluator)):
            raise ValueError(
                f"EvaluatorSpec.evaluator must be an Evaluator subclass (e.g. ExecutorEvaluator, "
                f"drllm.testing.DummyEvaluator), got {self.evaluator!r}"
            )
        object.__setattr__(self, "options", dict(self.options))

    def build(self, context: EvaluatorContext = EvaluatorContext()) -> Evaluator:
        """Instantiate the evaluator (call inside the worker that will use it)."""
        return self.evaluator.from_options(context, **self.options)

    def __repr__(self) -> str:
        return f"EvaluatorSpec({self.evaluator.__name__}, {dict(self.options)!r})"


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def evaluate_isolating_errors(
    evaluator: Evaluator, requests: Sequence[EvalRequest]
) -> list[Outcome]:
    """Evaluate a batch; if it raises, rerun each request alone to find the failing ones.

    Returns one :class:`Evaluation` or :class:`EvalError` per request, in order.
    :class:`WorkerLostError` propagates: it means the worker is gone, not a bad request.
    """
    try:
        results = evaluator.evaluate(requests)
    except WorkerLostError:
        raise
    except Exception as err:  # noqa: BLE001 - an evaluator error must never stop the run
        if len(requests) == 1:
            logger.warning("evaluation of %s failed: %s", requests[0].example_id, _error_text(err))
            return [EvalError(_error_text(err))]
        logger.warning(
            "batch of %d failed (%s); evaluating its requests one by one",
            len(requests), _error_text(err),
        )
        return [evaluate_isolating_errors(evaluator, [r])[0] for r in requests]
    if len(results) != len(requests):
        raise RuntimeError(
            f"evaluator {type(evaluator).__name__} returned {len(results)} results for "
            f"{len(requests)} requests"
        )
    return list(results)


def _prefixed_final(final: Any, prefix: str, text: str) -> bool:
    return final(prefix + text)


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

    def _generate_and_grade(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        """Generated answers: one executor call, grading, the plausibility guard."""
        rows = order_rows(requests)
        owners = [requests[row.index] for row in rows]
        prompts = [self._ids.get(r.example_id, row.order, row.prompt)
                   for r, row in zip(owners, rows)]
        paths = [LayerPath(r.path) for r in owners]
        finals = [self._final(r.grader, r.answer_prefix) for r in owners]
        keys = [f"{r.example_id}/{row.order}" for r, row in zip(owners, rows)]
        generations = self._generate(prompts, paths, finals, keys,
                                     [f"{r.grader}\x1f{r.answer_prefix}" for r in owners])
        self.last_generations = generations
        graded = [graded_row(r, row.gold, gen)
                  for r, row, gen in zip(owners, rows, generations, strict=True)]
        graded = self._guard(graded, prompts, generations, paths)
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

    def _generate(self, prompts: list[list[int]], paths: list[LayerPath], finals: list[Any],
                  questions: list[str], stop_rules: list[str]) -> list[Generation]:
        """One engine run over the rows; with ``reuse_prefix`` each carries its reuse key
        (question and choice order, prompt, settings, grader stop rule)."""
        from drllm.engine import EngineRequest, ReuseKey, Settings

        settings = Settings(self.generation.max_new_tokens, tuple(self.generation.stop_strings))
        requests = []
        for ids, path, final, question, rule in zip(prompts, paths, finals, questions,
                                                    stop_rules, strict=True):
            key = (ReuseKey(question, tuple(ids), settings, rule)
                   if self.generation.reuse_prefix else None)
            requests.append(EngineRequest(tuple(ids), tuple(path), settings, final, key))
        return self.engine.run(requests)

    def stats(self) -> dict[str, Any]:
        """Prompt-cache counters, the engine's counters and its reuse cache's."""
        return {"prompt_cache_hits": self.cache_hits, "prompt_cache_misses": self.cache_misses,
                "engine": dataclasses.asdict(self.engine.stats), **self.engine.cache.stats()}

    def close(self) -> None:
        logger.info("executor evaluator: %s", self.stats())
        self._ids.clear()
        self.engine.cache.clear()
