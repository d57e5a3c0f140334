"""The evaluator: one frozen model, optionally its routers, answering policy requests.

:class:`PolicyEvaluator` is an :class:`~drllm.distributed.evaluator.Evaluator`, built inside an
evaluator actor (or in process) from a picklable :class:`~drllm.distributed.evaluator.EvaluatorSpec`
(:func:`policy_evaluator_spec`). A batch of :class:`~drllm.evaluation.types.PolicyRequest` is
split into groups that share a generation budget and a policy kind:

* fixed-path rows (default, oracle, static policies) run in one executor call, each row along
  its own path;
* routed rows run in one call per control knob ``alpha`` and gate: the routers choose each
  row's path block by block during prefill (:mod:`drllm.routers.decision`: the checkpoint's
  logit adjustment, the request's knob and gate -- ``None``: the argmax --, the search's path
  rules) (:meth:`~drllm.inference.routed.RoutedModel.block_hook`); the
  chosen decisions are recorded from the hook, and the time spent in the routers is measured.

Requests with ``choices`` (``reward: loglik`` / ``loglik_norm``) are scored, not generated:
each choice's log-likelihood after the prompt along the request's path -- for a routed policy
the path the routers choose in a prefill of the context -- as the search's reward and the
lm-eval ``drllm`` model score them (:func:`drllm.distributed.likelihood.score_choices`).

Choice orders are expanded, graded and combined as every evaluator does
(:mod:`drllm.choice_orders`); tokenized prompts are cached per (example, choice order): every
policy evaluates the same prompts. The executor does not constrain paths (a static policy may skip any blocks); routed
decisions obey the search's rules through the decision rule.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Optional, Sequence

import torch

from drllm.choice_orders import PromptIds, combine_orders, graded_row, order_rows, per_request
from drllm.distributed.evaluator import Evaluator, EvaluatorContext, EvaluatorInfo, EvaluatorSpec
from drllm.evaluation.types import (PolicyEvaluation, PolicyMeasures, PolicyRequest, measures_of,
                                    options_of)
from drllm.inference.routed import RoutedModel
from drllm.models.executor import PathExecutor
from drllm.models.loading import load_source
from drllm.paths import LayerPath
from drllm.routers.features import left_pad, permissive_constraints
from drllm.routers.module import Routers
from drllm.types import Generation

logger = logging.getLogger(__name__)


class DecisionRecorder:
    """Wraps a routed block hook: records each row's decisions and the time in the routers."""

    def __init__(self, hook: Callable[..., list[int]], num_layers: int, device: torch.device):
        self.hook, self.num_layers, self.device = hook, num_layers, device
        self.chunks: list[list[list[int]]] = []
        self.seconds = 0.0

    def __call__(self, block: int, hidden: torch.Tensor, mask: torch.Tensor) -> list[int]:
        if self.device.type == "cuda":  # time the routers, not the blocks queued before them
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        decisions = self.hook(block, hidden, mask)
        self.seconds += time.perf_counter() - start
        if block == 0:
            self.chunks.append([])
        self.chunks[-1].append(list(decisions))
        return decisions

    def paths(self) -> list[tuple[int, ...]]:
        out = []
        for chunk in self.chunks:
            assert len(chunk) == self.num_layers, "the hook saw every block once per chunk"
            out.extend(tuple(int(chunk[b][row]) for b in range(self.num_layers))
                       for row in range(len(chunk[0])))
        return out


