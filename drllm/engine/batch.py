"""The running batch: rows join (merging decode states) and leave (compaction).

A :class:`~drllm.models.decoding.DecodeState` holds the rows decoding together on one
left-padded time axis. Rows prefilled (or resumed) at a later step join it with
:func:`merge_states`: both caches are stacked into one, each right-aligned to the longer time
axis (:meth:`~drllm.models.kv.SlotKVCache.concat`; padding columns are masked, rotary positions
are per row, so a row's outputs do not depend on its neighbours). :func:`drop_rows` removes
finished rows from every part of a state, and the leading key columns no row left holds a token
in: without that the time axis of a batch that rows keep joining only grows (every join
right-aligns to the longest row ever run), and every decode step attends over it.
"""

from __future__ import annotations

import torch

from drllm.models.decoding import CACHE_CHUNK, DecodeState
from drllm.models.kv import SlotKVCache


def merge_states(a: DecodeState, b: DecodeState) -> DecodeState:
    """One state holding ``a``'s rows, then ``b``'s (``b`` is consumed)."""
    width = max(a.length, b.length)
    rows_a, rows_b = len(a.decisions), len(b.decisions)
    cache = SlotKVCache.concat([(a.cache, rows_a), (b.cache, rows_b)],
                               capacity=width + CACHE_CHUNK, grow=CACHE_CHUNK, width=width)
    room = max(a.valid.shape[1] - a.length, b.valid.shape[1] - b.length, 1)
    valid = a.valid.new_zeros((rows_a + rows_b, width + room))
    valid[:rows_a, width - a.length: width] = a.valid[:, : a.length]
    valid[rows_a:, width - b.length: width] = b.valid[:, : b.length]
    return DecodeState(
        cache=cache, valid=valid, length=width,
        all_valid=a.all_valid and b.all_valid and a.length == b.length,
        next_tokens=torch.cat([a.next_tokens, b.next_tokens]),
        next_positions=torch.cat([a.next_positions, b.next_positions]),
        decisions=a.decisions + b.decisions, rows=list(range(rows_a + rows_b)),
    )


def drop_rows(state: DecodeState, keep: list[bool]) -> None:
    """Remove the rows where ``keep`` is False from every part of ``state`` (in place), then
    the leading key columns none of the rows kept holds a token in."""
    keep_t = torch.tensor(keep, device=state.next_tokens.device)
    state.next_tokens = state.next_tokens[keep_t]
    state.next_positions = state.next_positions[keep_t]
    state.valid = state.valid[keep_t]
    state.cache.compact(keep_t)
    state.decisions = [d for d, k in zip(state.decisions, keep) if k]
    state.rows = list(range(len(state.decisions)))
    trim_left(state)
    state.all_valid = state.all_valid or bool(state.valid[:, : state.length].all())


def trim_left(state: DecodeState) -> int:
    """Drop the leading key columns where no row holds a token (masked for every row, so no
    output changes); returns how many."""
    if not state.length or not state.decisions:
        return 0
    held = state.valid[:, : state.length].any(0)
    if bool(held[0]):
        return 0
    first = int(held.nonzero()[0, 0]) if bool(held.any()) else state.length
    state.valid = state.valid[:, first:]
    state.cache.drop_leading(first)
    state.length -= first
    return first


def slot_row_kv(cache: SlotKVCache, block: int, row: int, cols: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[kv_heads, n, head_dim]`` of batch row ``row`` in slot
    ``(block, 0)`` at key columns ``cols`` (copies)."""
    rows, keys, values = cache.slot_tensors(block, 0)
    i = int((rows == row).nonzero()[0, 0])
    return keys[i][:, cols].clone(), values[i][:, cols].clone()
