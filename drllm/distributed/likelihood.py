"""Teacher-forced rewards of the evaluator: plausibility scores and log-likelihood choices.

* :func:`mean_logliks` — the mean token log-likelihood of responses under one path (the
  plausibility guard scores accepted responses under the default path,
  :mod:`drllm.rewards.plausibility`);
* :func:`score_choices` — multiple choice without decoding (``reward: loglik``): each choice's
  continuation is scored after the prompt along the request's path, lm-evaluation-harness
  style (``acc``: highest summed log-likelihood; ``acc_norm``: per character of the choice), and
  the reward is 1 when the gold letter's choice wins. Choices are tokenized as lm-eval's
  ``_encode_pair`` does (:func:`encode_choices`: the context's trailing whitespace moves to the
  continuation; the continuation's tokens are those of ``context + continuation`` past the
  context's), so on the default path the scores equal lm-eval's ``hf`` model's. Every choice of a request shares the
  prompt's prefill: the prompt runs once along the request's path and its KV cache is
  replicated per choice (:func:`drllm.models.shared_prefill.score_after_prefix`).

torch is imported by the executor these helpers are handed, not here.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from drllm.paths import LayerPath
from drllm.types import CHOICE_LETTERS as LETTERS, EvalRequest, Evaluation

logger = logging.getLogger(__name__)

Encode = Callable[[str], list[int]]


def _split_context(context: str) -> tuple[str, str]:
    """lm-eval's ``TemplateLM._encode_pair``: the context's trailing whitespace moves to the
    continuation; ``(context, moved whitespace)``."""
    stripped = context.rstrip()
    return stripped, context[len(stripped):]


def encode_context(encode: Encode, context: str) -> list[int]:
    """The context ids :func:`encode_choices` scores its continuations after."""
    return encode(_split_context(context)[0])


def encode_choices(encode: Encode, context: str,
                   continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """``(context ids, continuation ids per choice)`` split as lm-eval's
    ``TemplateLM._encode_pair`` (the context is encoded once for all choices)."""
    context, moved = _split_context(context)
    ctx = encode(context)
    return ctx, [encode(context + moved + c)[len(ctx):] for c in continuations]


def mean_logliks(executor: Any, contexts: Sequence[Sequence[int]],
                 continuations: Sequence[Sequence[int]], path: LayerPath | None = None,
                 batch_size: int = 8) -> list[float]:
    """Mean log-probability per continuation token (nats) of each row along one path.

    Rows with an empty continuation score 0.0. ``path`` None: the default path.
    """
    from drllm.inference.scoring import fit_window, score_continuations

    path = path if path is not None else LayerPath.default(executor.num_layers)
    limit = executor.max_positions or 1 << 20
    todo = [i for i, cont in enumerate(continuations) if cont]
    windows = [fit_window(list(contexts[i]), list(continuations[i]), limit) for i in todo]
    scores = score_continuations(executor, windows, [path] * len(windows), batch_size,
                                 progress=False)
    out = [0.0] * len(continuations)
    for i, (total, _) in zip(todo, scores):
        out[i] = total / len(continuations[i])
    return out


def score_choices(executor: Any, requests: Sequence[EvalRequest], encode: Encode, *,
                  norm: bool = False) -> list[Evaluation]:
    """One :class:`Evaluation` per choice request (see the module docstring).

    Args:
        executor: the :class:`~drllm.models.executor.PathExecutor`.
        requests: requests with ``choices``; ``gold`` is the gold choice's letter (``A`` is
            the first choice).
        encode: text -> token ids (no special tokens), as the prompt is encoded.
        norm: rank by log-likelihood per character of the choice (lm-eval ``acc_norm``).
    """
    rows: list[tuple[int, list[int], list[int]]] = []
    for i, request in enumerate(requests):
        ctx, conts = encode_choices(encode, request.prompt, request.choices)
        for choice, cont in zip(request.choices, conts):
            if not cont:
                raise ValueError(f"example {request.example_id}: choice {choice!r} has no "
                                 "tokens after the prompt")
            rows.append((i, ctx, cont))
    from drllm.models.shared_prefill import score_after_prefix

    totals = score_after_prefix(
        executor, [ctx for _, ctx, _ in rows], [cont for _, _, cont in rows],
        [LayerPath(requests[i].path) for i, _, _ in rows],
    )
    out: list[Evaluation] = []
    cursor = 0
    for request in requests:
        n = len(request.choices)
        lls = totals[cursor : cursor + n]
        cursor += n
        out.append(_choice_evaluation(request, lls, norm))
    return out


def _choice_evaluation(request: EvalRequest, lls: Sequence[float], norm: bool) -> Evaluation:
    """The reward, margin and reading of one request's choice scores."""
    if norm:
        lengths = [max(len(c.lstrip()), 1) for c in request.choices]
        scores = [ll / n for ll, n in zip(lls, lengths)]
    else:
        scores = list(lls)
    gold = LETTERS.index(request.gold)
    if gold >= len(scores):
        raise ValueError(f"example {request.example_id}: gold {request.gold!r} but only "
                         f"{len(scores)} choices")
    best = max(range(len(scores)), key=scores.__getitem__)
    others = [s for j, s in enumerate(scores) if j != gold]
    margin = scores[gold] - max(others) if others else float("inf")
    letter = LETTERS[best]
    right = best == gold
    metric = "acc_norm" if norm else "acc"
    reason = (f"{'match' if right else 'mismatch'} ({metric}: chose {letter} "
              f"{request.choices[best].strip()[:60]!r}, margin {margin:+.3f})")
    path = LayerPath(request.path)
    return Evaluation(reward=1.0 if right else 0.0, response=letter,
                      layers_executed=path.cost, reason=reason, extracted=letter,
                      where="loglik", margin=float(margin), finish_reason="loglik")