class PolicyEvaluator(Evaluator):
    """Generate along fixed or routed paths and grade (see the module docstring).

    Args:
        model: a frozen HF causal LM the executor can drive.
        tokenizer: its tokenizer.
        model_id: id reported in :class:`EvaluatorInfo`.
        routers: trained routers of this model, or ``None`` (fixed-path requests only).
        prompt_cache_size: tokenized prompts kept (least recently used out).
    """

    name = "policy"

    def __init__(self, model: Any, tokenizer: Any, *, model_id: str,
                 routers: Optional[Routers] = None, prompt_cache_size: int = 8192) -> None:
        num_layers = int(model.config.num_hidden_layers)
        constraints = permissive_constraints(num_layers)
        self.routed = (RoutedModel(model, tokenizer, routers, constraints=constraints)
                       if routers is not None else None)
        self.executor = (self.routed.executor if self.routed is not None
                         else PathExecutor(model, tokenizer, constraints))
        self.model_id = model_id
        self._ids = PromptIds(lambda text: self.executor.encode([text])[0], prompt_cache_size)

    @classmethod
    def from_options(cls, context: EvaluatorContext, *, model: Any,
                     routers_dir: Optional[str] = None, check_model_id: bool = True,
                     prompt_cache_size: int = 8192) -> "PolicyEvaluator":
        """Load the model (and the routers, checked against it) inside the worker.

        Raises:
            drllm.routers.checkpoint.RouterCheckpointError: the routers were trained for
                another model (``L``, ``d`` or, with ``check_model_id``, its id).
        """
        if context.num_threads is not None:
            torch.set_num_threads(context.num_threads)
        loaded = load_source(model, context.device)
        routers = None
        if routers_dir is not None:
            routers = Routers.from_pretrained(
                routers_dir, expected_num_layers=loaded.num_layers,
                expected_hidden_size=loaded.hidden_size,
                expected_model_id=loaded.model_id if check_model_id else None,
            )
        logger.info("worker %d: %s (L=%d)%s", context.worker_index, loaded.model_id,
                    loaded.num_layers, f", routers from {routers_dir}" if routers_dir else "")
        return cls(loaded.model, loaded.tokenizer, model_id=loaded.model_id, routers=routers,
                   prompt_cache_size=prompt_cache_size)

    @property
    def info(self) -> EvaluatorInfo:
        return EvaluatorInfo(self.name, self.model_id, self.executor.num_layers,
                             str(self.executor.device))

    def _generate(self, alpha: Optional[float], gate: Optional[float], ids: list[list[int]],
                  paths: list[LayerPath], budget: tuple[int, tuple[str, ...]]
                  ) -> tuple[list[Generation], list, float, float]:
        """One executor call; ``(generations, paths followed, seconds, router seconds)``."""
        max_new_tokens, stops = budget
        start = time.perf_counter()
        if alpha is None:
            gens = self.executor.generate(ids, paths, max_new_tokens=max_new_tokens,
                                          stop_strings=stops)
            return gens, [tuple(p) for p in paths], time.perf_counter() - start, 0.0
        recorder = self._recorder(alpha, gate, ids)  # gate None: the argmax
        gens = self.executor.generate(ids, None, max_new_tokens=max_new_tokens,
                                      stop_strings=stops, block_hook=recorder)
        return gens, recorder.paths(), time.perf_counter() - start, recorder.seconds

    def evaluate(self, requests: Sequence[PolicyRequest]) -> list[PolicyEvaluation]:
        """Generated requests: :meth:`_generated`; requests with choices: :meth:`_scored`."""
        scored = [i for i, r in enumerate(requests) if r.choices]
        if not scored:
            return self._generated(requests)
        out: list[Optional[PolicyEvaluation]] = [None] * len(requests)
        generated = [i for i, r in enumerate(requests) if not r.choices]
        for part, evaluate in ((scored, self._scored), (generated, self._generated)):
            if part:
                for i, ev in zip(part, evaluate([requests[i] for i in part]), strict=True):
                    out[i] = ev
        return out  # type: ignore[return-value]

    def _recorder(self, alpha: float, gate: Optional[float], ids: list[list[int]]
                  ) -> DecisionRecorder:
        """The routers' block hook for ``ids``, recording each row's decisions and their time."""
        if self.routed is None:
            raise ValueError("a routed request reached an evaluator built without routers "
                             "(policy_evaluator_spec(routers_dir=...))")
        return DecisionRecorder(self.routed.block_hook(alpha, gate, ids),
                                self.executor.num_layers, self.executor.device)

    def _route(self, alpha: float, gate: Optional[float], ids: list[list[int]]
               ) -> tuple[list[LayerPath], float]:
        """The routers' path for each context (one prefill) and the seconds in the routers."""
        recorder = self._recorder(alpha, gate, ids)
        input_ids, mask = left_pad(ids, self.executor.pad_token_id, self.executor.device)
        self.executor.prefill_states(input_ids, mask, block_hook=recorder)
        return [LayerPath(p) for p in recorder.paths()], recorder.seconds

    def _scored(self, requests: Sequence[PolicyRequest]) -> list[PolicyEvaluation]:
        """Multiple choice by log-likelihood, grouped by knob, gate and ``loglik_norm``."""
        from drllm.distributed.likelihood import encode_context, score_choices

        def encode(text: str) -> list[int]:
            return self.executor.encode([text])[0]

        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            opts = options_of(r)
            groups.setdefault((opts.alpha, opts.gate, opts.loglik_norm), []).append(i)
        out: list[Optional[PolicyEvaluation]] = [None] * len(requests)
        for (alpha, gate, norm), members in groups.items():
            start = time.perf_counter()
            reqs = [requests[i] for i in members]
            contexts = [encode_context(encode, r.prompt) for r in reqs]
            router_s = 0.0
            if alpha is not None:
                paths, router_s = self._route(alpha, gate, contexts)
                reqs = [dataclasses.replace(r, path=p) for r, p in zip(reqs, paths)]
            evaluations = score_choices(self.executor, reqs, encode, norm=norm)
            share = (time.perf_counter() - start) / len(reqs)
            for i, r, ctx, ev in zip(members, reqs, contexts, evaluations, strict=True):
                out[i] = dataclasses.replace(ev, extra=PolicyMeasures(
                    path=tuple(r.path), prompt_tokens=len(ctx), seconds=share,
                    router_seconds=router_s / len(reqs)))
        return out  # type: ignore[return-value]

    def _generated(self, requests: Sequence[PolicyRequest]) -> list[PolicyEvaluation]:
        """Group the rows (one per request and choice order), generate, grade, combine."""
        rows = order_rows(requests)
        groups: dict[tuple, list[int]] = {}
        for n, row in enumerate(rows):
            opts = options_of(requests[row.index])
            key = (opts.alpha, opts.gate, opts.max_new_tokens, tuple(opts.stop_strings))
            groups.setdefault(key, []).append(n)
        graded: list[Optional[PolicyEvaluation]] = [None] * len(rows)
        for (alpha, gate, *budget), members in groups.items():
            ids = [self._ids.get(requests[rows[n].index].example_id, rows[n].order,
                                 rows[n].prompt) for n in members]
            paths = [LayerPath(requests[rows[n].index].path) for n in members]
            gens, followed, seconds, router_s = self._generate(alpha, gate, ids, paths,
                                                               tuple(budget))
            work = [max(1, sum(p)) * (g.prompt_tokens + len(g.token_ids))
                    for g, p in zip(gens, followed)]
            total = float(sum(work)) or 1.0
            for n, gen, path, w in zip(members, gens, followed, work, strict=True):
                row = rows[n]
                measures = PolicyMeasures(path=tuple(path), prompt_tokens=int(gen.prompt_tokens),
                                          seconds=seconds * w / total,
                                          router_seconds=router_s * w / total)
                graded[n] = dataclasses.replace(
                    graded_row(requests[row.index], row.gold, gen, row.prompt), extra=measures)
        return [_combine(orders) for orders in per_request(rows, graded, len(requests))]

    def close(self) -> None:
        self._ids.clear()


def _combine(orders: list[PolicyEvaluation]) -> PolicyEvaluation:
    """:func:`~drllm.choice_orders.combine_orders`, with the time of every order summed."""
    combined = combine_orders(orders)
    measures = [measures_of(ev) for ev in orders]
    return dataclasses.replace(combined, extra=dataclasses.replace(
        measures[0], seconds=sum(m.seconds for m in measures),
        router_seconds=sum(m.router_seconds for m in measures)))


def policy_evaluator_spec(model: Any, routers_dir: Optional[str] = None, *,
                          check_model_id: bool = True) -> EvaluatorSpec:
    """The picklable factory of :class:`PolicyEvaluator` (a ``ModelSource`` and a routers dir)."""
    return EvaluatorSpec(PolicyEvaluator, {"model": model, "routers_dir": routers_dir,
                                           "check_model_id": check_model_id})
