"""The default path's states per question, kept so that edited paths can start from them.

A search asks for the same question along dozens of paths, each one to three edits from the
default path (all-execute), whose output it already has. Blocks before a path's first edit see
exactly the default path's states, over the prompt and over every response token on which the
edited path agrees with the default one. A :class:`PrefixEntry` holds, for one (question,
prompt, stop rule), the default response and, at every fed position (prompt, then the response
but its last token), the states entering every block and every block's keys and values;
:func:`record_prefixes` builds entries with one teacher-forced forward pass over
prompt + default response. :class:`PrefixCache` keeps entries within a memory budget, least
recently used question out, and counts hits, misses and bytes.

Sizes: ``fed`` positions cost ``L * fed * (d + 2 * kv_heads * head_dim)`` values; SmolLM2-135M
(L = 30, d = 576, 3 x 64 KV), fp32: about 115 KB per position, 19 MB for an ARC question
(150 prompt tokens, 16 new).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch

from drllm.models.decoding import Stepper
from drllm.models.kv import SlotKVCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefixEntry:
    """The default path's generation of one prompt and its per-block states.

    Attributes:
        prompt: prompt token ids (``P``).
        tokens: the default response token ids (``R >= 1``), as generation returned them.
        reason: its finish reason.
        text: its final text.
        hidden: ``[L, fed, d]`` states entering each block at the fed positions
            (``fed = P + R - 1``: the prompt, then every response token but the last).
        keys, values: ``[L, kv_heads, fed, head_dim]`` each block's (pass 0) keys / values.
        responses: token ids of responses other paths produced on this prompt, most recent
            first (:meth:`remember`): drafts for later edited paths (:mod:`drllm.models.drafts`).
    """

    prompt: tuple[int, ...]
    tokens: tuple[int, ...]
    reason: str
    text: str
    hidden: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    responses: list = field(default_factory=list, compare=False, repr=False)

    #: responses remembered per entry at most
    MAX_RESPONSES = 32

    def remember(self, tokens: Sequence[int]) -> None:
        """Add a response of some path on this prompt to the draft pool (most recent first)."""
        tokens = tuple(tokens)
        if tokens in self.responses or tokens == self.tokens:
            return
        self.responses.insert(0, tokens)
        del self.responses[self.MAX_RESPONSES:]

    def drafts(self) -> list:
        """The draft pool: remembered responses, then the default response."""
        return [*self.responses, self.tokens]

    @property
    def fed(self) -> int:
        return self.hidden.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.hidden, self.keys, self.values))


@torch.inference_mode()
def record_prefixes(
    ex: Stepper, prompts: Sequence[Sequence[int]], tokens: Sequence[Sequence[int]],
    reasons: Sequence[str], texts: Sequence[str],
) -> list[PrefixEntry]:
    """Entries for default-path generations: one teacher-forced pass over prompt + response.

    Args:
        prompts: prompt ids per row; tokens, reasons, texts: the default generation of each.
    """
    fed = [list(p) + list(t[:-1]) for p, t in zip(prompts, tokens)]
    input_ids, mask = ex.left_pad(fed)
    width = input_ids.shape[1]
    num_layers = ex.num_layers
    states: list[torch.Tensor] = []

    def hook(block: int, hidden: torch.Tensor, _mask: torch.Tensor) -> None:
        states.append(hidden)

    cache = SlotKVCache(capacity=width)
    lengths = [len(f) for f in fed]
    ex.runner.run(
        ex.embed(input_ids), (mask.cumsum(1) - 1).clamp_(min=0), mask.bool(),
        [[1] * num_layers for _ in fed], all_valid=min(lengths) == width, cache=cache,
        hook=hook, hook_mask=mask,
    )
    stacked = torch.stack(states)  # [L, B, W, d]
    slot_keys = [cache.slot_tensors(i, 0) for i in range(num_layers)]
    entries = []
    for row, n in enumerate(lengths):
        cols = slice(width - n, width)
        entries.append(PrefixEntry(
            prompt=tuple(prompts[row]), tokens=tuple(tokens[row]), reason=reasons[row],
            text=texts[row], hidden=stacked[:, row, cols].contiguous(),
            keys=torch.stack([k[row, :, cols] for _, k, _ in slot_keys]),
            values=torch.stack([v[row, :, cols] for _, _, v in slot_keys]),
        ))
    return entries


class PrefixCache:
    """Prefix entries by key within ``max_bytes``, least recently used out.

    Attributes:
        hits, misses: lookups that found / did not find their key.
        evictions: entries dropped to stay within the budget.
        rejected: entries larger than the whole budget (not stored).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, PrefixEntry] = OrderedDict()
        self.bytes = 0
        self.peak_bytes = 0
        self.hits = self.misses = self.evictions = self.rejected = 0

    def get(self, key: Hashable) -> PrefixEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: Hashable, entry: PrefixEntry) -> bool:
        """Store ``entry`` (evicting old ones); False if it alone exceeds the budget."""
        size = entry.nbytes
        if size > self.max_bytes:
            self.rejected += 1
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        while self._entries and self.bytes + size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= dropped.nbytes
            self.evictions += 1
        self._entries[key] = entry
        self.bytes += size
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        """Hits, misses, evictions, entries, bytes now and at peak, and the budget."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "rejected": self.rejected, "entries": len(self._entries), "bytes": self.bytes,
                "peak_bytes": self.peak_bytes, "max_bytes": self.max_bytes}
