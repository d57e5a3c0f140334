"""The two phases of batched greedy generation along per-row paths: prefill, then decode.

Prefill runs the prompts (sorted by length) in length buckets (:mod:`drllm.models.buckets`):
each bucket is left-padded only to its own longest prompt and fills its own slot cache; the
bucket caches are then stacked into one left-padded cache (:meth:`SlotKVCache.concat`), so the
decode phase sees one batch. Decisions (given, or chosen by a block hook during prefill) are
fixed from then on.

Decode feeds each active row's last token, one forward pass per step, reusing the prefill
decisions through a precomputed step plan. Rows that finish leave the batch: their rows are
dropped from the inputs, the masks and every cache slot (lazily: once they are a share of the
batch, see :data:`COMPACT_FRACTION`), so they stop costing compute.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from drllm.models.forward import BlockHook, BlockRunner, plan_steps
from drllm.models.drafts import Proposer, accept, drafted_inputs
from drllm.models.kv import SlotKVCache
from drllm.models.stopping import FinalFn, StopRule

logger = logging.getLogger(__name__)

#: Cache room allocated up front for generated tokens; slots grow by this much when full.
CACHE_CHUNK = 128


class Stepper(Protocol):
    """Every member of an executor that prefill and decode use (:class:`PathExecutor` has them).

    Attributes:
        device: the model's device.
        num_layers: decoder blocks L.
        bucket_overhead_tokens: modelled cost of one more prefill length bucket (tokens).
        runner: runs the blocks along per-row decisions.
        embed: ``[B, T]`` token ids -> ``[B, T, d]`` embeddings.
    """

    device: torch.device
    num_layers: int
    bucket_overhead_tokens: int
    runner: BlockRunner
    embed: Callable[[torch.Tensor], torch.Tensor]

    def left_pad(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T]`` left-padded input ids and attention mask on the model's device."""

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, q, d]`` last hidden states -> ``[B, q, V]`` logits."""


@dataclass
class DecodeState:
    """Mutable state of the active rows between forward passes.

    Attributes:
        cache: slot cache of the active rows, ``length`` positions filled.
        valid: ``[B, capacity]`` bool, True at key columns holding a real token.
        length: key columns filled so far (prompt width, then one per decode step).
        all_valid: no active row has padding (masks can be skipped).
        next_tokens: ``[B]`` greedy tokens produced by the last forward pass.
        next_positions: ``[B]`` rotary position of each row's next token.
        decisions: ``[B][L]`` decisions of the active rows.
        rows: batch row of each active row.
    """

    cache: SlotKVCache
    valid: torch.Tensor
    length: int
    all_valid: bool
    next_tokens: torch.Tensor
    next_positions: torch.Tensor
    decisions: list[list[int]]
    rows: list[int]


def prefill(
    ex: Stepper, ids: Sequence[Sequence[int]], decisions: list[list[int]],
    max_new_tokens: int, hook: BlockHook | None, groups: Sequence[tuple[int, int]],
    dense: bool = False,
) -> DecodeState:
    """Prefill prompts ``ids`` along ``decisions`` (``hook`` may fill them in), bucket by bucket.

    Args:
        groups: ``[start, end)`` row ranges prefilled together (see :func:`plan_buckets`); the
            hook is called once per group per block, with that group's rows.
    """
    lengths = [len(seq) for seq in ids]
    width = max(lengths)
    capacity = width + min(max_new_tokens, CACHE_CHUNK)
    parts, last_hidden = [], []
    for start, end in groups:
        input_ids, mask = ex.left_pad(ids[start:end])
        group_width = input_ids.shape[1]
        cache = SlotKVCache(capacity=group_width if len(groups) > 1 else capacity, grow=CACHE_CHUNK)
        hidden = ex.runner.run(
            ex.embed(input_ids), (mask.cumsum(1) - 1).clamp_(min=0), mask.bool(),
            decisions[start:end], all_valid=min(lengths[start:end]) == group_width, cache=cache,
            hook=hook, hook_mask=mask, dense=dense,
        )
        parts.append((cache, end - start))
        last_hidden.append(hidden[:, -1:])
    if len(groups) > 1:
        logger.debug("prefill in %d length buckets: %s", len(groups), groups)
        cache = SlotKVCache.concat(parts, capacity=capacity, grow=CACHE_CHUNK, width=width)
    valid = torch.zeros((len(ids), width + max_new_tokens), dtype=torch.bool, device=ex.device)
    for row, n in enumerate(lengths):
        valid[row, width - n : width] = True
    logits = ex.head(torch.cat(last_hidden))[:, -1]
    return DecodeState(
        cache=cache, valid=valid, length=width, all_valid=min(lengths) == width,
        next_tokens=logits.float().argmax(-1),
        next_positions=torch.tensor(lengths, device=ex.device),
        decisions=decisions, rows=list(range(len(ids))),
    )


def _drop_finished(ex: Stepper, state: DecodeState, keep: list[bool]) -> None:
    """Remove the rows where ``keep`` is False from every part of ``state``."""
    keep_t = torch.tensor(keep, device=ex.device)
    state.next_tokens = state.next_tokens[keep_t]
    state.next_positions = state.next_positions[keep_t]
    state.valid = state.valid[keep_t]
    state.cache.compact(keep_t)
    state.rows = [r for r, k in zip(state.rows, keep) if k]
    state.decisions = [d for d, k in zip(state.decisions, keep) if k]
    state.all_valid = state.all_valid or bool(state.valid[:, : state.length].all())


#: Finished rows stay in the batch (computed, their tokens ignored) until they are at least
#: this share of it; then they are dropped from the inputs and every cache slot at once.
#: Compaction copies the whole cache, so doing it for every finished row costs more than
#: carrying a few finished rows for some steps.
COMPACT_FRACTION = 0.25


def decode(
    ex: Stepper, state: DecodeState, rule: StopRule, *,
    finals: Sequence[FinalFn | None] | None = None,
    initial: Sequence[Sequence[int]] | None = None,
    compact_fraction: float = COMPACT_FRACTION,
    dense: bool = False,
    proposers: Sequence[Proposer | None] | None = None,
) -> tuple[list[list[int]], list[str]]:
    """Greedy decoding until every row stops; ``(token ids, finish reason)`` per batch row.

    Args:
        finals: per batch row, its grader predicate (see :data:`~drllm.models.stopping.GRADER`).
        initial: per batch row, tokens it already generated before ``state.next_tokens``
            (draft verification); they were checked against ``rule`` by the caller.
        compact_fraction: finished rows are dropped once they are at least this share of the
            batch rows (0: at once, as each row finishes).
        dense: steps run the whole batch and select rows (see :func:`plan_steps`).
        proposers: per batch row, a draft proposer (:mod:`drllm.models.drafts`): a step where
            some row has a draft verifies every row's draft in one forward call.
    """
    batch = len(state.rows)
    tokens: list[list[int]] = [list(t) for t in initial] if initial else [[] for _ in range(batch)]
    reasons: list[str | None] = [None] * batch
    finals = finals or [None] * batch
    plan = plan_steps(state.decisions, ex.num_layers, ex.device, dense=dense)
    done = [False] * len(state.rows)
    emitted = [[t] for t in state.next_tokens.tolist()]
    while True:
        for pos, row in enumerate(state.rows):
            for token in emitted[pos]:
                if done[pos]:
                    break
                tokens[row].append(token)
                reasons[row] = rule.check(tokens[row], finals[row])
                done[pos] = reasons[row] is not None
        finished = sum(done)
        if finished == len(done):
            return tokens, reasons  # type: ignore[return-value]
        if finished and finished >= compact_fraction * len(done):
            keep = [not d for d in done]
            _drop_finished(ex, state, keep)
            done = [False] * len(state.rows)
            plan = plan_steps(state.decisions, ex.num_layers, ex.device, dense=dense)
        drafts = [()] * len(state.rows)
        if proposers is not None:
            cap = draft_cap(len(state.rows))
            drafts = [() if d else tuple(proposers[row](tokens[row])[
                : min(cap, rule.max_new_tokens - len(tokens[row]) - 1)] if proposers[row] else ())
                      for row, d in zip(state.rows, done)]
        if any(drafts):
            emitted = drafted_step(ex, state, plan, drafts)
        else:
            plain_step(ex, state, plan)
            emitted = [[t] for t in state.next_tokens.tolist()]


#: Token columns a drafted decode step feeds at most (rows x (1 + longest draft)). Every row
#: is padded to the longest draft, so a wide batch with long drafts would turn a memory-bound
#: step into a compute-bound one costing more than the steps its drafts could save.
DRAFT_STEP_TOKENS = 64


def draft_cap(rows: int) -> int:
    """Draft tokens per row in a drafted step of ``rows`` rows (at least 1)."""
    return max(1, DRAFT_STEP_TOKENS // max(rows, 1) - 1)


def plain_step(ex: Stepper, state: DecodeState, plan: list, observe=None) -> None:
    """Feed every active row its last token; ``state.next_tokens`` becomes the next ones.

    ``observe``: sees the states entering each block (:meth:`BlockRunner.run`)."""
    _room(state, 1)
    state.valid[:, state.length] = True
    state.length += 1
    hidden = ex.runner.run(
        ex.embed(state.next_tokens[:, None]), state.next_positions[:, None],
        state.valid[:, : state.length], state.decisions, all_valid=state.all_valid,
        cache=state.cache, plan=plan, observe=observe,
    )
    state.next_tokens = ex.head(hidden)[:, -1].float().argmax(-1)
    state.next_positions = state.next_positions + 1


def _room(state: DecodeState, q: int) -> None:
    """Grow the key-column mask so that ``q`` more columns fit."""
    need = state.length + q - state.valid.shape[1]
    if need > 0:
        pad = state.valid.new_zeros((state.valid.shape[0], max(need, CACHE_CHUNK)))
        state.valid = torch.cat([state.valid, pad], dim=1)


def drafted_step(
    ex: Stepper, state: DecodeState, plan: list, drafts: Sequence[Sequence[int]], observe=None,
) -> list[list[int]]:
    """Feed each row its last token and its draft in one call; per row, the tokens emitted
    (the accepted draft and the greedy token after it). ``observe`` as in :func:`plain_step`."""
    ids, real, q = drafted_inputs(state.next_tokens.tolist(), drafts, 0, ex.device)
    _room(state, q)
    start = state.length
    state.valid[:, start: start + q] = real
    state.length += q
    positions = state.next_positions[:, None] + torch.arange(q, device=ex.device)
    hidden = ex.runner.run(
        ex.embed(ids), positions, state.valid[:, : state.length], state.decisions,
        all_valid=False, cache=state.cache, plan=plan, observe=observe,
    )
    greedy = ex.head(hidden).float().argmax(-1).tolist()  # [B, q]
    emitted, nxt, advance = [], [], []
    for b, draft in enumerate(drafts):
        a = accept(greedy[b], draft)
        emitted.append(greedy[b][: a + 1])
        state.valid[b, start + a + 1: start + q] = False
        nxt.append(greedy[b][a])
        advance.append(a + 1)
    state.all_valid = False
    state.next_tokens = torch.tensor(nxt, device=ex.device)
    state.next_positions = state.next_positions + torch.tensor(advance, device=ex.device)
    return emitted
