"""KV cache with one slot per (block, pass), holding only the rows that run that step.

The published Dr.LLM code hands a repeated block the same cache slot for both passes, so cached
decoding of a repeated block diverges from a full recompute. Here every (block, pass) pair has
its own slot. A slot stores keys and values only for the rows of the batch that execute that
(block, pass) — the rows of its micro-batch, in ascending batch order — so a skipped block costs
no memory and a repeat's second pass stores only the repeating rows.

The stock attention modules call ``cache.update(key_states, value_states, self.layer_idx, ...)``;
the executor calls :meth:`~SlotKVCache.activate` for the slot before calling a layer, and
``update`` writes to that slot whatever ``layer_idx`` the layer carries (a block's second pass
has the same ``layer_idx`` as its first).

Storage is preallocated along time and grown in chunks, so a decode step writes in place instead
of concatenating. All slots share the batch's left-padded time axis: after ``t`` forward tokens
every slot holds ``t`` positions.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

logger = logging.getLogger(__name__)


class _Slot:
    """Keys/values ``[n_rows, kv_heads, capacity, head_dim]`` of one (block, pass).

    ``rows``: the batch rows stored, ascending; ``length``: positions filled.
    """

    __slots__ = ("rows", "keys", "values", "length")

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0


class SlotKVCache:
    """A cache the stock HF attention modules write through, one slot per (block, pass).

    Args:
        capacity: initial time capacity of each slot in tokens (the prompt length plus the new
            tokens expected); slots grow by ``grow`` tokens when a step needs more.
        grow: growth step in tokens.

    Only the cache surface the Llama / Qwen / Mistral attention modules use is implemented:
    ``update`` and ``get_seq_length``.
    """

    is_compileable = False

    def __init__(self, capacity: int, grow: int = 32) -> None:
        if capacity <= 0 or grow <= 0:
            raise ValueError(f"capacity and grow must be positive, got {capacity}, {grow}")
        self.capacity = capacity
        self.grow = grow
        self._slots: dict[tuple[int, int], _Slot] = {}
        self._active: _Slot | None = None

    def activate(self, block: int, pass_index: int, rows: torch.Tensor | None = None) -> None:
        """Direct the next ``update`` to slot ``(block, pass_index)``.

        Args:
            rows: ``[n]`` long, ascending batch-row indices of the micro-batch about to run this
                step; required when the slot is first created (prefill), ignored afterwards
                (the slot keeps its rows, renumbered by :meth:`compact`).
        """
        key = (block, pass_index)
        slot = self._slots.get(key)
        if slot is None:
            if rows is None:
                raise RuntimeError(f"slot {key} does not exist; its first activation needs rows")
            slot = self._slots[key] = _Slot(rows)
        self._active = slot

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int | None = None,
        *args: object, **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``[n, kv_heads, q, head_dim]`` keys/values to the active slot.

        Returns:
            keys and values ``[n, kv_heads, t + q, head_dim]`` for every cached position.
        """
        slot = self._active
        if slot is None:
            raise RuntimeError(
                "SlotKVCache.update called with no active slot; call activate() first"
            )
        self._active = None
        n, heads, q, dim = key_states.shape
        assert n == slot.rows.numel(), f"{n} rows written to a slot of {slot.rows.numel()} rows"
        end = slot.length + q
        if slot.keys is None:
            cap = max(self.capacity, end)
            slot.keys = key_states.new_empty((n, heads, cap, dim))
            slot.values = value_states.new_empty((n, heads, cap, value_states.shape[-1]))
        elif end > slot.keys.shape[2]:
            self._grow(slot, end)
        slot.keys[:, :, slot.length : end] = key_states
        slot.values[:, :, slot.length : end] = value_states
        slot.length = end
        return slot.keys[:, :, :end], slot.values[:, :, :end]

    def _grow(self, slot: _Slot, needed: int) -> None:
        cap = max(needed, slot.keys.shape[2] + self.grow)
        for name in ("keys", "values"):
            old = getattr(slot, name)
            new = old.new_empty((*old.shape[:2], cap, old.shape[3]))
            new[:, :, : slot.length] = old[:, :, : slot.length]
            setattr(slot, name, new)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Cached positions (shared by every slot that has been written)."""
        return max((s.length for s in self._slots.values()), default=0)

    def compact(self, keep: torch.Tensor) -> None:
        """Drop batch rows where ``keep`` (``[B]`` bool) is False and renumber the rest.

        Rows are removed from every slot they belong to; slots left empty are deleted.
        """
        new_index = torch.cumsum(keep.long(), 0) - 1
        for key in list(self._slots):
            slot = self._slots[key]
            sel = keep[slot.rows]
            if bool(sel.all()):
                slot.rows = new_index[slot.rows]
                continue
            if not bool(sel.any()):
                del self._slots[key]
                continue
            slot.rows = new_index[slot.rows[sel]]
            if slot.keys is not None:
                slot.keys = slot.keys[sel]
                slot.values = slot.values[sel]

    def drop_leading(self, columns: int) -> None:
        """Forget the first ``columns`` positions of every slot (columns no row attends to:
        left padding, or the tokens of rows that left). A view, no copy; positions are
        renumbered from 0, rotary positions live with the rows and do not change."""
        if columns <= 0:
            return
        for slot in self._slots.values():
            assert slot.length >= columns, (slot.length, columns)
            if slot.keys is not None:
                slot.keys = slot.keys[:, :, columns:]
                slot.values = slot.values[:, :, columns:]
            slot.length -= columns

    @classmethod
    def concat(
        cls, parts: Sequence[tuple["SlotKVCache", int]], capacity: int, grow: int = 32,
        width: int | None = None,
    ) -> "SlotKVCache":
        """Stack caches of consecutive row groups into one left-padded cache.

        Args:
            parts: ``(cache, rows)`` per group, in batch order: group ``k`` holds ``rows``
                batch rows, numbered after those of the groups before it. Each group's cache
                may have its own length ``t_k`` (its prompts' padded width).
            capacity: time capacity of the result (``>=`` the longest group).
            width: the longest group's padded length ``t``. Give it: a group whose rows all
                skip every block writes no slot, so the slots alone may not show the longest
                group (``None``: inferred from the slots).

        Returns:
            A cache whose slots hold every group's rows, each group's positions right-aligned
            to the longest group's length ``t`` (left padding ``t - t_k``, filled with zeros:
            those keys are masked, and finite values keep masked products finite).
        """
        slot_width = max(c.get_seq_length() for c, _ in parts)
        if width is None:
            width = slot_width
        assert width >= slot_width, (width, slot_width)
        merged = cls(capacity=max(capacity, width), grow=grow)
        offsets = [0]
        for _, rows in parts:
            offsets.append(offsets[-1] + rows)
        keys = sorted({key for c, _ in parts for key in c._slots})
        for key in keys:
            members = [
                (c._slots[key], off) for (c, _), off in zip(parts, offsets) if key in c._slots
            ]
            rows = torch.cat([s.rows + off for s, off in members])
            slot = merged._slots[key] = _Slot(rows)
            keys0, values0 = members[0][0].keys, members[0][0].values
            n, heads = rows.numel(), keys0.shape[1]
            slot.keys = keys0.new_zeros((n, heads, merged.capacity, keys0.shape[3]))
            slot.values = values0.new_zeros((n, heads, merged.capacity, values0.shape[3]))
            start = 0
            for part, _ in members:
                stop = start + part.rows.numel()
                pad = width - part.length
                slot.keys[start:stop, :, pad:width] = part.keys[:, :, : part.length]
                slot.values[start:stop, :, pad:width] = part.values[:, :, : part.length]
                start = stop
            slot.length = width
        return merged

    def expand(self, source: torch.Tensor) -> "SlotKVCache":
        """A new cache whose batch row ``r`` holds row ``source[r]`` of this one.

        Args:
            source: ``[R]`` long, non-decreasing row indices of this cache (a row may be
                repeated: the choices of one prompt share its prefill).

        The keys and values are copied (the new rows extend them independently).
        """
        out = SlotKVCache(capacity=self.capacity, grow=self.grow)
        size = int(source.max()) + 1 if source.numel() else 0
        for key, slot in self._slots.items():
            lookup = torch.full((max(size, int(slot.rows.max()) + 1),), -1, dtype=torch.long,
                                device=slot.rows.device)
            lookup[slot.rows] = torch.arange(slot.rows.numel(), device=slot.rows.device)
            position = lookup[source.to(slot.rows.device)]
            rows = torch.nonzero(position >= 0).flatten()
            if not rows.numel():
                continue
            new = out._slots[key] = _Slot(rows)
            if slot.keys is not None:
                take = position[rows]
                new.keys = slot.keys.index_select(0, take)
                new.values = slot.values.index_select(0, take)
            new.length = slot.length
        return out

    def slot_tensors(
        self, block: int, pass_index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, keys, values)`` of slot ``(block, pass_index)``, the filled positions only
        (``[n, kv_heads, length, head_dim]``); KeyError if the slot does not exist."""
        slot = self._slots[(block, pass_index)]
        assert slot.keys is not None, f"slot {(block, pass_index)} was never written"
        return slot.rows, slot.keys[:, :, : slot.length], slot.values[:, :, : slot.length]

    @classmethod
    def from_slots(
        cls, slots: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        length: int, grow: int = 32,
    ) -> "SlotKVCache":
        """A cache holding the given slots: ``(block, pass) -> (rows, keys, values)``, keys and
        values ``[n, kv_heads, capacity, head_dim]`` with ``length`` positions filled (taken
        as they are, not copied)."""
        capacity = max((k.shape[2] for _, k, _ in slots.values()), default=max(length, 1))
        cache = cls(capacity=max(capacity, 1), grow=grow)
        for key, (rows, keys, values) in slots.items():
            assert keys.shape[2] >= length and keys.shape[0] == rows.numel(), key
            slot = cache._slots[key] = _Slot(rows)
            slot.keys, slot.values, slot.length = keys, values, length
        return cache

    def slot_rows(self, block: int, pass_index: int) -> torch.Tensor | None:
        """Batch rows stored in slot ``(block, pass_index)``, or None if the slot does not exist."""
        slot = self._slots.get((block, pass_index))
        return None if slot is None else slot.rows

    def slot_length(self, block: int, pass_index: int) -> int:
        """Positions written to slot ``(block, pass_index)`` (0 if it does not exist)."""
        slot = self._slots.get((block, pass_index))
        return 0 if slot is None else slot.length

    def __len__(self) -> int:
        return len(self._slots)
