"""A request's choice orders: expanded into one row each, graded, combined into one evaluation.

A multiple-choice example may carry other choice orders (:attr:`drllm.types.Example.variants`,
chance-robust rewards): an evaluator answers each order along the request's path and the
request is correct only if every order's answer is. Every evaluator does this the same way:
:func:`order_rows` expands a batch, :class:`PromptIds` caches each order's token ids,
:func:`graded_row` grades one row, :func:`combine_orders` makes the request's evaluation.
Imports neither torch nor ray.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from drllm.types import EvalRequest, Evaluation, Generation

R = TypeVar("R", bound=EvalRequest)


@dataclass(frozen=True)
class OrderRow:
    """One choice order of one request.

    Attributes:
        index: the request's position in its batch.
        order: 0 for the request's own prompt, ``j`` for its ``j``-th variant.
        prompt: the rendered prompt of this order.
        gold: the gold answer under this order.
    """

    index: int
    order: int
    prompt: str
    gold: str


def order_rows(requests: Sequence[EvalRequest]) -> list[OrderRow]:
    """One row per (request, choice order): each request's own prompt, then its variants'."""
    return [OrderRow(i, j, prompt, gold) for i, r in enumerate(requests)
            for j, (prompt, gold) in enumerate(((r.prompt, r.gold), *r.variants))]


def per_request(rows: Sequence[OrderRow], values: Sequence[Evaluation],
                num_requests: int) -> list[list[Evaluation]]:
    """``values`` (one per row) grouped by request, in choice order."""
    out: list[list[Evaluation]] = [[] for _ in range(num_requests)]
    for row, value in zip(rows, values, strict=True):
        out[row.index].append(value)
    return out


def graded_row(request: EvalRequest, gold: str, gen: Generation,
               prompt: str | None = None) -> Evaluation:
    """One generated row graded: the answer prefix goes in front of the response, and a row
    cut by its token budget is graded as not ended (a stated answer must be complete).
    ``prompt`` is the row's own prompt (a choice order's), default the request's: the grader
    checks an accepted answer against it (a letter written with another choice's text)."""
    from drllm.rewards import get_grader

    response = request.answer_prefix + gen.text
    grade = get_grader(request.grader).grade(
        response, gold, ended=gen.finish_reason != "length",
        prompt=request.prompt if prompt is None else prompt)
    return Evaluation(reward=float(grade.reward), response=response,
                      layers_executed=int(gen.layers_executed), reason=grade.reason,
                      extracted=grade.extracted, where=grade.where,
                      response_tokens=len(gen.token_ids), finish_reason=gen.finish_reason)


def combine_orders(rows: Sequence[Evaluation]) -> Evaluation:
    """One evaluation from every choice order's row (the first is the request's own).

    Correct only if every order's answer is; the response, reading, block count and ``extra``
    are the first order's (what a row shows), the reason says how many orders were right; the
    plausibility is the least of the orders', implausible if any order's was.
    """
    first, others = rows[0], rows[1:]
    if not others:
        return first
    right = sum(r.reward >= 1.0 for r in rows)
    scores = [r.plausibility for r in rows if r.plausibility is not None]
    return dataclasses.replace(
        first, reward=min(float(r.reward) for r in rows),
        reason=f"{first.reason}; {right}/{len(rows)} choice orders correct",
        plausibility=min(scores) if scores else None,
        implausible=any(r.implausible for r in rows),
    )


class PromptIds:
    """Token ids of rendered prompts, cached per (example id, choice order), least recently
    used out; a changed prompt text under the same key is encoded again.

    Args:
        encode: prompt text -> token ids.
        size: entries kept.
    """

    def __init__(self, encode: Callable[[str], list[int]], size: int = 8192) -> None:
        self._encode, self._size = encode, int(size)
        self._ids: OrderedDict[str, tuple[str, list[int]]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, example_id: str, order: int, prompt: str) -> list[int]:
        key = f"{example_id}\x1f{order}"
        hit = self._ids.get(key)
        if hit is not None and hit[0] == prompt:
            self._ids.move_to_end(key)
            self.hits += 1
            return hit[1]
        self.misses += 1
        ids = self._encode(prompt)
        self._ids[key] = (prompt, ids)
        self._ids.move_to_end(key)  # a re-encoded entry is the most recently used
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return ids

    def clear(self) -> None:
        self._ids.clear()
