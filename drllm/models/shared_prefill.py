"""Continuations scored after a shared prompt: one prefill per (prompt, path), then every
continuation of that prompt as one chunk on a copy of its KV cache.

Multiple choice by log-likelihood scores four or five continuations after the same prompt along
the same path; a plain teacher-forced forward (:func:`drllm.inference.scoring.score_continuations`)
recomputes the prompt for each. Here the prompt runs once (left padded with the other prompts
of its batch), its slot KV cache is replicated per continuation
(:meth:`~drllm.models.kv.SlotKVCache.expand`), and the continuations run as one right-padded
chunk at their true positions. The prompt's last position predicts each continuation's first
token. Same log-probabilities as the plain forward up to float rounding (tested).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F

from drllm.models.kv import SlotKVCache
from drllm.paths import LayerPath

logger = logging.getLogger(__name__)


@torch.inference_mode()
def score_after_prefix(
    executor, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
    paths: Sequence[LayerPath], batch_size: int = 16,
) -> list[float]:
    """Summed log-probability (nats, float32 softmax) of each continuation after its context
    along its path; rows with the same ``(context, path)`` share one prefill.

    Args:
        executor: the :class:`~drllm.models.executor.PathExecutor`.
        contexts: token ids of each row's prompt (non-empty).
        continuations: token ids scored after it (non-empty).
        paths: each row's path.
        batch_size: distinct ``(context, path)`` prefills per forward batch.
    """
    if not len(contexts) == len(continuations) == len(paths):
        raise ValueError(f"got {len(contexts)} contexts, {len(continuations)} continuations and "
                         f"{len(paths)} paths; pass one of each per row")
    groups: dict[tuple, list[int]] = {}
    for row, (ctx, cont, path) in enumerate(zip(contexts, continuations, paths)):
        if not ctx or not cont:
            raise ValueError(f"row {row}: context and continuation must be non-empty")
        groups.setdefault((tuple(int(t) for t in ctx), tuple(path)), []).append(row)
    keys = list(groups)
    out = [0.0] * len(contexts)
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        rows = [r for key in chunk for r in groups[key]]
        scores = _score_chunk(executor, chunk, [groups[k] for k in chunk],
                              [list(continuations[r]) for r in rows])
        for r, score in zip(rows, scores):
            out[r] = score
    return out


def _score_chunk(executor, keys: list[tuple], members: list[list[int]],
                 conts: list[list[int]]) -> list[float]:
    """Prefill the chunk's distinct prompts once, then score every member's continuation."""
    ids, mask = executor.left_pad([list(ctx) for ctx, _ in keys])
    paths = [list(path) for _, path in keys]
    width = ids.shape[1]
    longest = max(len(c) for c in conts)
    cache = SlotKVCache(capacity=width + longest)
    valid = mask.ne(0)
    positions = (mask.long().cumsum(1) - 1).clamp_(min=0)
    hidden = executor.runner.run(executor.embed(ids), positions, valid, paths,
                                 all_valid=bool(valid.all()), cache=cache)
    first = F.log_softmax(executor.head(hidden[:, -1:]).float(), dim=-1)[:, 0]  # [G, V]
    source = torch.tensor([g for g, rows in enumerate(members) for _ in rows],
                          dtype=torch.long, device=ids.device)
    totals = [float(first[g, c[0]]) for g, c in zip(source.tolist(), conts)]
    if longest == 1:
        return totals
    q = longest - 1
    chunk = torch.full((len(conts), q), executor.pad_token_id, dtype=torch.long)
    cont_mask = torch.zeros((len(conts), q), dtype=torch.bool)
    for r, c in enumerate(conts):
        chunk[r, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
        cont_mask[r, : len(c) - 1] = True
    chunk, cont_mask = chunk.to(ids.device), cont_mask.to(ids.device)
    lengths = mask.long().sum(1).index_select(0, source)
    step_positions = lengths[:, None] + torch.arange(q, device=ids.device)[None, :]
    step_valid = torch.cat([valid.index_select(0, source), cont_mask], dim=1)
    hidden = executor.runner.run(
        executor.embed(chunk), step_positions, step_valid,
        [list(paths[g]) for g in source.tolist()], all_valid=False, cache=cache.expand(source),
    )
    logprobs = F.log_softmax(executor.head(hidden).float(), dim=-1)  # [R, q, V]
    for r, c in enumerate(conts):
        if len(c) > 1:
            target = torch.tensor(c[1:], dtype=torch.long, device=logprobs.device)
            totals[r] += float(logprobs[r, : len(c) - 1].gather(1, target[:, None]).sum())
    return totals
