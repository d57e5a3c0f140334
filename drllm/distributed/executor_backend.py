"""The real evaluation backend: one frozen model, the edited-path executor and the graders.

Used as ``EvaluatorSpec(ExecutorEvaluator, {"model_spec": ..., ...})``. Each evaluator
actor builds one :class:`ExecutorEvaluator` (loading the model once), then evaluates batches of
(example, path) requests: the rows of a batch carry their own paths and run in one executor
call; each response is graded with the example's grader. Tokenized prompts are cached per
example, since a search evaluates the same prompt along many paths.

torch and transformers are imported lazily so that importing this module stays cheap in the
driver process.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from collections import OrderedDict
from typing import Any, Sequence

from drllm.distributed.config import GenerationConfig
from drllm.distributed.evaluator import Evaluator, EvaluatorContext, EvaluatorInfo
from drllm.paths import DEFAULT_CONSTRAINTS, LayerPath, PathConstraints
from drllm.types import EvalRequest, Evaluation

logger = logging.getLogger(__name__)



def _model_device(model: Any) -> str:
    try:
        return str(next(model.parameters()).device)
    except (StopIteration, AttributeError):
        return "cpu"


def _combine(graded: list) -> Evaluation:
    """One evaluation from the grades of every choice order (the first is the request's own).

    Correct only if every order's answer is; the response and block count are the first
    order's (what the supervision row shows), the reason says how many orders were right.
    """
    (first, gen), others = graded[0], graded[1:]
    if not others:
        return Evaluation(reward=float(first.reward), response=gen.text,
                          layers_executed=int(gen.layers_executed), reason=first.reason)
    right = sum(g.reward >= 1.0 for g, _ in graded)
    reward = min(float(g.reward) for g, _ in graded)
    return Evaluation(reward=reward, response=gen.text, layers_executed=int(gen.layers_executed),
                      reason=f"{first.reason}; {right}/{len(graded)} choice orders correct")


class ExecutorEvaluator(Evaluator):
    """Generate greedily along each request's path with :class:`PathExecutor` and grade it.

    Args:
        model: a frozen HF causal LM the executor can drive.
        tokenizer: its tokenizer.
        model_id: id reported in :class:`EvaluatorInfo` and written to shards.
        generation: max new tokens and stop strings.
        constraints: path rules the executor enforces; give the search's
            (``MCTSConfig.constraints``) so every path the search proposes is accepted.
        prompt_cache_size: tokenized prompts kept (one per example, least recently used out).
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
        from drllm.models.executor import PathExecutor

        if not isinstance(generation, GenerationConfig):
            raise TypeError(
                f"generation must be a GenerationConfig, got {type(generation).__name__}"
            )
        if prompt_cache_size < 1:
            raise ValueError(f"prompt_cache_size must be >= 1, got {prompt_cache_size}")
        self.executor = PathExecutor(model, tokenizer, constraints)
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.generation = generation
        self._device = _model_device(model)
        self._cache_size = prompt_cache_size
        self._prompt_ids: OrderedDict[str, tuple[str, list[int]]] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

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

        from drllm.models.loading import load_source

        if context.num_threads is not None:
            torch.set_num_threads(context.num_threads)
        loaded = load_source(model, context.device)
        logger.info("worker %d: loaded %s (L=%d) on %s", context.worker_index, loaded.model_id,
                    loaded.num_layers, _model_device(loaded.model))
        return cls(loaded.model, loaded.tokenizer, model_id=loaded.model_id,
                   generation=generation, constraints=constraints,
                   prompt_cache_size=prompt_cache_size)

    @property
    def info(self) -> EvaluatorInfo:
        return EvaluatorInfo(self.name, self.model_id, self.executor.num_layers, self._device)

    def _token_ids(self, request: EvalRequest, prompt: str, order: int = 0) -> list[int]:
        """Token ids of a rendered prompt, cached per (example id, choice order)."""
        key = f"{request.example_id}\x1f{order}"
        hit = self._prompt_ids.get(key)
        if hit is not None and hit[0] == prompt:
            self._prompt_ids.move_to_end(key)
            self.cache_hits += 1
            return hit[1]
        self.cache_misses += 1
        ids = self.executor.encode([prompt])[0]
        self._prompt_ids[key] = (prompt, ids)
        if len(self._prompt_ids) > self._cache_size:
            self._prompt_ids.popitem(last=False)
        return ids

    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        """One executor call for the whole batch (rows with different paths), then grading.

        ``layers_executed`` is the executor's count: blocks executed summed over every forward
        pass of the row (prefill plus each generated token).
        """
        from drllm.rewards import get_grader

        if not requests:
            return []
        # One row per (request, choice order): the request's own prompt, then its variants'.
        rows = [(r, prompt, gold, j) for r in requests
                for j, (prompt, gold) in enumerate(((r.prompt, r.gold), *r.variants))]
        prompts = [self._token_ids(r, prompt, j) for r, prompt, _, j in rows]
        paths = [LayerPath(r.path) for r, _, _, _ in rows]
        generations = self.executor.generate(
            prompts, paths,
            max_new_tokens=self.generation.max_new_tokens,
            stop_strings=self.generation.stop_strings,
        )
        grades: dict[int, list] = {}
        for (request, _, gold, _), gen in zip(rows, generations, strict=True):
            grade = get_grader(request.grader).grade(gen.text, gold)
            grades.setdefault(id(request), []).append((grade, gen))
        return [_combine(grades[id(r)]) for r in requests]

    def close(self) -> None:
        self._prompt_ids.clear()
